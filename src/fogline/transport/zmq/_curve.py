"""CURVE keys: key pairs written as ZeroMQ certificate files, and who holds which.

A key pair is two files in ZeroMQ's certificate format (what pyzmq's
``zmq.auth`` and CZMQ's ``zcert`` read): ``NAME.key`` holds the public key
(hand it to the peers), ``NAME.key_secret`` both keys (written 0600, keep it
on the device). Keys are Z85 text, 40 characters each.

A socket is a CURVE *server* (:class:`CurveServer`: its secret key and the
public keys of the clients it lets in, enforced by a ZAP authenticator) or
a *client* (:class:`CurveClient`: its own key pair and the server's public
key). Which side binds does not matter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from fogline._files import atomic_write
from fogline.errors import ConfigError

_Z85_KEY_LENGTH = 40


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair as Z85 bytes; ``secret`` is None for a public-only certificate.

    >>> pair = KeyPair.generate()
    >>> len(pair.public), len(pair.secret or b"")
    (40, 40)
    """

    public: bytes
    secret: bytes | None = None

    def __post_init__(self) -> None:
        for what, key in (("public", self.public), ("secret", self.secret)):
            if key is not None and len(key) != _Z85_KEY_LENGTH:
                raise ValueError(f"a CURVE {what} key is 40 Z85 characters, got {len(key)}")

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def load(cls, path: Path, *, secret: bool = False) -> KeyPair:
        """Read a certificate file; ``secret=True`` requires its secret key (``ConfigError``)."""
        try:
            public, secret_key = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a CURVE key file: {exc}") from exc
        if secret and secret_key is None:
            raise ConfigError(
                f"{path}: holds only a public key; give the .key_secret file of the pair"
            )
        try:
            return cls(public, secret_key)
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from exc


def write_keypair(folder: Path, name: str) -> tuple[Path, Path]:
    """A new key pair as ``folder/NAME.key`` (public) and ``NAME.key_secret`` (0600).

    Refuses to overwrite either (``ConfigError``): a replaced secret key locks
    out every peer that trusts the old public one.

    >>> import tempfile, stat
    >>> public, secret = write_keypair(Path(tempfile.mkdtemp()), "camera")
    >>> public.name, secret.name, oct(stat.S_IMODE(secret.stat().st_mode))
    ('camera.key', 'camera.key_secret', '0o600')
    >>> KeyPair.load(secret, secret=True).public == KeyPair.load(public).public
    True
    """
    if not name or any(c in name for c in "/\\\x00") or name.startswith("."):
        raise ConfigError(f"a key name is a plain file name, got {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    public_file, secret_file = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public_file, secret_file):
        if path.exists():
            raise ConfigError(f"{path} exists; remove it first or choose another name")
    pair = KeyPair.generate()
    assert pair.secret is not None
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    atomic_write(secret_file, _certificate(stamp, pair.public, pair.secret), mode=0o600)
    atomic_write(public_file, _certificate(stamp, pair.public, None), mode=0o644)
    return public_file, secret_file


def _certificate(stamp: str, public: bytes, secret: bytes | None) -> bytes:
    kind = "Secret" if secret else "Public"
    lines = [
        f"#   ****  Generated on {stamp} by fogline  ****",
        f"#   ZeroMQ CURVE {kind} Certificate",
        "#   " + ("DO NOT PROVIDE THIS FILE TO OTHER USERS" if secret else "Give it to the peers"),
        "",
        "metadata",
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class CurveServer:
    """The server side: its key pair and the client public keys it accepts (at least one).

    >>> CurveServer(KeyPair.generate(), frozenset())
    Traceback (most recent call last):
    ...
    ValueError: a CURVE server needs at least one allowed client public key
    """

    keys: KeyPair
    allowed: frozenset[bytes]

    def __post_init__(self) -> None:
        if self.keys.secret is None:
            raise ValueError("a CURVE server needs its secret key")
        if not self.allowed:
            raise ValueError("a CURVE server needs at least one allowed client public key")


@dataclass(frozen=True)
class CurveClient:
    """The client side: its key pair and the server's public key.

    >>> CurveClient(KeyPair.generate(), KeyPair.generate().public).server_key[:0]
    b''
    """

    keys: KeyPair
    server_key: bytes

    def __post_init__(self) -> None:
        if self.keys.secret is None:
            raise ValueError("a CURVE client needs its secret key")
        if len(self.server_key) != _Z85_KEY_LENGTH:
            raise ValueError("a CURVE server public key is 40 Z85 characters")


Curve = CurveServer | CurveClient
