"""``fogline keys device init|show``: a device's own key, which encrypts its stores at rest.

The key is 32 random bytes kept as hex in a file of mode 0600 (or handed over
by ``$FOGLINE_DEVICE_KEY`` / ``$FOGLINE_DEVICE_KEY_COMMAND``). Nothing here
ever prints it: ``show`` prints its fingerprint and where it came from.
Creating one is recorded as ``key.created`` in the audit log.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import console
from fogline.cli._keys import keys
from fogline.cli._options import device_key_option, file_option, load_device_key

device = typer.Typer(
    help="A device's own key: encrypts its stores (store.encrypt, fogline store rekey).",
    no_args_is_help=True,
)
keys.add_typer(device, name="device")


def default_audit(key_file: Path) -> Path:
    """Where ``key.created`` is recorded: the device folder's ``audit.jsonl`` for
    ``DEV/keys/device.key`` (the agent's layout), else ``audit.jsonl`` beside the key.

    >>> default_audit(Path("dev/keys/device.key")), default_audit(Path("site/device.key"))
    (PosixPath('dev/audit.jsonl'), PosixPath('site/audit.jsonl'))
    """
    folder = key_file.parent
    return (folder.parent if folder.name == "keys" else folder) / "audit.jsonl"


@device.command("init")
def init(
    out: Path | None = typer.Option(
        None,
        "--out",
        help="The key file to write (default: $FOGLINE_DEVICE_KEY_FILE, else ./device.key).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing key (what it encrypted can no longer be read)."
    ),
    audit: Path | None = file_option(
        "--audit", "The audit log for key.created (default: see the docs)."
    ),
) -> None:
    """Make a new device key file (mode 0600) and print its fingerprint, never the key."""
    from fogline.security import KEY_FILE_ENV, AuditLog, init_device_key

    path = out or Path(os.environ.get(KEY_FILE_ENV) or "device.key")
    key = init_device_key(path, force=force)
    log = audit or default_audit(path)
    AuditLog(log).record(
        "key.created", kind="device", fingerprint=key.fingerprint(), file=str(path)
    )
    console.print(
        f"device key {key.fingerprint()} written to {escape(str(path))} (mode 0600)\n"
        f"use it: --device-key {escape(str(path))}, or export {KEY_FILE_ENV}={escape(str(path))}\n"
        "keep a copy somewhere safe: what it encrypts cannot be read without it",
        highlight=False,
    )


@device.command("show")
def show(
    device_key: Path | None = device_key_option("The key file (default: the environment)."),
) -> None:
    """Which device key is in use, where it comes from, and its fingerprint (never the key)."""
    key = load_device_key(device_key)
    table = Table(title="device key", title_justify="left", show_header=False)
    table.add_column()
    table.add_column()
    table.add_row("fingerprint", key.fingerprint())
    table.add_row("from", escape(key.origin))
    file = Path(key.origin)  # the file's path when it came from one
    if file.is_file():
        table.add_row("file mode", oct(stat.S_IMODE(file.stat().st_mode)))
    console.print(table, highlight=False)
