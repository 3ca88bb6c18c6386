"""Envelope encryption of a release: one data key per release, wrapped for each enrolled device.

An encrypted release stores every file as AES-256-GCM ciphertext under a
random 256-bit data key (:func:`encrypt_file`, the file's place in the
release as associated data, so a ciphertext moved to another file or
release does not open). The data key is wrapped for each enrolled device
with HPKE (RFC 9180, base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM — the standard form of an "X25519 sealed box") and the wrapped
keys form a :class:`KeysDocument`, itself a TUF target
(``keys/<name>/<version>.json``). The signed targets cover the ciphertext
and the keys, so a device verifies both before it decrypts anything; a
copied blob is useless without a device's X25519 private key.

>>> from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
>>> device = X25519PrivateKey.generate()
>>> data_key = new_data_key()
>>> keys = KeysDocument.wrap("digits", "1.0", data_key, {"cam-1": public_bytes(device)})
>>> blob = encrypt_file(b"weights", data_key, "digits", "1.0", "model.onnx")
>>> decrypt_file(blob, keys.unwrap("cam-1", device), "digits", "1.0", "model.onnx")
b'weights'
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fogline.errors import ReleaseRefused, WrongKey

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

Suite = Literal["DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"]
#: The HPKE suite data keys are wrapped with, as a key document names it.
SUITE: Suite = "DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM"
#: How files are encrypted under the data key.
FILE_CIPHER = "AES-256-GCM"
_NONCE = 12


def new_data_key() -> bytes:
    """A fresh 256-bit data key from the operating system's CSPRNG."""
    return os.urandom(32)


def public_bytes(private: X25519PrivateKey) -> bytes:
    """The raw 32-byte X25519 public key of ``private`` (what a device sends at enrolment)."""
    from cryptography.hazmat.primitives import serialization

    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def parse_public_key(text: str, where: str = "release key") -> bytes:
    """A base64 X25519 public key as sent at enrolment: 32 raw bytes, or ``ValueError``."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ValueError(f"{where}: an X25519 public key is 32 bytes in base64 (44 characters)")
    return raw


def keys_target_path(name: str, version: str) -> str:
    """``keys/<name>/<version>.json``: the target that holds a release's wrapped data keys."""
    return f"keys/{name}/{version}.json"


def _aad(name: str, version: str, path: str) -> bytes:
    return f"fogline release file\n{name}\n{version}\n{path}".encode()


def _info(name: str, version: str) -> bytes:
    return f"fogline release key\n{name}\n{version}".encode()


def _suite() -> Any:
    from cryptography.hazmat.primitives import hpke

    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def encrypt_file(data: bytes, data_key: bytes, name: str, version: str, path: str) -> bytes:
    """``data`` (file ``path`` of release ``name`` ``version``) under ``data_key``: nonce + ciphertext."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(data_key).encrypt(nonce, data, _aad(name, version, path))


def decrypt_file(blob: bytes, data_key: bytes, name: str, version: str, path: str) -> bytes:
    """The plain bytes of :func:`encrypt_file`'s ``blob``; :class:`WrongKey` if anything differs."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(data_key).decrypt(blob[:_NONCE], blob[_NONCE:], _aad(name, version, path))
    except (InvalidTag, ValueError) as exc:
        raise WrongKey(
            f"file {path} of release {name} {version} did not decrypt: another data key, "
            "or the bytes were altered"
        ) from exc


class KeysDocument(BaseModel):
    """The wrapped data keys of one encrypted release: ``keys[device id]`` is base64 HPKE output."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    version: str
    suite: Suite = SUITE
    keys: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def wrap(
        cls, name: str, version: str, data_key: bytes, recipients: Mapping[str, bytes]
    ) -> KeysDocument:
        """``data_key`` wrapped for each device id → raw X25519 public key in ``recipients``."""
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        suite = _suite()
        info = _info(name, version)
        keys = {}
        for device_id, public in sorted(recipients.items()):
            wrapped = suite.encrypt(data_key, X25519PublicKey.from_public_bytes(public), info)
            keys[device_id] = base64.b64encode(wrapped).decode()
        return cls(name=name, version=version, keys=keys)

    def unwrap(self, device_id: str, private: X25519PrivateKey) -> bytes:
        """The data key, for ``device_id`` holding ``private``.

        :class:`ReleaseRefused` when the document holds no key for the device
        (revoked, or enrolled after the release and not re-wrapped yet);
        :class:`WrongKey` when the key it holds does not open.
        """
        from cryptography.exceptions import InvalidTag

        wrapped = self.keys.get(device_id)
        if wrapped is None:
            raise ReleaseRefused(
                f"release {self.name} {self.version} is encrypted and holds no key for device "
                f"{device_id!r} (revoked, or enrolled after it was published and not re-wrapped "
                "yet: the controller re-wraps when it has the targets key)"
            )
        try:
            return bytes(
                _suite().decrypt(base64.b64decode(wrapped), private, _info(self.name, self.version))
            )
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise WrongKey(
                f"release {self.name} {self.version}: the data key wrapped for {device_id!r} "
                "does not open with this device's release key (enrolled again since?)"
            ) from exc

    def body(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()
