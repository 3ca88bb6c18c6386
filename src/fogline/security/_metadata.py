"""The controller's TUF repository on disk: its layout, its keys and signing its metadata.

Layout of a controller data folder ``DIR``::

    DIR/keys/root.pem          signs root.json (offline in spirit: used only to rotate)
    DIR/keys/targets.pem       signs targets.json (the release key)
    DIR/keys/online.pem        signs snapshot.json and timestamp.json, so the
                               controller can refresh them without the release key
    DIR/repository/metadata/   1.root.json, 2.root.json, ..., root.json (the latest),
                               targets.json, snapshot.json, timestamp.json
    DIR/repository/targets/    releases/<name>/<version>.json and blobs/<sha256>

Metadata is python-tuf's Metadata API, keys are Ed25519 via securesystemslib's
``CryptoSigner``; nothing here invents a format. ``consistent_snapshot`` is off,
so a reader may fetch a timestamp and then a snapshot written a moment later:
devices retry a refresh once for that reason. Writers hold ``DIR/.lock`` and
write files in the order readers need them (targets before snapshot before
timestamp), each one atomically.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.serialization import load_pem_private_key

# python-tuf and securesystemslib re-export their classes without __all__.
from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from fogline._files import atomic_write, file_lock
from fogline.errors import ConfigError

#: The three key files and the TUF roles each one signs.
KEY_ROLES: dict[str, tuple[str, ...]] = {
    "root": ("root",),
    "targets": ("targets",),
    "online": ("snapshot", "timestamp"),
}
#: How long each role's metadata is valid when it is (re)signed.
EXPIRY: dict[str, timedelta] = {
    "root": timedelta(days=365),
    "targets": timedelta(days=365),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}
_SERIALIZER = JSONSerializer(compact=False)
S = TypeVar("S", Root, Timestamp, Snapshot, Targets)


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class RepositoryLayout:
    """Paths of a controller data folder (see the module docstring)."""

    data: Path

    @property
    def keys_dir(self) -> Path:
        return self.data / "keys"

    @property
    def repository_dir(self) -> Path:
        return self.data / "repository"

    @property
    def metadata_dir(self) -> Path:
        return self.repository_dir / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.repository_dir / "targets"

    def key_file(self, key_role: str) -> Path:
        return self.keys_dir / f"{key_role}.pem"

    def next_key_file(self, key_role: str) -> Path:
        """Where a rotation writes the new key before root.json names it."""
        return self.keys_dir / f"{key_role}.next.pem"

    def metadata_file(self, role: str) -> Path:
        return self.metadata_dir / f"{role}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialize writers (a release being created, a timestamp refresh, a rotation)."""
        with file_lock(self.data / ".lock"):
            yield

    def require(self) -> None:
        """Raise ConfigError unless keys and metadata exist here."""
        if not self.metadata_file("root").is_file() or not self.key_file("root").is_file():
            raise ConfigError(
                f"{self.data} holds no release keys; run `fogline keys init --data {self.data}` first"
            )


def generate_signer() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


def write_key(path: Path, signer: CryptoSigner) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, signer.private_bytes, mode=0o600)


def load_signer(path: Path) -> CryptoSigner:
    """An Ed25519 signer from a PEM (PKCS#8) private key file."""
    try:
        private_key = load_pem_private_key(path.read_bytes(), password=None)
        return CryptoSigner(private_key)
    except FileNotFoundError:
        raise ConfigError(f"key file {path} does not exist") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc


def read_metadata(path: Path, kind: type[S]) -> Metadata[S]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; is this a fogline controller folder?") from None
    except Exception as exc:  # python-tuf raises DeserializationError and ValueError
        raise ConfigError(f"{path} is not valid TUF metadata: {exc}") from exc
    if not isinstance(md.signed, kind):
        raise ConfigError(f"{path} holds {md.signed.type} metadata, expected {kind.type}")
    return md


