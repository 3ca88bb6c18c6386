"""``fogline store rekey``: encrypt a store, change its key, or decrypt it; and the store key option.

Every command that opens a store on disk (``capture``, ``accuracy``, ``store
...``) takes :data:`DEVICE_KEY` and opens the file with :func:`store_key`: an
encrypted store with the key from ``--device-key`` or the environment, a plain
one without (``--device-key`` on a plain store is refused, saying how to
encrypt it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from fogline.cli._app import console
from fogline.cli._store import store
from fogline.errors import ConfigError, KeyUnavailable

if TYPE_CHECKING:
    from fogline.security import DeviceKey

DEVICE_KEY = typer.Option(
    None,
    "--device-key",
    help="The device key file an encrypted store opens with "
    "(default: $FOGLINE_DEVICE_KEY_FILE, $FOGLINE_DEVICE_KEY or $FOGLINE_DEVICE_KEY_COMMAND).",
)


def store_key(path: Path, device_key: Path | None) -> DeviceKey | None:
    """The key to open the store at ``path`` with: ``None`` for a plain store given no key file."""
    from fogline.security import KeySource
    from fogline.store import is_encrypted

    if device_key is None and not is_encrypted(path):
        return None
    keys = KeySource(file=device_key)
    if not keys.available():
        raise KeyUnavailable(
            f"{path}: the store is encrypted; pass the device key it was encrypted with: "
            "--device-key FILE, or $FOGLINE_DEVICE_KEY_FILE, $FOGLINE_DEVICE_KEY or "
            "$FOGLINE_DEVICE_KEY_COMMAND"
        )
    try:
        return keys.load()
    except KeyUnavailable as exc:
        raise KeyUnavailable(f"{path}: the store is encrypted; {exc}") from exc


def optional_device_key() -> DeviceKey | None:
    """The device key from the environment when one is set there, else None (one set but
    unreadable is an error: it was meant to be used)."""
    from fogline.security import KeySource

    keys = KeySource()
    return keys.load() if keys.available() else None


def _default_audit(path: Path) -> Path:
    """A standalone store's audit log: ``audit.jsonl`` beside it."""
    return path.parent / "audit.jsonl"


@store.command("rekey")
def rekey(
    path: Path = typer.Argument(
        ..., help="The database file: a results store, an agent's telemetry.db, a registry.db."
    ),
    device_key: Path | None = typer.Option(
        None,
        "--device-key",
        help="The key it is encrypted with now (default: the environment); none for a plain file.",
    ),
    new_key: Path | None = typer.Option(
        None,
        "--new-key",
        help="The key file to encrypt it with (make one with `fogline keys device init`).",
    ),
    decrypt: bool = typer.Option(False, "--decrypt", help="Leave it plain (not encrypted)."),
    audit: Path | None = typer.Option(
        None, "--audit", help="The audit log to record store.rekeyed in (default: beside it)."
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
