"""A device's own keys: the device key that seals what it keeps, the X25519 key releases are wrapped for.

Under the device data folder ``DEV``::

    DEV/keys/device.key    the device key: 64 hex digits, mode 0600 (made at first start)
    DEV/keys/release.key   the X25519 private key, sealed with the device key

The device key seals the release files the agent keeps (models are never
on disk in the clear) and the X25519 key; the X25519 public key goes to the
controller at enrolment, which wraps each encrypted release's data key for
it. A device without ``device.key`` gets one on first start; one whose
``release.key`` no longer opens (the device key was replaced) gets a new pair,
and must be enrolled again to read encrypted releases.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fogline._files import atomic_write
from fogline.errors import WrongKey
from fogline.security import (
    DeviceKey,
    init_device_key,
    is_sealed,
    public_bytes,
    read_key_file,
    seal,
    unseal,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

#: Where the device key is, relative to the data folder (``$FOGLINE_DEVICE_KEY_FILE`` of children).
DEVICE_KEY = Path("keys") / "device.key"
#: Where the sealed X25519 private key is.
RELEASE_KEY = Path("keys") / "release.key"
_PURPOSE = "release-key"


def device_key(data: Path) -> DeviceKey:
    """The device key in ``data/keys/device.key``, created (0600) when there is none."""
    path = Path(data) / DEVICE_KEY
    if not path.exists():
        return init_device_key(path)
    return read_key_file(path)


@dataclass(frozen=True)
class Keyring:
    """What a device decrypts with: its device key and its X25519 release key."""

    device_key: DeviceKey
    release_key: X25519PrivateKey = field(repr=False)

    @classmethod
    def load(cls, data: Path) -> Keyring:
        """The keys of the device folder ``data``; what is missing is made (see the module)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        key = device_key(data)
        path = Path(data) / RELEASE_KEY
        blob = path.read_bytes() if path.is_file() else b""
        if is_sealed(blob):
            try:
                raw = unseal(blob, key, purpose=_PURPOSE, aad=b"x25519")
                return cls(key, X25519PrivateKey.from_private_bytes(raw))
            except (WrongKey, ValueError):
                pass  # made under another device key: a new pair (see the module)
        private = X25519PrivateKey.generate()
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        atomic_write(path, seal(raw, key, purpose=_PURPOSE, aad=b"x25519"), mode=0o600)
        return cls(key, private)

    def public_key(self) -> str:
        """The X25519 public key in base64, as the enrol request carries it."""
        return base64.b64encode(public_bytes(self.release_key)).decode()


def enrol_fields(data: Path) -> dict[str, str]:
    """What the enrol request adds for encrypted releases: ``{"release_key": base64}``."""
    return {"release_key": Keyring.load(data).public_key()}
