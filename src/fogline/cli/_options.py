"""The options many commands share (``--device-key``, ``--audit``, ``--data``) and loading their keys.

One place says what ``--device-key`` means and where a key comes from when
it is not given, so every command that opens an encrypted store or a sealed
model asks for it, and fails without it, the same way. A command passes its
own help text where the option means something particular there.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fogline.errors import KeyUnavailable

if TYPE_CHECKING:
    from fogline.security import DeviceKey

#: Where a device key comes from when ``--device-key`` is not given.
KEY_FROM_ENV = "$FOGLINE_DEVICE_KEY_FILE, $FOGLINE_DEVICE_KEY or $FOGLINE_DEVICE_KEY_COMMAND"


def device_key_option(
    help: str = f"The device key file an encrypted store opens with (default: {KEY_FROM_ENV}).",
) -> Any:
    """``--device-key FILE`` (None: the environment)."""
    return typer.Option(None, "--device-key", help=help)


def file_option(flag: str, help: str) -> Any:
    """An optional file option (``--audit``, ``--public-key``, ``--key``): None when not given."""
    return typer.Option(None, flag, help=help)


def data_option(
    help: str = "The controller's data folder.", default: Any = Path("fleet-data")
) -> Any:
    """``--data FOLDER`` (default ``fleet-data``, the controller's)."""
    return typer.Option(default, "--data", help=help)


#: ``--device-key`` of every command that opens a store on disk.
DEVICE_KEY = device_key_option()


def load_device_key(file: Path | None) -> DeviceKey:
    """The device key from ``file``, else the environment; :class:`KeyUnavailable` saying where
    it looked."""
    from fogline.security import KeySource

    return KeySource(file=file).load()


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
            f"--device-key FILE, or {KEY_FROM_ENV}"
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
