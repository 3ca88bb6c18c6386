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

import re
import time
from dataclasses import dataclass
from pathlib import Path

from fogline._files import atomic_write, keep_private
from fogline.errors import ConfigError

_Z85_KEY_LENGTH = 40
_KEY_LINE = re.compile(rb"""^\s*(public|secret)-key\s*=\s*["']?([^"'\s]*)["']?\s*$""")


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
        import zmq  # the zmq extra; reading key files does not need it

        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    @classmethod
    def load(cls, path: Path, *, secret: bool = False) -> KeyPair:
        """Read a certificate file; ``secret=True`` requires its secret key (``ConfigError``)."""
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the key file: {exc.strerror}") from exc
        keys: dict[bytes, bytes] = {}
        for line in text.splitlines():
            match = _KEY_LINE.match(line)
            if match and not line.lstrip().startswith(b"#"):
                keys.setdefault(match.group(1), match.group(2))
        public, secret_key = keys.get(b"public"), keys.get(b"secret")
        if public is None:
            raise ConfigError(f"{path}: not a CURVE key file (no public-key line)")
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

    A new ``folder`` is made private (0700, ignored by git: it holds secrets).

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
    keep_private(folder)
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
