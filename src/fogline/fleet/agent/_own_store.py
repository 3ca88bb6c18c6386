"""The SQLite files the agent opens itself, encrypted with the device key when asked or already.

``telemetry.db`` is the agent's own store (its outbox of telemetry); with
``AgentConfig.encrypt_store`` it is kept encrypted with the device key
(``DEV/keys/device.key``): a new one is made encrypted, a plain one from
before is encrypted in place at start (:func:`fogline.store.rekey`, recorded
as ``store.rekeyed``; nothing else opens it). A file that is encrypted is
opened with the key whatever the setting, and so is a pipeline's store the
agent reads (the fine-tune offer's captures): the pipelines it runs get the
same key through ``$FOGLINE_DEVICE_KEY_FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fogline.security import AuditLog, DeviceKey
from fogline.store import ResultStore, is_encrypted, rekey


def key_for(path: Path, key: DeviceKey | None) -> DeviceKey | None:
    """``key`` if the database at ``path`` is encrypted, else ``None`` (a plain file)."""
    return key if key is not None and is_encrypted(path) else None


def open_own_store(
    path: Path, *, key: DeviceKey, encrypt: bool, audit: AuditLog, **options: Any
) -> ResultStore:
    """The agent's own store at ``path`` (see the module), encrypted when ``encrypt``."""
    path = Path(path)
    if encrypt and path.is_file() and path.stat().st_size and not is_encrypted(path):
        rekey(path, old_key=None, new_key=key, audit=audit)
    return ResultStore(path, key=key if encrypt or is_encrypted(path) else None, **options)
