"""Install signed releases on a device: verify, download with resume, stage, swap atomically.

Metadata is refreshed with python-tuf's ``ngclient.Updater`` (signatures,
thresholds, version rollback, freeze and root rotation are its checks). Files
are then downloaded here, because ngclient cannot resume: each blob streams
into ``downloads/<sha256>.part`` with an HTTP ``Range`` from what is already
there, reading never more than one byte past its signed length, and is
checked against its signed length and sha256 before anything opens it.

Device data folder ``DEV``::

    DEV/trust/root.json                  the trust anchor given at enrolment
    DEV/tuf/                             ngclient's verified metadata cache
    DEV/downloads/<sha256>.part          an unfinished download, resumed next time
    DEV/blobs/<sha256>                   a verified file (read-only)
    DEV/releases/<name>/<version>/       a staged release built from blobs (read-only)
    DEV/releases/<name>/<version>.json   its release document
    DEV/active/<name>                    symlink to ../releases/<name>/<version>
    DEV/installed.json                   active and previous (last-known-good) per name

A staged folder appears under its final name only when complete (built as
``.staging-*`` and renamed), and ``active/<name>`` is replaced with
``os.replace`` of a new symlink, so a ``kill -9`` at any moment leaves it on
the old or the new complete release. ``installed.json`` is journalled (the
new state is written as pending before the swap) so :meth:`recover` knows
which it was.

Concurrency: blocking I/O; an async agent calls it from a worker thread. A
file lock on ``DEV/.lock`` serializes installers of one folder (processes and
threads alike).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import ssl
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import httpx
from packaging.version import Version
from pydantic import BaseModel, Field, ValidationError
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]
from tuf.ngclient import FetcherInterface, Updater  # type: ignore[attr-defined]

from fogline._files import TEMP_PREFIX, atomic_write, file_lock, remove_tree, sha256_file
from fogline.errors import ConfigError, FoglineError, ModelNotFound, ReleaseRefused, TransportError
from fogline.security import (
    ReleaseDocument,
    check_release_name,
    parse_version,
    release_target_path,
)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STAGING = ".staging-"
_TRASH = ".trash-"


@dataclass(frozen=True)
class StagedRelease:
    """A verified release in its own read-only folder, ready to activate."""

    name: str
    version: str
    path: Path
    document: ReleaseDocument

    @property
    def entry(self) -> Path:
        """What to run: the model file, the pipeline YAML or the repository folder."""
        entry = self.document.entry
        return self.path if entry == "." else self.path.joinpath(*entry.split("/"))


class _Slot(BaseModel):
    active: str | None = None
    previous: str | None = None  # the last-known-good to roll back to


class _Installed(BaseModel):
    releases: dict[str, _Slot] = Field(default_factory=dict)
    pending: dict[str, _Slot] = Field(default_factory=dict)  # a swap that may have happened


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's CAs, loaded once: loading them costs ~0.3 s, too much per installer."""
    return ssl.create_default_context()


