"""Are the stored releases still the bytes that were signed? The controller's side of the check.

Devices check every file they download against the signed metadata, so a
blob that rotted on the controller's disk is refused, but only by each
device that downloaded it, after the download, while the controller keeps
listing and serving it. :class:`IntegrityCheck` finds that damage at the
source: a release document is compared with its length and sha256 in signed
``targets.json``, and each file of the release (``blobs/<sha256>``) with the
length and sha256 the document names.

Reading every byte is the cost, so a check remembers what it has hashed,
keyed by the file's size, mtime and inode: the first request for a blob
reads it, later ones cost a ``stat``, and a rewritten or replaced file is
read again. Rot that leaves the mtime alone is found by
:meth:`IntegrityCheck.audit`, which reads everything again (the controller
runs it on a timer). One thread hashes a given file at a time; others that
ask for it meanwhile wait for that result instead of reading it too.

Concurrency: thread-safe; every method but :meth:`IntegrityCheck.known` may
read whole files, so an event loop calls them in a thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from packaging.version import InvalidVersion, Version
from pydantic import ValidationError

from fogline._files import sha256_file
from fogline.errors import ConfigError, ModelNotFound
from fogline.security._document import ReleaseDocument, release_target_path

if TYPE_CHECKING:
    from fogline.security._repository import ReleaseRepository

#: What can be wrong with a stored file.
Problem = Literal["missing", "size differs", "hash differs", "unreadable", "not signed"]
#: The ``path`` of a :class:`Damage` to the release document itself.
DOCUMENT = "release document"

_StatKey = tuple[int, int, int]  # size, mtime in ns, inode
_Result = tuple[Problem, str] | None  # what is wrong and a detail, or None when the file is good
_Mode = Literal["stat", "once", "rehash"]  # how hard to look (see IntegrityCheck._file)
_DOCUMENT = re.compile(r"^releases/[^/]+/[^/]+\.json$")


@dataclass(frozen=True)
class Damage:
    """One stored file of a release that no longer matches what was signed.

    >>> print(Damage("tiny", "1.0", "model.onnx", "blobs/ab12", "size differs", "3 bytes, signed 4"))
    release tiny 1.0: model.onnx size differs, 3 bytes, signed 4 (stored as blobs/ab12)
    """

    release: str
    version: str
    path: str  # the file's path in the release, or DOCUMENT
    target: str  # where it is stored, under the repository's targets/
    problem: Problem
    detail: str = ""

    def __post_init__(self) -> None:
        if self.problem not in get_args(Problem):
            raise ValueError(f"problem must be one of {', '.join(get_args(Problem))}")

    @property
    def what(self) -> str:
        """The damage without the release: ``model.onnx hash differs (stored as blobs/…)``."""
        detail = f", {self.detail}" if self.detail else ""
        return f"{self.path} {self.problem}{detail} (stored as {self.target})"

    def __str__(self) -> str:
        if not self.release:  # a signed blob whose release documents are gone
            return f"{self.target} {self.problem} (in no readable release)"
        return f"release {self.release} {self.version}: {self.what}"


@dataclass(frozen=True)
class ReleaseCheck:
    """What checking one release found; ``document`` is None when it could not be trusted."""

    name: str
    version: str
    document: ReleaseDocument | None
    damage: tuple[Damage, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.damage

    @property
    def reason(self) -> str | None:
        """None when intact, else what is wrong with which files, in one line."""
        return "; ".join(d.what for d in self.damage) if self.damage else None


class IntegrityCheck:
    """Checks a repository's stored releases against their signed metadata (see the module).

    >>> import tempfile, pathlib
    >>> from fogline.security import ReleaseRepository, init_keys
    >>> data = pathlib.Path(tempfile.mkdtemp())
    >>> _ = init_keys(data)
    >>> model = data / "model"; model.mkdir(); _ = (model / "net.onnx").write_bytes(b"onnx")
    >>> repo = ReleaseRepository(data)
    >>> _ = repo.create_release(model, "net", "1.0.0", data / "keys" / "targets.pem")
    >>> check = IntegrityCheck(repo)
    >>> [(c.name, c.version, c.ok) for c in check.verify()]
    [('net', '1.0.0', True)]
    >>> _ = next((repo.targets_dir / "blobs").iterdir()).write_bytes(b"ONNX")
    >>> print(check.verify("net")[0].damage[0])  # doctest: +ELLIPSIS
    release net 1.0.0: net.onnx hash differs (stored as blobs/...)
    """

    def __init__(self, repo: ReleaseRepository) -> None:
        self.repo = repo
        self._lock = threading.Lock()
        self._file_locks: dict[str, threading.Lock] = {}
        self._results: dict[tuple[str, str], tuple[_StatKey, _Result]] = {}
        self._signed: tuple[_StatKey, dict[str, tuple[int, str]]] | None = None

    # -- what callers ask -------------------------------------------------------------------

    def verify(self, name: str | None = None, version: str | None = None) -> list[ReleaseCheck]:
        """Check releases (all, one name's, or one), hashing each file not already verified.

        ``ModelNotFound`` when there is no release of that name or version.
        """
        return self._releases(self._select(name, version), "once")

    def known(self, name: str | None = None, version: str | None = None) -> list[ReleaseCheck]:
        """What is known without reading a blob: missing files, wrong sizes, earlier hashes.

        Cheap enough for every listing; a file never hashed counts as intact.
        """
        return self._releases(self._select(name, version), "stat")

    def audit(self, stop: threading.Event | None = None) -> list[ReleaseCheck]:
        """Hash every file of every release again (each shared blob once); ``stop`` ends it early."""
        rehashed: set[str] = set()
        found = []
        for target in self._select(None, None):
            if stop is not None and stop.is_set():
                break
            found.append(self._release(target, "rehash", rehashed))
        return found

    def target(self, path: str) -> tuple[Damage, ...]:
        """The damage of one stored target (what a download asks for); empty when it is intact.

        A damaged blob is named once per release file that holds it.
        ``ModelNotFound`` when ``path`` is not a target of signed ``targets.json``.
        """
        signed = self._signed_targets().get(path)
        if signed is None:
            raise ModelNotFound(f"{path} is not a signed target of {self.repo.layout.data}")
        if _DOCUMENT.match(path):
            _, wrong = self._document(path)
            name, version = _name_version(path)
            return () if wrong is None else (Damage(name, version, DOCUMENT, path, *wrong),)
        result = self._file(path, *signed, "once")
        if result is None:
            return ()
        users = [
            (doc.name, doc.version, item.path)
            for doc in self._documents()
            for item in doc.files
            if item.blob_path == path
        ]
        damage = [Damage(name, version, file, path, *result) for name, version, file in users]
        return tuple(damage or [Damage("", "", "", path, *result)])

    # -- releases ---------------------------------------------------------------------------

    def _select(self, name: str | None, version: str | None) -> list[str]:
        """The document targets of the releases asked for, by name then version."""
        documents = sorted((t for t in self._signed_targets() if _DOCUMENT.match(t)), key=_order)
        if name is None:
            return documents
        mine = [t for t in documents if _name_version(t)[0] == name]
        where = self.repo.layout.data
        if not mine:
            names = sorted({_name_version(t)[0] for t in documents})
            raise ModelNotFound(
                f"no release named {name!r} in {where} (releases: {', '.join(names) or 'none'})"
            )
        if version is None:
            return mine
        try:
            wanted = release_target_path(name, version)
        except ValueError as exc:
            raise ModelNotFound(str(exc)) from None
        if wanted not in mine:
            versions = ", ".join(_name_version(t)[1] for t in mine)
            raise ModelNotFound(f"no release {name} {version} in {where} (versions: {versions})")
        return [wanted]

    def _releases(self, targets: list[str], mode: _Mode) -> list[ReleaseCheck]:
        return [self._release(target, mode) for target in targets]

    def _release(self, target: str, mode: _Mode, rehashed: set[str] | None = None) -> ReleaseCheck:
        name, version = _name_version(target)
        document, result = self._document(target)
        if document is None:
            assert result is not None
            return ReleaseCheck(
                name, version, None, (Damage(name, version, DOCUMENT, target, *result),)
            )
        signed = self._signed_targets()
        damage = []
        for item in document.files:
            if signed.get(item.blob_path) != (item.length, item.sha256):
                detail = "targets.json does not list it with this length and sha256"
                damage.append(
                    Damage(name, version, item.path, item.blob_path, "not signed", detail)
                )
                continue
            once = mode == "rehash" and rehashed is not None and item.blob_path in rehashed
            found = self._file(item.blob_path, item.length, item.sha256, "once" if once else mode)
            if rehashed is not None:
                rehashed.add(item.blob_path)
            if found is not None:
                damage.append(Damage(name, version, item.path, item.blob_path, *found))
        return ReleaseCheck(name, version, document, tuple(damage))

    def _document(self, target: str) -> tuple[ReleaseDocument | None, _Result]:
        """The release document if its bytes are the signed ones, else what is wrong.

        Documents are small, so each check reads one whole and parses the bytes
        it hashed (no cache, no window between checking and reading).
        """
        length, sha256 = self._signed_targets()[target]
        try:
            body = (self.repo.targets_dir / target).read_bytes()
        except FileNotFoundError:
            return None, ("missing", "")
        except OSError as exc:
            return None, ("unreadable", exc.strerror or str(exc))
        if len(body) != length:
            return None, ("size differs", f"{len(body)} bytes, signed {length}")
        if hashlib.sha256(body).hexdigest() != sha256:
            return None, ("hash differs", "")
        try:
            return ReleaseDocument.model_validate_json(body), None
        except ValidationError as exc:
            return None, (
                "unreadable",
                f"signed but not a release document: {exc.error_count()} errors",
            )

    def _documents(self) -> list[ReleaseDocument]:
        found = [self._document(t)[0] for t in self._select(None, None)]
        return [doc for doc in found if doc is not None]

    # -- files ------------------------------------------------------------------------------

    def _file(self, target: str, length: int, sha256: str, mode: _Mode) -> _Result:
        """What is wrong with a stored file, or None.

        ``stat`` reads no content (a file never hashed passes), ``once`` hashes
        a file unless this check hashed it at its current size, mtime and inode,
        ``rehash`` hashes it whatever was remembered.
        """
        file = self.repo.targets_dir / target
        if mode == "stat":
            return self._stat(file, target, length, sha256)
        with self._file_lock(target):
            return self._stat(file, target, length, sha256, mode)

    def _stat(
        self, file: Path, target: str, length: int, sha256: str, mode: _Mode = "stat"
    ) -> _Result:
        try:
            st = os.stat(file)
        except FileNotFoundError:
            return "missing", ""
        except OSError as exc:
            return "unreadable", exc.strerror or str(exc)
        if st.st_size != length:
            return "size differs", f"{st.st_size} bytes, signed {length}"
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        remembered = self._results.get((target, sha256))
        if mode != "rehash" and remembered is not None and remembered[0] == key:
            return remembered[1]
        if mode == "stat":
            return None
        try:
            digest = sha256_file(file)
        except OSError as exc:
            return "unreadable", exc.strerror or str(exc)
        result: _Result = None if digest == sha256 else ("hash differs", "")
        # Keyed by the stat taken before reading: a file rewritten meanwhile is read again.
        self._results[(target, sha256)] = (key, result)
        return result

    def _file_lock(self, target: str) -> threading.Lock:
        with self._lock:
            return self._file_locks.setdefault(target, threading.Lock())

    def _signed_targets(self) -> dict[str, tuple[int, str]]:
        """``target path → (length, sha256)`` from targets.json, parsed again when it changes."""
        path = self.repo.layout.metadata_file("targets")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise ConfigError(f"{path} cannot be read: {exc.strerror}") from exc
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._signed
        if cached is not None and cached[0] == key:
            return cached[1]
        targets = self.repo._store.targets().signed.targets
        signed = {p: (t.length, t.hashes.get("sha256", "")) for p, t in targets.items()}
        self._signed = (key, signed)
        return signed


def _name_version(target: str) -> tuple[str, str]:
    """``releases/<name>/<version>.json`` → ``(name, version)``."""
    _, name, file = target.split("/", 2)
    return name, file.removesuffix(".json")


def _order(target: str) -> tuple[str, Version]:
    name, version = _name_version(target)
    try:
        return name, Version(version)
    except InvalidVersion:  # not one this repository wrote: first
        return name, Version("0")
