"""``fogline keys init|show|rotate``: the controller's release signing keys.

``fogline keys device ...`` (a device's own key) is in :mod:`._keys_device`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import FLEET_MODULES, app, console, needs_extra
from fogline.cli._options import data_option

if TYPE_CHECKING:
    from fogline.security import KeysInfo

keys = typer.Typer(
    help="The controller's release signing keys (TUF, Ed25519); `keys device`: a device's key.",
    no_args_is_help=True,
)
app.add_typer(keys, name="keys")

_DATA = data_option()


def _print(info: KeysInfo) -> None:
    table = Table(
        title=f"release keys in {escape(str(info.data))} (root version {info.root_version})"
    )
    for column in ("role", "key id", "key file", "metadata", "expires"):
        table.add_column(column)
    for role in info.roles:
        table.add_row(
            role.role,
            ", ".join(keyid[:16] + "…" for keyid in role.keyids),
            escape(str(role.key_file)),
            f"v{role.version}",
            role.expires.strftime("%Y-%m-%d %H:%M UTC"),
        )
    console.print(table)
    console.print(
        f"Enrol devices with [bold]{escape(str(info.trust_anchor))}[/] (public; keep keys/ private).",
        highlight=False,
    )


@keys.command("init")
def init(
    data: Path = _DATA,
    force: bool = typer.Option(
        False,
        "--force",
        help="Replace existing keys and repository (enrolled devices will refuse it).",
    ),
) -> None:
    """Generate the root, targets and online keys and an empty signed repository."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import init_keys

    _print(init_keys(data, force=force))


@keys.command("show")
def show(data: Path = _DATA) -> None:
    """Key ids, key files, metadata versions and expiry dates."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import show_keys

    _print(show_keys(data))


@keys.command("rotate")
def rotate(
    data: Path = _DATA,
    role: str = typer.Option(..., "--role", help="targets, online or root."),
) -> None:
    """Replace one key; devices follow through the new root version it signs."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import rotate_key

    _print(rotate_key(data, role))