class ReleaseInstaller:
    """Fetch, verify, stage and activate releases from one TUF repository (see the module doc).

    ``repository_url`` is where the repository is served, e.g.
    ``http://controller:8080/repository`` (it has ``metadata/`` and
    ``targets/`` under it). ``trusted_root`` is the repository's ``root.json``
    given at enrolment; it is copied to ``DEV/trust/root.json`` and needed
    only once.
    """

    def __init__(
        self,
        data: Path,
        repository_url: str,
        *,
        trusted_root: Path | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.data = Path(data)
        base = repository_url.rstrip("/")
        self.metadata_url = f"{base}/metadata/"
        self.targets_url = f"{base}/targets/"
        for folder in (self._trust_dir, self._tuf_dir, self._downloads, self._blobs):
            folder.mkdir(parents=True, exist_ok=True)
        self._releases.mkdir(exist_ok=True)
        self._active.mkdir(exist_ok=True)
        if trusted_root is not None:
            try:
                atomic_write(self._trust_file, Path(trusted_root).read_bytes())
            except OSError as exc:
                raise ConfigError(f"trusted root {trusted_root}: {exc.strerror or exc}") from exc
        if not self._trust_file.is_file():
            raise ConfigError(
                f"{self._trust_file} is missing: enrol the device with the repository's root.json "
                "(trusted_root=...)"
            )
        self._client = httpx.Client(
            timeout=timeout, headers={"Accept-Encoding": "identity"}, verify=_tls_context()
        )
        self._fetcher = _HttpxFetcher(self._client)

    # -- layout -------------------------------------------------------------------------------

    @property
    def _trust_dir(self) -> Path:
        return self.data / "trust"

    @property
    def _trust_file(self) -> Path:
        return self._trust_dir / "root.json"

    @property
    def _tuf_dir(self) -> Path:
        return self.data / "tuf"

    @property
    def _downloads(self) -> Path:
        return self.data / "downloads"

    @property
    def _blobs(self) -> Path:
        return self.data / "blobs"

    @property
    def _releases(self) -> Path:
        return self.data / "releases"

    @property
    def _active(self) -> Path:
        return self.data / "active"

    @property
    def _state_file(self) -> Path:
        return self.data / "installed.json"

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ReleaseInstaller:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.data / ".lock"):
            yield

    # -- public API ---------------------------------------------------------------------------

    def fetch(
        self,
        name: str,
        version: str,
        *,
        allow_downgrade_to_previous: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> StagedRelease:
        """Verify and stage release ``name`` ``version``; the active release is not touched.

        ``progress`` hears each step as it starts: ``"verifying"`` (the signed
        metadata and the release document), ``"downloading"`` (the files, each
        checked against its size and hash), ``"staging"``.

        Raises :class:`ReleaseRefused` when a check fails (signature, hash,
        size, older than active, expired), :class:`ModelNotFound` when the
        repository has no such release, :class:`TransportError` when the
        repository cannot be reached (a partial download is kept and resumed).
        """
        try:
            check_release_name(name)
            wanted = parse_version(version)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        version = str(wanted)
        step = progress or (lambda _phase: None)
        with self._locked():
            slot = self._state().releases.get(name, _Slot())
            if slot.active is not None and wanted < Version(slot.active):
                return self._downgrade(name, version, slot, allow_downgrade_to_previous)
            step("verifying")
            updater = self._refresh()
            doc_info = self._targetinfo(updater, release_target_path(name, version))
            if doc_info is None:
                raise ModelNotFound(f"release {name} {version} is not in {self.targets_url}")
            doc_blob = self._download(doc_info, f"release document {name} {version}")
            body = doc_blob.read_bytes()
            doc = _parse_document(body, name, version)
            if doc.is_expired():
                raise ReleaseRefused(
                    f"release {name} {version} expired at {doc.expires.isoformat()}"
                )
            staged = self._staged(name, version)
            if staged is not None and staged.document == doc:
                with contextlib.suppress(ReleaseRefused):
                    self._verify_tree(staged)
                    return staged
            infos: dict[str, TargetFile] = {}
            for item in doc.files:
                info = self._targetinfo(updater, item.blob_path)
                if info is None:
                    raise ReleaseRefused(
                        f"file {item.path} of {name} {version} (blob {item.sha256[:12]}…) "
                        "is not in the signed targets"
                    )
                if info.length != item.length or info.hashes.get("sha256") != item.sha256:
                    raise ReleaseRefused(
                        f"file {item.path} of {name} {version}: the release document and the "
                        "signed targets disagree on its size or hash"
                    )
                infos.setdefault(item.sha256, info)
            step("downloading")
            for item in doc.files:
                if item.sha256 in infos:
                    self._download(infos.pop(item.sha256), f"file {item.path}")
            step("staging")
            return self._stage(doc, body)

    def activate(self, staged: StagedRelease) -> None:
        """Make ``staged`` the active release of its name; the old active becomes previous."""
        with self._locked():
            current = self._staged(staged.name, staged.version)
            if current is None or current.document != staged.document:
                raise ConfigError(
                    f"release {staged.name} {staged.version} is not staged in {self._releases}"
                )
            slot = self._state().releases.get(staged.name, _Slot())
            if slot.active == staged.version and self._link_version(staged.name) == slot.active:
                return
            previous = slot.active if slot.active is not None else slot.previous
            self._switch(staged.name, _Slot(active=staged.version, previous=previous))
            self._prune(staged.name)

    def discard(self, name: str) -> None:
        """Remove staged releases of ``name`` that are neither active nor previous.

        For a release that was fetched but refused by its health check: it
        is never activated, so it should not stay on the device's disk.
        """
        with self._locked():
            if (self._releases / name).is_dir():
                self._prune(name)

    def active(self, name: str) -> StagedRelease | None:
        """The release ``active/<name>`` points at, or None."""
        version = self._link_version(name)
        return None if version is None else self._staged(name, version)

    def previous(self, name: str) -> StagedRelease | None:
        """The last-known-good release of ``name`` that is still on the device, or None."""
        slot = self._state().releases.get(name)
        if slot is None or slot.previous is None:
            return None
        return self._staged(name, slot.previous)

    def rollback(self, name: str) -> StagedRelease:
        """Swap ``name`` back to its previous release (re-verified first) and return it."""
        with self._locked():
            return self._rollback(name)

    def recover(self) -> list[str]:
        """Clean up after a crash and check the active releases; returns what it did.

        Removes half-built staging folders, half-deleted ones and temporary
        symlinks and files; keeps ``.part`` files so downloads resume;
        settles a swap that was in flight; re-verifies every active release
        and rolls back to the previous one when its files are damaged.
        """
        notes: list[str] = []
        with self._locked():
            for leftover in self._leftovers():
                remove_tree(leftover)
                notes.append(f"removed {leftover.relative_to(self.data)}")
            state = self._state()
            for name, slot in list(state.pending.items()):
                if self._link_version(name) == slot.active:
                    state.releases[name] = slot
                del state.pending[name]
            for link in sorted(self._active.iterdir()):
                version = self._link_version(link.name)
                slot = state.releases.get(link.name, _Slot())
                if version is not None and version != slot.active:
                    state.releases[link.name] = _Slot(active=version, previous=slot.active)
            self._write_state(state)
            for name in sorted(state.releases):
                notes.extend(self._check_active(name))
        return notes

    # -- metadata -----------------------------------------------------------------------------

    def _refresh(self) -> Updater:
        """A refreshed Updater. Retried once: without consistent snapshots a publish that
        happens between our timestamp and snapshot reads looks like a version mismatch."""
        try:
            bootstrap = self._trust_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self._trust_file}: {exc.strerror or exc}") from exc
        for attempt in range(2):
            try:
                with _tuf_errors("refreshing the release metadata"):
                    updater = Updater(
                        str(self._tuf_dir),
                        self.metadata_url,
                        fetcher=self._fetcher,
                        bootstrap=bootstrap,
                    )
                    updater.refresh()
                return updater
            except ReleaseRefused:
                if attempt:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    @staticmethod
    def _targetinfo(updater: Updater, path: str) -> TargetFile | None:
        with _tuf_errors(f"looking up {path}"):
            info: TargetFile | None = updater.get_targetinfo(path)
            return info

    # -- downloads ----------------------------------------------------------------------------

    def _download(self, info: TargetFile, label: str) -> Path:
        """The verified blob for ``info``, downloaded (or resumed) when not already here."""
        sha = info.hashes.get("sha256", "")
        if not _SHA256.match(sha):
            raise ReleaseRefused(f"{label} has no sha256 in the signed metadata")
        blob = self._blobs / sha
        if blob.is_file():
            if _matches(blob, info):
                return blob
            _unlink(blob)
        part = self._downloads / f"{sha}.part"
        for attempt in range(2):
            resumed = self._receive(info, part, label)
            try:
                with open(part, "rb") as fh:
                    info.verify_length_and_hashes(fh)
            except tuf_errors.LengthOrHashMismatchError as exc:
                observed = sha256_file(part)
                part.unlink(missing_ok=True)
                if resumed and not attempt:
                    continue  # the kept part may be what was wrong: once more from the start
                raise ReleaseRefused(
                    f"hash mismatch for {label}: the downloaded bytes hash to {observed[:12]}…, "
                    f"the signed metadata says {sha[:12]}…"
                ) from exc
            os.chmod(part, 0o444)
            os.replace(part, blob)
            return blob
        raise AssertionError("unreachable")

    def _receive(self, info: TargetFile, part: Path, label: str) -> int:
        """Stream ``info`` into ``part`` from where it stops; returns the offset resumed from."""
        length = info.length
        offset = part.stat().st_size if part.exists() else 0
        if offset > length:
            part.unlink()
            offset = 0
        if offset == length:
            return offset
        url = self.targets_url + info.path
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and offset:
                    part.unlink()
                    return self._receive(info, part, label)
                if response.status_code >= 400:
                    raise TransportError(
                        f"downloading {label} from {url}: HTTP {response.status_code}"
                    )
                if response.status_code == 206:
                    if _range_start(response.headers.get("content-range")) != offset:
                        raise TransportError(
                            f"downloading {label} from {url}: the server answered another range "
                            f"than bytes={offset}-"
                        )
                    mode = "ab"
                else:
                    offset, mode = 0, "wb"  # the server sent the whole file
                announced = response.headers.get("content-length", "")
                if announced.isdigit() and offset + int(announced) > length:
                    part.unlink(missing_ok=True)
                    raise ReleaseRefused(
                        f"size exceeds metadata: the server announces {offset + int(announced)} "
                        f"bytes for {label}, the signed metadata says {length}"
                    )
                received = offset
                with open(part, mode) as out:
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > length:
                            break
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise TransportError(f"downloading {label} from {url}: {exc}") from exc
        if received > length:
            part.unlink(missing_ok=True)
            raise ReleaseRefused(
                f"endless data: the server sent more than the {length} bytes the signed metadata "
                f"gives for {label}"
            )
        if received < length:
            part.unlink(missing_ok=True)
            raise ReleaseRefused(
                f"size mismatch for {label}: the server sent {received} bytes, the signed "
                f"metadata says {length}"
            )
        return offset

    # -- staging and swapping -----------------------------------------------------------------

    def _stage(self, doc: ReleaseDocument, body: bytes) -> StagedRelease:
        folder = self._releases / doc.name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{_STAGING}{doc.version}-{secrets.token_hex(4)}"
        tmp.mkdir()
        for item in doc.files:
            dest = tmp.joinpath(*item.path.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            blob = self._blobs / item.sha256
            try:
                os.link(blob, dest)
            except OSError:  # another file system, or no hard links: a copy will do
                shutil.copyfile(blob, dest)
        _make_read_only(tmp)
        final = folder / doc.version
        if final.exists():  # a damaged or different copy: replaced whole
            self._trash(final)
        atomic_write(folder / f"{doc.version}.json", body)
        os.rename(tmp, final)
        return StagedRelease(doc.name, doc.version, final, doc)

    def _switch(self, name: str, slot: _Slot) -> None:
        """Point ``active/<name>`` at ``slot.active``, journalled in installed.json."""
        assert slot.active is not None
        state = self._state()
        state.pending[name] = slot
        self._write_state(state)
        tmp = self._active / f"{TEMP_PREFIX}{name}.{secrets.token_hex(4)}"
        os.symlink(os.path.join("..", "releases", name, slot.active), tmp)
        os.replace(tmp, self._active / name)
        state.releases[name] = slot
        del state.pending[name]
        self._write_state(state)

    def _downgrade(self, name: str, version: str, slot: _Slot, allowed: bool) -> StagedRelease:
        if not allowed or slot.previous != version:
            extra = f" (previous is {slot.previous})" if allowed else ""
            raise ReleaseRefused(
                f"release {name} {version} is older than active {slot.active}; only the "
                f"previous release may be taken back{extra}"
            )
        staged = self._staged(name, version)
        if staged is None:
            raise ReleaseRefused(
                f"release {name} {version} is older than active {slot.active} and no longer on "
                "this device"
            )
        self._verify_tree(staged)
        return staged

    def _rollback(self, name: str) -> StagedRelease:
        slot = self._state().releases.get(name, _Slot())
        staged = None if slot.previous is None else self._staged(name, slot.previous)
        if staged is None:
            raise ModelNotFound(f"release {name} has no previous release on this device")
        self._verify_tree(staged)
        self._switch(name, _Slot(active=staged.version, previous=None))
        return staged

    def _check_active(self, name: str) -> list[str]:
        staged = self.active(name)
        if staged is None:
            return [f"{name}: no active release"]
        try:
            self._verify_tree(staged)
            return []
        except ReleaseRefused as exc:
            note = f"{name} {staged.version} is damaged ({exc})"
            try:
                back = self._rollback(name)
            except FoglineError as again:
                return [f"{note}; cannot roll back: {again}"]
            return [f"{note}; rolled back to {back.version}"]

    def _prune(self, name: str) -> None:
        """Remove staged releases of ``name`` other than active and previous, then unused blobs."""
        slot = self._state().releases.get(name, _Slot())
        keep = {slot.active, slot.previous}
        folder = self._releases / name
        for child in folder.iterdir():
            if child.name.startswith("."):
                continue
            version = child.name.removesuffix(".json")
            if version not in keep:
                self._trash(child)
        used: set[str] = set()
        for doc_file in self._releases.glob("*/*.json"):
            with contextlib.suppress(OSError, ValidationError):
                doc = ReleaseDocument.model_validate_json(doc_file.read_bytes())
                used.update(item.sha256 for item in doc.files)
        for blob in self._blobs.iterdir():
            if blob.name not in used:
                _unlink(blob)

    def _trash(self, path: Path) -> None:
        """Remove a staged folder: renamed away first, so no half-deleted one keeps its name."""
        if path.is_dir() and not path.is_symlink():
            trash = path.with_name(f"{_TRASH}{path.name}-{secrets.token_hex(4)}")
            os.rename(path, trash)
            remove_tree(trash)
        else:
            path.unlink(missing_ok=True)

    def _leftovers(self) -> list[Path]:
        found = [p for p in self.data.iterdir() if p.name.startswith(TEMP_PREFIX)]
        found += [p for p in self._active.iterdir() if p.name.startswith(TEMP_PREFIX)]
        for folder in self._releases.iterdir():
            if folder.is_dir():
                found += [
                    p
                    for p in folder.iterdir()
                    if p.name.startswith((_STAGING, _TRASH, TEMP_PREFIX))
                ]
        return found

    # -- reading the device's state -----------------------------------------------------------

    def _link_version(self, name: str) -> str | None:
        link = self._active / name
        if not link.is_symlink():
            return None
        return PurePosixPath(os.readlink(link)).name

    def _staged(self, name: str, version: str) -> StagedRelease | None:
        folder = self._releases / name / version
        doc_file = self._releases / name / f"{version}.json"
        if not folder.is_dir() or not doc_file.is_file():
            return None
        try:
            doc = ReleaseDocument.model_validate_json(doc_file.read_bytes())
        except (OSError, ValidationError):
            return None
        return StagedRelease(name, version, folder, doc)

    def _verify_tree(self, staged: StagedRelease) -> None:
        for item in staged.document.files:
            file = staged.path.joinpath(*item.path.split("/"))
            problem = None
            if file.is_symlink() or not file.is_file():
                problem = "is missing"
            elif file.stat().st_size != item.length:
                problem = f"has {file.stat().st_size} bytes, not {item.length}"
            elif sha256_file(file) != item.sha256:
                problem = "does not match its sha256"
            if problem:
                raise ReleaseRefused(
                    f"{staged.name} {staged.version}: file {item.path} {problem} (damaged on disk)"
                )

    def _state(self) -> _Installed:
        try:
            return _Installed.model_validate_json(self._state_file.read_bytes())
        except FileNotFoundError:
            return _Installed()
        except (OSError, ValidationError):
            return _Installed()  # rebuilt from the active links by recover()

    def _write_state(self, state: _Installed) -> None:
        atomic_write(self._state_file, state.model_dump_json(indent=2).encode())


class _HttpxFetcher(FetcherInterface):
    """ngclient's metadata downloads over the installer's httpx client (one timeout, one pool)."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            response = self._client.send(self._client.build_request("GET", url), stream=True)
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            response.close()
            raise tuf_errors.DownloadHTTPError(
                f"{url}: HTTP {response.status_code}", response.status_code
            )
        return _chunks(response, url)


def _chunks(response: httpx.Response, url: str) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()
    except httpx.HTTPError as exc:
        raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
    finally:
        response.close()


@contextlib.contextmanager
def _tuf_errors(what: str) -> Iterator[None]:
    """python-tuf's exceptions as fogline's: refusals are ReleaseRefused, the network TransportError."""
    try:
        yield
    except tuf_errors.UnsignedMetadataError as exc:
        raise ReleaseRefused(f"bad signature while {what}: {exc}") from exc
    except tuf_errors.ExpiredMetadataError as exc:
        raise ReleaseRefused(
            f"expired metadata while {what} (a freeze attack, or a repository no longer "
            f"re-signed): {exc}"
        ) from exc
    except tuf_errors.BadVersionNumberError as exc:
        raise ReleaseRefused(f"metadata rollback while {what}: {exc}") from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise ReleaseRefused(f"hash mismatch while {what}: {exc}") from exc
    except tuf_errors.RepositoryError as exc:
        raise ReleaseRefused(f"bad metadata while {what}: {exc}") from exc
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise ReleaseRefused(f"endless data while {what}: {exc}") from exc
    except tuf_errors.DownloadError as exc:
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise TransportError(f"{what}: {exc}{cause}") from exc


def _parse_document(body: bytes, name: str, version: str) -> ReleaseDocument:
    try:
        doc = ReleaseDocument.model_validate_json(body)
    except ValidationError as exc:
        raise ReleaseRefused(f"release document {name} {version} is not valid: {exc}") from exc
    if doc.name != name or doc.version != version:
        raise ReleaseRefused(
            f"release document {name} {version} describes {doc.name} {doc.version}"
        )
    return doc


def _matches(path: Path, info: TargetFile) -> bool:
    try:
        with open(path, "rb") as fh:
            info.verify_length_and_hashes(fh)
        return True
    except (OSError, tuf_errors.LengthOrHashMismatchError):
        return False


def _range_start(content_range: str | None) -> int | None:
    """``bytes 100-199/200`` → 100."""
    match = re.match(r"^bytes (\d+)-\d+/(?:\d+|\*)$", content_range or "")
    return int(match.group(1)) if match else None


def _make_read_only(tree: Path) -> None:
    for root, dirs, files in os.walk(tree, topdown=False):
        for name in files:
            os.chmod(os.path.join(root, name), stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o555)
    os.chmod(tree, 0o555)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.chmod(path, 0o644)
    path.unlink(missing_ok=True)
