"""The controller's release repository: create signed releases, list them, keep them fresh.

A release is TUF targets (see :mod:`._document`): one content-addressed
``blobs/<sha256>`` per distinct file, shared by every release that holds the
same bytes, plus the release document. Creating one writes the blobs and the
document first, then ``targets.json``, ``snapshot.json`` and
``timestamp.json``, each atomically, so a device reading at the same moment
sees either the old repository or the new one.

>>> import tempfile, pathlib
>>> from fogline.security import init_keys
>>> data = pathlib.Path(tempfile.mkdtemp())
>>> _ = init_keys(data)
>>> model = data / "model"; model.mkdir(); _ = (model / "net.onnx").write_bytes(b"onnx")
>>> repo = ReleaseRepository(data)
>>> published = repo.create_release(model, "net", "1.0.0", data / "keys" / "targets.pem")
>>> published.document.kind, published.document.entry, [d.version for d in repo.releases()]
('model', 'net.onnx', ['1.0.0'])
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tuf.api.metadata import TargetFile  # type: ignore[attr-defined]

from fogline._files import atomic_output, atomic_write, sha256_file
from fogline.errors import ConfigError, ModelNotFound
from fogline.security._contents import collect_files, infer_kind_entry
from fogline.security._document import (
    DEFAULT_RELEASE_EXPIRY,
    Canary,
    Encryption,
    Health,
    ReleaseDocument,
    ReleaseFile,
    check_release_name,
    parse_version,
    release_target_path,
)
from fogline.security._envelope import KeysDocument, encrypt_file, keys_target_path
from fogline.security._integrity import IntegrityCheck, ReleaseCheck
from fogline.security._metadata import (
    EXPIRY,
    MetadataStore,
    RepositoryLayout,
    load_signer,
    utcnow,
)


@dataclass(frozen=True)
class Envelope:
    """Encrypt a release for devices: its data key, and each device id's X25519 public key.

    The caller keeps the data key (sealed) to wrap it for devices enrolled later.
    """

    data_key: bytes = field(repr=False)
    recipients: Mapping[str, bytes]


@dataclass(frozen=True)
class PublishedRelease:
    """A release just created: its document and the target that holds it."""

    document: ReleaseDocument
    target: str
    sha256: str
    length: int


class ReleaseRepository:
    """The signed releases in a controller data folder (``fogline keys init`` made it)."""

    def __init__(self, data: Path) -> None:
        self.layout = RepositoryLayout(Path(data))
        self.layout.require()
        self._store = MetadataStore(self.layout)

    @property
    def metadata_dir(self) -> Path:
        """Served at ``/repository/metadata/``."""
        return self.layout.metadata_dir

    @property
    def targets_dir(self) -> Path:
        """Served at ``/repository/targets/``."""
        return self.layout.targets_dir

    def create_release(
        self,
        folder: Path,
        name: str,
        version: str,
        key_path: Path,
        *,
        expires: timedelta | datetime = DEFAULT_RELEASE_EXPIRY,
        kind: str | None = None,
        entry: str | None = None,
        latency_budget_ms: float | None = None,
        sample: str | None = None,
        canary: str | None = None,
        description: str = "",
        provenance: dict[str, Any] | None = None,
        envelope: Envelope | None = None,
    ) -> PublishedRelease:
        """Sign ``folder`` as release ``name`` ``version`` with the targets key at ``key_path``.

        Everything is checked before anything is written: the name and
        version (newer than every release of that name), the files (no
        symlink leaving the folder, not empty), the kind and entry, the
        health sample and canary data (files of the release), the key.
        With ``envelope`` every file is stored encrypted under its data key
        and the key, wrapped for each recipient, is the signed target
        ``keys/<name>/<version>.json`` (:mod:`._envelope`).
        """
        try:
            check_release_name(name)
            version = str(parse_version(version))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        now = utcnow()
        until = expires if isinstance(expires, datetime) else now + expires
        if until.tzinfo is None:
            until = until.replace(tzinfo=timezone.utc)
        if until <= now:
            raise ConfigError(f"the release would expire at {until.isoformat()}, in the past")
        files = collect_files(Path(folder))
        paths = [relative for relative, _ in files]
        kind_, entry_ = infer_kind_entry(paths, kind, entry)
        for label, path in (("--sample", sample), ("--canary", canary)):
            if path is not None and path not in paths:
                raise ConfigError(f"{label} {path!r} is not a file of the release folder")
        signer = load_signer(Path(key_path))
        try:
            if envelope is None:
                entries: list[tuple[ReleaseFile, Path | bytes]] = [
                    _hash(relative, source) for relative, source in files
                ]
            else:
                entries = [
                    _encrypt(relative, source, envelope.data_key, name, version)
                    for relative, source in files
                ]
            keys_body = None
            encryption = None
            if envelope is not None:
                keys = KeysDocument.wrap(name, version, envelope.data_key, envelope.recipients)
                keys_body = keys.body()
                encryption = Encryption(keys=keys_target_path(name, version))
            document = ReleaseDocument(
                name=name,
                version=version,
                created=now,
                expires=until,
                kind=kind_,
                entry=entry_,
                files=[item for item, _ in entries],
                health=Health(latency_budget_ms=latency_budget_ms, sample=sample),
                canary=Canary(data=canary),
                description=description,
                provenance=provenance,
                encryption=encryption,
            )
        except ValidationError as exc:
            raise ConfigError(f"release {name} {version}: {exc}") from None
        body = (document.model_dump_json(indent=2) + "\n").encode()

        with self.layout.locked():
            self._store.check_key("targets", signer)
            newest = max(
                (d.parsed_version for d in self.releases() if d.name == name), default=None
            )
            if newest is not None and document.parsed_version <= newest:
                raise ConfigError(
                    f"version {version} is not newer than release {name} {newest} already in "
                    "the repository; give a higher --version"
                )
            targets = self._store.targets()
            for item, source in entries:
                self._store_blob(item, source)
                targets.signed.targets[item.blob_path] = TargetFile(
                    item.length, {"sha256": item.sha256}, item.blob_path
                )
            if encryption is not None and keys_body is not None:
                self._add_target(targets, encryption.keys, keys_body)
            doc_file = self.targets_dir / document.target_path
            doc_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(doc_file, body)
            doc_target = TargetFile.from_data(document.target_path, body, ["sha256"])
            targets.signed.targets[document.target_path] = doc_target
            self._store.publish_targets(targets, signer)
        return PublishedRelease(
            document, document.target_path, doc_target.hashes["sha256"], len(body)
        )

    def rewrap(
        self,
        name: str,
        version: str,
        data_key: bytes,
        recipients: Mapping[str, bytes],
        key_path: Path,
    ) -> KeysDocument:
        """Wrap encrypted release ``name`` ``version``'s data key anew for exactly ``recipients``.

        Replaces its signed ``keys/<name>/<version>.json`` (devices enrolled
        since get a key, revoked ones lose theirs) and re-signs the targets.
        """
        document = self.release(name, version)
        if document.encryption is None:
            raise ConfigError(f"release {name} {version} is not encrypted: nothing to re-wrap")
        keys = KeysDocument.wrap(document.name, document.version, data_key, recipients)
        signer = load_signer(Path(key_path))
        with self.layout.locked():
            self._store.check_key("targets", signer)
            targets = self._store.targets()
            self._add_target(targets, document.encryption.keys, keys.body())
            self._store.publish_targets(targets, signer)
        return keys

    def keys_document(self, name: str, version: str) -> KeysDocument | None:
        """The wrapped keys of encrypted release ``name`` ``version`` (None for a plain release)."""
        document = self.release(name, version)
        if document.encryption is None:
            return None
        file = self.targets_dir / document.encryption.keys
        try:
            return KeysDocument.model_validate_json(file.read_bytes())
        except (OSError, ValidationError) as exc:
            raise ConfigError(f"keys document {file} cannot be read: {exc}") from exc

    def _add_target(self, targets: Any, path: str, body: bytes) -> None:
        """Write ``body`` as target ``path`` and list it in (the unsigned) ``targets``."""
        file = self.targets_dir / path
        file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(file, body)
        targets.signed.targets[path] = TargetFile.from_data(path, body, ["sha256"])

    def _store_blob(self, item: ReleaseFile, source: Path | bytes) -> None:
        blob = self.targets_dir / item.blob_path
        if blob.is_file() and blob.stat().st_size == item.length:
            return  # content-addressed: the same bytes are already there
        blob.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):  # an encrypted file, made in memory
            atomic_write(blob, source)
            return
        with atomic_output(blob) as tmp:
            digest = hashlib.sha256()
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    dst.write(chunk)
            if digest.hexdigest() != item.sha256:
                raise ConfigError(f"{source} changed while the release was being created")

    def releases(self) -> list[ReleaseDocument]:
        """Every release that signed targets.json lists, by name then version."""
        found = []
        for path in self._store.targets().signed.targets:
            if path.startswith("releases/"):
                found.append(self._read_document(path))
        return sorted(found, key=lambda d: (d.name, d.parsed_version))

    def release(self, name: str, version: str) -> ReleaseDocument:
        """One release's document; ModelNotFound when the repository has no such release."""
        try:
            path = release_target_path(name, version)
        except ValueError as exc:
            raise ModelNotFound(str(exc)) from None
        if path not in self._store.targets().signed.targets:
            raise ModelNotFound(f"no release {name} {version} in {self.layout.data}")
        return self._read_document(path)

    def verify(self, name: str | None = None, version: str | None = None) -> list[ReleaseCheck]:
        """Hash the stored files of releases (all, one name's, or one) against the signed metadata.

        Each release document against its entry in signed targets.json, each
        file against the length and sha256 its document names. Damage is
        reported, not raised; ``ModelNotFound`` for an unknown name or version.
        A controller that checks repeatedly keeps one :class:`IntegrityCheck`.
        """
        return IntegrityCheck(self).verify(name, version)

    def _read_document(self, target: str) -> ReleaseDocument:
        file = self.targets_dir / target
        try:
            return ReleaseDocument.model_validate_json(file.read_bytes())
        except (OSError, ValidationError) as exc:
            raise ConfigError(f"release document {file} cannot be read: {exc}") from exc

    def refresh_timestamp(
        self,
        min_remaining: timedelta = timedelta(hours=6),
        expires: timedelta = EXPIRY["timestamp"],
        *,
        renew_within: timedelta = timedelta(days=30),
    ) -> bool:
        """Keep every role's metadata from expiring; returns whether anything was re-signed.

        Snapshot and timestamp are re-signed with the online key when they
        expire within ``min_remaining``; root and targets (valid a year) with
        their own keys when they expire within ``renew_within`` and those keys
        are in this folder. A controller calls this periodically: devices
        refuse stale metadata (a freeze attack looks just like a controller
        that stopped doing this).
        """
        with self.layout.locked():
            renewed = False
            soon = utcnow() + renew_within
            if self._store.root().signed.expires <= soon and self.layout.key_file("root").is_file():
                self._store.renew_root(self._store.signer("root"))
                renewed = True
            targets = self._store.targets()
            if targets.signed.expires <= soon and self.layout.key_file("targets").is_file():
                self._store.publish_targets(targets, self._store.signer("targets"))
                return True  # with a new snapshot and timestamp
            deadline = utcnow() + min_remaining
            if self._store.snapshot().signed.expires <= deadline:
                self._store.publish_snapshot()
                return True
            if self._store.timestamp().signed.expires <= deadline:
                self._store.publish_timestamp(expires=expires)
                return True
        return renewed


def _encrypt(
    relative: str, source: Path, data_key: bytes, name: str, version: str
) -> tuple[ReleaseFile, bytes]:
    """The encrypted file: its entry (ciphertext's length and hash, plain hash) and bytes."""
    try:
        plain = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read it: {exc.strerror or exc}") from exc
    sealed = encrypt_file(plain, data_key, name, version, relative)
    item = ReleaseFile(
        path=relative,
        length=len(sealed),
        sha256=hashlib.sha256(sealed).hexdigest(),
        plain_sha256=hashlib.sha256(plain).hexdigest(),
    )
    return item, sealed


def _hash(relative: str, source: Path) -> tuple[ReleaseFile, Path | bytes]:
    # The size is read after the hash: a file that changes in between differs from this
    # sha256 when _store_blob copies it, which refuses it as changed during the release.
    digest = sha256_file(source)
    return ReleaseFile(path=relative, length=source.stat().st_size, sha256=digest), source
