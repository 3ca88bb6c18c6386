"""``fogline store rekey``: encrypt a store, change its key, or decrypt it; and the store key option.

Every command that opens a store on disk (``capture``, ``accuracy``, ``store
...``) takes :data:`~fogline.cli._options.DEVICE_KEY` and opens the file with
:func:`~fogline.cli._options.store_key` (both kept in :mod:`._options`, named
here too): an encrypted store with the key from ``--device-key`` or the
environment, a plain one without (``--device-key`` on a plain store is
refused, saying how to encrypt it).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from fogline.cli._app import console
from fogline.cli._options import (
    DEVICE_KEY,
    device_key_option,
    file_option,
    optional_device_key,
    store_key,
)
from fogline.cli._store import store
from fogline.errors import ConfigError


def _default_audit(path: Path) -> Path:
    """A standalone store's audit log: ``audit.jsonl`` beside it."""
    return path.parent / "audit.jsonl"


@store.command("rekey")
def rekey(
    path: Path = typer.Argument(
        ..., help="The database file: a results store, an agent's telemetry.db, a registry.db."
    ),
    device_key: Path | None = device_key_option(
        "The key it is encrypted with now (default: the environment); none for a plain file."
    ),
    new_key: Path | None = file_option(
        "--new-key", "The key file to encrypt it with (make one with `fogline keys device init`)."
    ),
    decrypt: bool = typer.Option(False, "--decrypt", help="Leave it plain (not encrypted)."),
    audit: Path | None = file_option(
        "--audit", "The audit log to record store.rekeyed in (default: beside it)."
    ),
) -> None:
    """Encrypt a plain store, change its key, or decrypt it: a new file replaces it atomically.

    Stop whatever writes it first (its pipeline, agent or controller): a store
    still open in another process is refused.
    """
    from fogline.security import AuditLog, read_key_file
    from fogline.store import rekey as rekey_file

    if (new_key is None) == (not decrypt):
        raise ConfigError("give --new-key FILE to encrypt with, or --decrypt to leave it plain")
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    old = store_key(path, device_key)
    new = None if new_key is None else read_key_file(new_key)
    done = rekey_file(path, old_key=old, new_key=new, audit=AuditLog(audit or _default_audit(path)))
    old_text = "plain" if done.old_fingerprint is None else f"key {done.old_fingerprint}"
    new_text = "plain" if done.new_fingerprint is None else f"key {done.new_fingerprint}"
    console.print(
        f"{escape(str(path))}: {old_text} → {new_text} ({done.size:,} bytes, replaced atomically)",
        highlight=False,
    )
    if done.after == "encrypted":
        console.print(
            f"open it with --device-key {escape(str(new_key))} (or $FOGLINE_DEVICE_KEY_FILE); "
            "keep a copy of that key: without it the store cannot be read",
            highlight=False,
        )


__all__ = ["DEVICE_KEY", "optional_device_key", "rekey", "store_key"]
