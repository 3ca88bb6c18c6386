"""The controller's signing keys: create them, show them, rotate them.

Three Ed25519 keys (see :mod:`._metadata` for which role each signs). A
device is enrolled with ``repository/metadata/root.json`` (the public half);
from then on it follows rotations by itself, because each new root version
is signed by the root key of the version before it.

>>> import tempfile, pathlib
>>> data = pathlib.Path(tempfile.mkdtemp())
>>> info = init_keys(data)
>>> info.root_version, [role.role for role in info.roles]
(1, ['root', 'targets', 'snapshot', 'timestamp'])
>>> rotate_key(data, "targets").root_version
2
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tuf.api.metadata import Signed  # type: ignore[attr-defined]

from fogline._files import keep_private
from fogline.errors import ConfigError
from fogline.security._audit import AuditLog
from fogline.security._metadata import (
    KEY_ROLES,
    MetadataStore,
    RepositoryLayout,
    generate_signer,
    write_key,
)


@dataclass(frozen=True)
class RoleInfo:
    """One TUF role: the key that signs it, where that key is, and when its metadata expires."""

    role: str
    keyids: tuple[str, ...]
    key_file: Path
    version: int
    expires: datetime


@dataclass(frozen=True)
class KeysInfo:
    """What ``fogline keys show`` prints."""

    data: Path
    root_version: int
    roles: tuple[RoleInfo, ...]

    @property
    def trust_anchor(self) -> Path:
        """The file a device is enrolled with."""
        return RepositoryLayout(self.data).metadata_file("root")


def init_keys(data: Path, *, force: bool = False) -> KeysInfo:
    """Generate the three keys and an empty signed repository in ``data``.

    Refuses when keys exist unless ``force``: new keys mean devices enrolled
    with the old root.json no longer trust this repository, so ``force`` also
    removes the old repository (its releases must be created again).
    """
    layout = RepositoryLayout(Path(data))
    existing = [layout.key_file(k) for k in KEY_ROLES if layout.key_file(k).exists()]
    if (layout.metadata_dir.exists() or existing) and not force:
        raise ConfigError(
            f"{layout.data} already has release keys or a repository; --force replaces them "
            "(devices enrolled with the old root.json will then refuse its releases)"
        )
    # The folder holds the private keys: 0700 and ignored by git, like the key folder in it.
    keep_private(layout.data)
    keep_private(layout.keys_dir)
    os.chmod(layout.keys_dir, 0o700)  # an existing key folder too (write_key makes keys 0600)
    with layout.locked():
        if force:
            shutil.rmtree(layout.repository_dir, ignore_errors=True)
        signers = {key_role: generate_signer() for key_role in KEY_ROLES}
        for key_role, signer in signers.items():
            write_key(layout.key_file(key_role), signer)
        MetadataStore(layout).create(signers)
    info = show_keys(data)
    audit = AuditLog(layout.data / "audit.jsonl")
    for made in info.roles:
        audit.record("key.created", role=made.role, keyids=list(made.keyids), force=force)
    return info


def show_keys(data: Path) -> KeysInfo:
    """Key ids, key files, metadata versions and expiry dates of a repository."""
    layout = RepositoryLayout(Path(data))
    layout.require()
    store = MetadataStore(layout)
    root = store.root().signed
    versions = {
        "root": (root.version, root.expires),
        "targets": _version(store.targets().signed),
        "snapshot": _version(store.snapshot().signed),
        "timestamp": _version(store.timestamp().signed),
    }
    key_role_of = {role: k for k, roles in KEY_ROLES.items() for role in roles}
    roles = tuple(
        RoleInfo(
            role=role,
            keyids=tuple(root.roles[role].keyids),
            key_file=layout.key_file(key_role_of[role]),
            version=versions[role][0],
            expires=versions[role][1],
        )
        for role in ("root", "targets", "snapshot", "timestamp")
    )
    return KeysInfo(layout.data, root.version, roles)


def _version(signed: Signed) -> tuple[int, datetime]:
    return signed.version, signed.expires


def rotate_key(data: Path, role: str) -> KeysInfo:
    """Replace the key of ``role`` (``targets``, ``online`` or ``root``) with a new one.

    Writes root version N+1 naming the new key (signed by the old root key,
    and also by the new one for a root rotation), re-signs what the new key
    signs, then replaces the key file. Devices chain from the root they have
    to the new one at their next refresh.
    """
    if role not in KEY_ROLES:
        raise ConfigError(f"--role must be one of {', '.join(KEY_ROLES)}; got {role!r}")
    layout = RepositoryLayout(Path(data))
    layout.require()
    with layout.locked():
        store = MetadataStore(layout)
        old_root = store.signer("root")
        new = generate_signer()
        write_key(layout.next_key_file(role), new)  # found again if we stop half-way
        store.rotate_root_keys(role, new, old_root)
        if role == "targets":
            store.publish_targets(store.targets(), new)
        elif role == "online":
            store.publish_snapshot(new)
        layout.next_key_file(role).replace(layout.key_file(role))
    info = show_keys(data)
    keyids = sorted(
        {k for r in info.roles if r.key_file == layout.key_file(role) for k in r.keyids}
    )
    AuditLog(layout.data / "audit.jsonl").record(
        "key.rotated", role=role, keyids=keyids, root_version=info.root_version
    )
    return info
