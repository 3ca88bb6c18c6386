"""Install signed releases on a device: verify, download with resume, stage, swap atomically.

:class:`ReleaseInstaller` is the facade over three parts, each in its own
module: the signed metadata refreshed with python-tuf's ngclient
(:mod:`._refresh`), the files downloaded with resume, a length cap and a
hash check (:mod:`._download`), and the release slots: staging, the
journalled atomic swap of ``active/<name>``, recovery and rollback
(:mod:`._slots`); with a :class:`~._keyring.Keyring`, what is kept is sealed and
encrypted releases are opened (:mod:`._vault`). The policy is here: which release may be fetched (never
older than the active one, but the previous on request), what must agree
(the release document with the signed targets) and when to prune.

Device data folder ``DEV``::

    DEV/trust/root.json                  the trust anchor given at enrolment
    DEV/tuf/                             ngclient's verified metadata cache
    DEV/downloads/<sha256>.part          an unfinished download, resumed next time
    DEV/blobs/<sha256>                   a verified file (read-only; a model sealed, see ._vault)
    DEV/releases/<name>/<version>/       a staged release built from blobs (read-only)
    DEV/releases/<name>/<version>.json   its release document
    DEV/active/<name>                    symlink to ../releases/<name>/<version>
    DEV/installed.json                   active and previous (last-known-good) per name

Concurrency: blocking I/O; an async agent calls it from a worker thread. A
file lock on ``DEV/.lock`` serializes installers of one folder (processes and
threads alike).
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from packaging.version import Version
from pydantic import ValidationError
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from fogline._files import atomic_write, file_lock
from fogline.errors import ConfigError, ModelNotFound, ReleaseRefused, WrongKey
from fogline.fleet.agent._download import Downloads
from fogline.fleet.agent._keyring import Keyring
from fogline.fleet.agent._refresh import MetadataRefresh, target_info
from fogline.fleet.agent._slots import Slot, Slots, StagedRelease
from fogline.fleet.agent._vault import Vault
from fogline.model import ModelReader
from fogline.security import (
    ClientTls,
    KeysDocument,
    ReleaseDocument,
    SealedFiles,
    check_release_name,
    parse_version,
    release_target_path,
)

__all__ = ["ReleaseInstaller", "StagedRelease"]


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
    only once. ``tls`` (mutual TLS) is the CA the repository's HTTPS is
    checked with and the device certificate it presents. ``keyring`` and
    ``device_id``: the device's keys, to keep model files sealed and to open
    releases encrypted for ``device_id``.
    """

    def __init__(
        self,
        data: Path,
        repository_url: str,
        *,
        trusted_root: Path | None = None,
        timeout: float = 30.0,
        tls: ClientTls | None = None,
        keyring: Keyring | None = None,
        device_id: str | None = None,
    ) -> None:
        self.data = Path(data)
        base = repository_url.rstrip("/")
        self.metadata_url = f"{base}/metadata/"
        self.targets_url = f"{base}/targets/"
        trust_file = self.data / "trust" / "root.json"
        for folder in ("trust", "tuf", "downloads", "blobs", "releases", "active"):
            (self.data / folder).mkdir(parents=True, exist_ok=True)
        if trusted_root is not None:
            try:
                atomic_write(trust_file, Path(trusted_root).read_bytes())
            except OSError as exc:
                raise ConfigError(f"trusted root {trusted_root}: {exc.strerror or exc}") from exc
        if not trust_file.is_file():
            raise ConfigError(
                f"{trust_file} is missing: enrol the device with the repository's root.json "
                "(trusted_root=...)"
            )
        self._client = httpx.Client(
            timeout=timeout,
            headers={"Accept-Encoding": "identity"},
            verify=_tls_context() if tls is None else tls.context(),  # mTLS: its certificate
        )
        self._metadata = MetadataRefresh(
            trust_file, self.data / "tuf", self.metadata_url, self._client
        )
        self._downloads = Downloads(
            self.data / "blobs", self.data / "downloads", self.targets_url, self._client
        )
        self.keyring = keyring
        self.device_id = device_id
        self.vault = Vault(None if keyring is None else keyring.device_key)
        self._slots = Slots(self.data, self._downloads.blobs, self.vault.check)
        #: How the health check opens the models this installer keeps (sealed ones in memory).
        self.read: ModelReader = SealedFiles(None if keyring is None else keyring.device_key)

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
            slot = self._slots.slot(name)
            if slot.active is not None and wanted < Version(slot.active):
                return self._downgrade(name, version, slot, allow_downgrade_to_previous)
            step("verifying")
            updater = self._metadata.refresh()
            doc_info = target_info(updater, release_target_path(name, version))
            if doc_info is None:
                raise ModelNotFound(f"release {name} {version} is not in {self.targets_url}")
            doc_blob = self._downloads.download(doc_info, f"release document {name} {version}")
            body = doc_blob.read_bytes()
            doc = _parse_document(body, name, version)
            if doc.is_expired():
                raise ReleaseRefused(
                    f"release {name} {version} expired at {doc.expires.isoformat()}"
                )
            staged = self._slots.staged(name, version)
            if staged is not None and staged.document == doc:
                with contextlib.suppress(ReleaseRefused):
                    self._slots.verify(staged)
                    return staged
            infos: dict[str, TargetFile] = {}
            for item in doc.files:
                info = target_info(updater, item.blob_path)
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
            data_key = self._data_key(updater, doc)
            step("downloading")
            for item in doc.files:
                if item.sha256 in infos:
                    self._downloads.download(
                        infos.pop(item.sha256),
                        f"file {item.path}",
                        keep=functools.partial(
                            self.vault.keep, item=item, doc=doc, data_key=data_key
                        ),
                        intact=functools.partial(self.vault.intact, item=item),
                    )
            step("staging")
            return self._slots.stage(doc, body)

    def activate(self, staged: StagedRelease) -> None:
        """Make ``staged`` the active release of its name; the old active becomes previous."""
        with self._locked():
            current = self._slots.staged(staged.name, staged.version)
            if current is None or current.document != staged.document:
                raise ConfigError(
                    f"release {staged.name} {staged.version} is not staged in "
                    f"{self._slots.releases}"
                )
            slot = self._slots.slot(staged.name)
            if (
                slot.active == staged.version
                and self._slots.link_version(staged.name) == slot.active
            ):
                return
            previous = slot.active if slot.active is not None else slot.previous
            self._slots.switch(staged.name, Slot(active=staged.version, previous=previous))
            self._prune(staged.name)

    def discard(self, name: str) -> None:
        """Remove staged releases of ``name`` that are neither active nor previous.

        For a release that was fetched but refused by its health check: it
        is never activated, so it should not stay on the device's disk.
        """
        with self._locked():
            if (self._slots.releases / name).is_dir():
                self._prune(name)

    def active(self, name: str) -> StagedRelease | None:
        """The release ``active/<name>`` points at, or None."""
        return self._slots.active(name)

    def previous(self, name: str) -> StagedRelease | None:
        """The last-known-good release of ``name`` that is still on the device, or None."""
        slot = self._slots.slot(name)
        return None if slot.previous is None else self._slots.staged(name, slot.previous)

    def rollback(self, name: str) -> StagedRelease:
        """Swap ``name`` back to its previous release (re-verified first) and return it."""
        with self._locked():
            return self._slots.rollback(name)

    def recover(self) -> list[str]:
        """Clean up after a crash and check the active releases; returns what it did.

        Removes half-built staging folders, half-deleted ones and temporary
        symlinks and files; keeps ``.part`` files so downloads resume;
        settles a swap that was in flight; re-verifies every active release
        and rolls back to the previous one when its files are damaged.
        """
        with self._locked():
            return self._slots.recover()

    # -- policy -------------------------------------------------------------------------------

    def _downgrade(self, name: str, version: str, slot: Slot, allowed: bool) -> StagedRelease:
        if not allowed or slot.previous != version:
            extra = f" (previous is {slot.previous})" if allowed else ""
            raise ReleaseRefused(
                f"release {name} {version} is older than active {slot.active}; only the "
                f"previous release may be taken back{extra}"
            )
        staged = self._slots.staged(name, version)
        if staged is None:
            raise ReleaseRefused(
                f"release {name} {version} is older than active {slot.active} and no longer on "
                "this device"
            )
        self._slots.verify(staged)
        return staged

    def _data_key(self, updater: Any, doc: ReleaseDocument) -> bytes | None:
        """The data key of an encrypted release, unwrapped for this device (None: not encrypted).

        The keys document is a signed target like the files: it is verified
        before it is read, and the key is unwrapped before any file is fetched.
        """
        if doc.encryption is None:
            return None
        if self.keyring is None or self.device_id is None:
            raise ReleaseRefused(
                f"release {doc.name} {doc.version} is encrypted, and this installer has no "
                "device keys to open it"
            )
        info = target_info(updater, doc.encryption.keys)
        if info is None:
            raise ReleaseRefused(
                f"the keys of encrypted release {doc.name} {doc.version} "
                f"({doc.encryption.keys}) are not in the signed targets"
            )
        blob = self._downloads.download(info, f"keys of {doc.name} {doc.version}")
        try:
            keys = KeysDocument.model_validate_json(blob.read_bytes())
        except ValidationError as exc:
            raise ReleaseRefused(
                f"the keys document of {doc.name} {doc.version} is not valid"
            ) from exc
        if (keys.name, keys.version) != (doc.name, doc.version):
            raise ReleaseRefused(
                f"the keys document of {doc.name} {doc.version} is for {keys.name} {keys.version}"
            )
        try:
            return keys.unwrap(self.device_id, self.keyring.release_key)
        except WrongKey as exc:
            raise ReleaseRefused(str(exc)) from exc

    def _prune(self, name: str) -> None:
        """Remove staged releases of ``name`` other than active and previous, then unused blobs."""
        self._downloads.keep_only(self._slots.prune(name))


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
