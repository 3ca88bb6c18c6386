"""File helpers every layer may use (DESIGN.md: ``fogline._files``, above nothing but errors).

A write goes to a temporary file beside its target, is flushed to disk and
then renamed over the target, so a concurrent reader (the HTTP server, a
device) sees the old file or the whole new one, and a crash leaves one of
the two. Every temporary file starts with :data:`TEMP_PREFIX`, so readers,
servers and clean-ups can skip or remove it. Beside the writer: an advisory
lock across processes, a file's sha256, a tree removal that copes with
read-only folders, and :func:`keep_private` for folders that hold secrets.

These live below everything (``security`` included) so that one writer, one
hash and one lock serve the whole code base; this module imports only the
standard library.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "GITIGNORE",
    "TEMP_PREFIX",
    "atomic_output",
    "atomic_write",
    "file_lock",
    "keep_private",
    "remove_tree",
    "sha256_file",
]

#: Prefix of every temporary file these helpers create; readers and servers skip it.
TEMP_PREFIX = ".tmp-"

#: What a folder fogline keeps out of git says, and the pattern that does it.
GITIGNORE = b"# Written by fogline: this folder holds private keys or device secrets.\n*\n"


@contextlib.contextmanager
def atomic_output(target: Path, mode: int | None = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is synced and renamed over it.

    ``mode`` is the file's mode (keys are written 0600); None gives the mode
    a new file usually gets, 0666 less the umask. On an exception the
    temporary file is removed and ``target`` is left as it was.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_output(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("whole")
    >>> (folder / "a.txt").read_text(), [p.name for p in folder.iterdir()]
    ('whole', ['a.txt'])
    """
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode() if mode is None else mode)  # mkstemp makes 0600
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _sync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(target: Path, data: bytes, mode: int | None = 0o644) -> None:
    """Replace ``target`` with ``data`` atomically (see :func:`atomic_output`).

    >>> import tempfile, pathlib, stat
    >>> key = pathlib.Path(tempfile.mkdtemp()) / "key.pem"
    >>> atomic_write(key, b"secret", mode=0o600)
    >>> key.read_bytes(), oct(stat.S_IMODE(key.stat().st_mode))
    (b'secret', '0o600')
    """
    with atomic_output(target, mode) as tmp:
        tmp.write_bytes(data)


def _default_mode() -> int:
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return 0o666 & ~umask


def _sync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) across processes.

    >>> import tempfile, pathlib
    >>> lock = pathlib.Path(tempfile.mkdtemp()) / "sub" / ".lock"
    >>> with file_lock(lock):
    ...     lock.exists()
    True
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's content, read in 1 MiB chunks.

    >>> import tempfile, pathlib
    >>> empty = pathlib.Path(tempfile.mkdtemp()) / "empty"
    >>> _ = empty.write_bytes(b"")
    >>> sha256_file(empty)[:16]
    'e3b0c44298fc1c14'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_tree(path: Path) -> None:
    """Delete a file or folder, even a folder that was made read-only (staged releases are).

    >>> import tempfile, pathlib, os
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "release"
    >>> (folder / "sub").mkdir(parents=True); _ = (folder / "sub" / "f").write_text("x")
    >>> os.chmod(folder / "sub", 0o500); os.chmod(folder, 0o500)
    >>> remove_tree(folder); folder.exists()
    False
    """
    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.is_dir():
        return
    for root, dirs, _files in os.walk(path):
        os.chmod(root, stat.S_IRWXU)
        for name in dirs:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, stat.S_IRWXU)
    shutil.rmtree(path)


def keep_private(folder: Path) -> Path:
    """Make ``folder`` private: created 0700 if it is new, and ignored by git.

    Key, broker and device folders are made in a working directory, often a
    repository's: one ``git add -A`` must not commit a private key, so the
    folder gets a ``.gitignore`` of ``*`` (an existing one is left as its
    owner wrote it). A folder that exists keeps its mode: it may be the
    user's own. Returns ``folder``.

    >>> import tempfile, pathlib, stat
    >>> folder = keep_private(pathlib.Path(tempfile.mkdtemp()) / "fleet-data")
    >>> (folder / ".gitignore").read_text().splitlines()[-1]
    '*'
    >>> oct(stat.S_IMODE(folder.stat().st_mode))
    '0o700'
    """
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask
    ignore = folder / ".gitignore"
    if not ignore.exists():
        temp = folder / f".gitignore.{os.getpid()}.tmp"
        temp.write_bytes(GITIGNORE)
        os.replace(temp, ignore)
    return folder