class MetadataStore:
    """Read, sign and write the top-level metadata of one repository; call under ``locked()``."""

    def __init__(self, layout: RepositoryLayout) -> None:
        self.layout = layout

    def root(self) -> Metadata[Root]:
        return read_metadata(self.layout.metadata_file("root"), Root)

    def targets(self) -> Metadata[Targets]:
        return read_metadata(self.layout.metadata_file("targets"), Targets)

    def snapshot(self) -> Metadata[Snapshot]:
        return read_metadata(self.layout.metadata_file("snapshot"), Snapshot)

    def timestamp(self) -> Metadata[Timestamp]:
        return read_metadata(self.layout.metadata_file("timestamp"), Timestamp)

    def signer(self, key_role: str, root: Root | None = None) -> CryptoSigner:
        """The private key of ``key_role``, checked against what root.json trusts.

        A rotation that was interrupted after root.json named the new key but
        before the key file was renamed is finished here.
        """
        root = root or self.root().signed
        expected = set(root.roles[KEY_ROLES[key_role][0]].keyids)
        current = self.layout.key_file(key_role)
        if current.is_file():
            signer = load_signer(current)
            if signer.public_key.keyid in expected:
                return signer
        pending = self.layout.next_key_file(key_role)
        if pending.is_file():
            signer = load_signer(pending)
            if signer.public_key.keyid in expected:
                pending.replace(current)
                return signer
        raise ConfigError(
            f"{current} is not the {key_role} key that root.json trusts "
            f"(keyid {', '.join(sorted(expected))})"
        )

    def check_key(self, key_role: str, signer: CryptoSigner) -> None:
        expected = self.root().signed.roles[KEY_ROLES[key_role][0]].keyids
        if signer.public_key.keyid not in expected:
            raise ConfigError(
                f"that key (keyid {signer.public_key.keyid[:16]}…) is not this repository's "
                f"{key_role} key; use {self.layout.key_file(key_role)}"
            )

    def write_root(self, md: Metadata[Root]) -> None:
        data = md.to_bytes(_SERIALIZER)
        atomic_write(self.layout.metadata_dir / f"{md.signed.version}.root.json", data)
        atomic_write(self.layout.metadata_file("root"), data)

    def _write(self, md: Metadata[Any]) -> None:
        atomic_write(self.layout.metadata_file(md.signed.type), md.to_bytes(_SERIALIZER))

    @staticmethod
    def _sign(md: Metadata[Any], signer: CryptoSigner) -> None:
        md.signatures.clear()
        md.sign(signer, append=True)

    def publish_targets(self, md: Metadata[Targets], signer: CryptoSigner) -> None:
        """Sign and write a new version of targets.json, then snapshot and timestamp."""
        md.signed.version += 1
        md.signed.expires = utcnow() + EXPIRY["targets"]
        self._sign(md, signer)
        self._write(md)
        self.publish_snapshot()

    def publish_snapshot(self, online: CryptoSigner | None = None) -> None:
        """A new snapshot naming the current targets.json, then a new timestamp."""
        online = online or self.signer("online")
        snapshot = self.snapshot()
        snapshot.signed.meta["targets.json"] = MetaFile(version=self.targets().signed.version)
        snapshot.signed.version += 1
        snapshot.signed.expires = utcnow() + EXPIRY["snapshot"]
        self._sign(snapshot, online)
        self._write(snapshot)
        self.publish_timestamp(online)

    def publish_timestamp(
        self, online: CryptoSigner | None = None, expires: timedelta | None = None
    ) -> None:
        online = online or self.signer("online")
        timestamp = self.timestamp()
        timestamp.signed.snapshot_meta = MetaFile(version=self.snapshot().signed.version)
        timestamp.signed.version += 1
        timestamp.signed.expires = utcnow() + (expires or EXPIRY["timestamp"])
        self._sign(timestamp, online)
        self._write(timestamp)

    def create(self, signers: dict[str, CryptoSigner]) -> None:
        """Write version 1 of every role: an empty repository that trusts ``signers``."""
        now = utcnow()
        root = Root(expires=now + EXPIRY["root"], consistent_snapshot=False)
        for key_role, roles in KEY_ROLES.items():
            for role in roles:
                root.add_key(signers[key_role].public_key, role)
        root_md = Metadata(root)
        self._sign(root_md, signers["root"])
        targets_md = Metadata(Targets(expires=now + EXPIRY["targets"]))
        self._sign(targets_md, signers["targets"])
        snapshot_md = Metadata(Snapshot(expires=now + EXPIRY["snapshot"]))
        self._sign(snapshot_md, signers["online"])
        timestamp_md = Metadata(Timestamp(expires=now + EXPIRY["timestamp"]))
        self._sign(timestamp_md, signers["online"])
        self.layout.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.layout.targets_dir.mkdir(parents=True, exist_ok=True)
        self.write_root(root_md)
        for md in (targets_md, snapshot_md, timestamp_md):
            self._write(md)

    def renew_root(self, root_signer: CryptoSigner) -> Metadata[Root]:
        """Root version N+1 with the same keys and a new expiry, signed by the root key."""
        md = self.root()
        md.signed.version += 1
        md.signed.expires = utcnow() + EXPIRY["root"]
        self._sign(md, root_signer)
        self.write_root(md)
        return md

    def rotate_root_keys(
        self, key_role: str, new: CryptoSigner, old_root: CryptoSigner
    ) -> Metadata[Root]:
        """Write root version N+1 where ``key_role``'s roles trust ``new`` instead.

        Signed by the old root key, and by the new one too when the root key
        itself rotates, so a device that trusts version N verifies N+1.
        """
        md = self.root()
        root = md.signed
        for role in KEY_ROLES[key_role]:
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            root.add_key(new.public_key, role)
        root.version += 1
        root.expires = utcnow() + EXPIRY["root"]
        self._sign(md, old_root)
        if key_role == "root":
            md.sign(new, append=True)
        self.write_root(md)
        return md
