"""Change the key of a database file: encrypt a plain one, rotate its key, or decrypt it.

SQLCipher's ``sqlcipher_export`` copies the whole database (schema, rows,
``user_version``) into a new file attached with the new key; the copy is
checked, fsynced and renamed over the original (:func:`fogline._files.atomic_output`),
so a crash at any moment leaves the old file or the new one, never neither
and never a mix. The old file's WAL is checkpointed into it first, and the
new file is put in WAL mode before it takes the old one's place.

The file must not be open anywhere while it is rekeyed (the pipeline, agent
or controller that writes it): that process would go on writing to the old
file after the rename, and its rows would be lost. The rekey holds the
file's open lock (``FILE.lock``, :mod:`._open_lock`) exclusive from its
first check until the new file is in place: a fogline connection open on it
makes the rekey refuse, and one opened meanwhile waits for it and then opens
the new file. For other programs (``sqlite3`` on the command line), SQLite's
read lock on the ``-shm`` file of a WAL database is checked too. Copies a
crash left behind (``.tmp-NAME.*``) are removed by the next rekey of the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fogline._files import TEMP_PREFIX, atomic_output
from fogline.errors import ConfigError, StoreError
from fogline.store._driver import connect, database_errors, file_kind, raw_key
from fogline.store._open_lock import hold_exclusive

if TYPE_CHECKING:
    from fogline.security import AuditLog, DeviceKey

#: The byte of the ``-shm`` file every SQLite connection in WAL mode holds a read lock on
#: (the unix VFS's "dead man switch", after the 120-byte header and 8 lock bytes).
_SHM_IN_USE_BYTE = 128


@dataclass(frozen=True)
class Rekeyed:
    """What :func:`rekey` did: ``before`` and ``after`` are ``"plain"`` or ``"encrypted"``."""

    path: Path
    before: str
    after: str
    old_fingerprint: str | None
    new_fingerprint: str | None
    size: int


def rekey(
    path: str | Path,
    *,
    old_key: DeviceKey | None,
    new_key: DeviceKey | None,
    audit: AuditLog | None = None,
) -> Rekeyed:
    """Re-encrypt the database at ``path`` from ``old_key`` to ``new_key`` (``None``: plain).

    A plain file with a ``new_key`` is encrypted; an encrypted one with
    ``new_key=None`` is decrypted. With ``audit``, a ``store.rekeyed`` event
    (the file and both key fingerprints, never a key) is recorded once the
    new file is in place.
    """
    path = Path(path)
    kind = file_kind(path)
    if kind == "new":
        raise StoreError(f"{path}: no such database")
    if kind == "plain" and old_key is not None:
        raise ConfigError(f"{path}: the file is not encrypted; give no old key to encrypt it")
    if kind == "plain" and new_key is None:
        raise ConfigError(f"{path}: the file is already plain; give a new key to encrypt it")
    with hold_exclusive(path):
        _replace(path, kind, old_key, new_key)
    done = Rekeyed(
        path,
        "plain" if kind == "plain" else "encrypted",
        "plain" if new_key is None else "encrypted",
        None if old_key is None else old_key.fingerprint(),
        None if new_key is None else new_key.fingerprint(),
        path.stat().st_size,
    )
    if audit is not None:
        audit.record(
            "store.rekeyed",
            path=str(path),
            before=done.before,
            after=done.after,
            old_key=done.old_fingerprint,
            new_key=done.new_fingerprint,
        )
    return done


def _replace(path: Path, kind: str, old_key: DeviceKey | None, new_key: DeviceKey | None) -> None:
    """Write the rekeyed copy and rename it over ``path``; under the exclusive open lock."""
    if _in_use(path):
        raise StoreError(
            f"{path}: open in another process (a pipeline, agent or controller?); "
            "stop it, then rekey"
        )
    for leftover in path.parent.glob(f"{TEMP_PREFIX}{path.name}.*"):
        leftover.unlink(missing_ok=True)  # a copy an earlier, interrupted rekey left behind
    mode = stat.S_IMODE(path.stat().st_mode)
    source = connect(path, key=old_key, what="database", cipher=True)
    try:
        with atomic_output(path, mode=mode) as copy:
            try:
                _export(source, copy, new_key)
            finally:
                source.close()  # the last connection: its WAL is checkpointed and removed
            _finish(copy, new_key)
            wal = Path(f"{path}-wal")
            if wal.exists() and wal.stat().st_size:
                raise StoreError(f"{path}: written to while it was rekeyed; nothing was changed")
    except database_errors() as exc:
        raise StoreError(f"{path}: cannot rekey: {exc}") from exc
    finally:
        source.close()


def _export(source: sqlite3.Connection, copy: Path, new_key: DeviceKey | None) -> None:
    """Copy everything from ``source`` (through SQLCipher) into a new file at ``copy``."""
    execute = source.execute
    (version,) = execute("PRAGMA user_version").fetchone()
    execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every commit into the main file first
    execute(
        "ATTACH DATABASE ? AS rekeyed KEY ?",
        (str(copy), "" if new_key is None else raw_key(new_key)),
    )
    try:
        execute("SELECT sqlcipher_export('rekeyed')")
        execute(f"PRAGMA rekeyed.user_version = {int(version)}")
    finally:
        execute("DETACH DATABASE rekeyed")


def _finish(copy: Path, new_key: DeviceKey | None) -> None:
    """Check the copy opens with the new key and is sound, and leave it in WAL mode."""
    conn = connect(copy, key=new_key, what="copy")
    with contextlib.closing(conn):
        (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
        (check,) = conn.execute("PRAGMA quick_check").fetchone()
    if str(mode).lower() != "wal" or check != "ok":
        raise StoreError(f"{copy}: the rekeyed copy is not sound ({check}, journal {mode})")


def _in_use(path: Path) -> bool:
    """Whether another process has the WAL database at ``path`` open (SQLite's ``-shm`` lock)."""
    try:
        fd = os.open(f"{path}-shm", os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, but not ours to lock: assume someone is using it
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_IN_USE_BYTE, os.SEEK_SET)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_IN_USE_BYTE, os.SEEK_SET)
        return False
    finally:
        os.close(fd)  # no connection of this process is open on it: no lock of ours is lost
