"""File helpers every layer may use (DESIGN.md: ``fogline._files``, above nothing but errors).

For now this holds what the fleet's folders need to stay private; the atomic
write, lock and hash of ``security._files`` move here with the layout of
issue 11.
"""

from __future__ import annotations

import os
from pathlib import Path

#: What a folder fogline keeps out of git says, and the pattern that does it.
GITIGNORE = b"# Written by fogline: this folder holds private keys or device secrets.\n*\n"


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
