"""A device's own key, and data sealed with it: what makes a copied data folder useless.

One secret per device, 32 random bytes from the operating system, kept as
64 hex digits in a file of mode 0600 (``fogline keys device init``, or
enrolment) or handed over by the environment: ``FOGLINE_DEVICE_KEY`` (the hex
itself), ``FOGLINE_DEVICE_KEY_COMMAND`` (a command that prints it, for a TPM or
a secrets manager) or ``FOGLINE_DEVICE_KEY_FILE``. The device key is never
used directly: :meth:`DeviceKey.derive` gives one sub-key per purpose (HKDF-
SHA256), so the database cipher and the file seal never share a key.

:func:`seal` and :func:`unseal` are AES-256-GCM from ``cryptography`` with a
random 96-bit nonce, a format tag and caller-bound associated data (a file's
name, say), so a sealed file moved into another's place fails to open.
``cryptography`` is imported when a key is first used, so importing this
module stays light.

>>> key = DeviceKey.generate()
>>> blob = seal(b"weights", key, purpose="model", aad=b"model.onnx")
>>> blob.startswith(SEAL_MAGIC), unseal(blob, key, purpose="model", aad=b"model.onnx")
(True, b'weights')
>>> try:
...     unseal(blob, DeviceKey.generate(), purpose="model", aad=b"model.onnx")
... except WrongKey as exc:
...     print(exc)
sealed data did not open: another device key, or the bytes were altered
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from fogline._files import atomic_write
from fogline.errors import ConfigError, KeyUnavailable, WrongKey

#: The first bytes of every sealed blob (format version 1: nonce, then ciphertext and tag).
SEAL_MAGIC = b"FOGSEAL1"
_NONCE = 12
#: The environment variables a key may come from, in the order they are tried.
KEY_ENV = "FOGLINE_DEVICE_KEY"
KEY_COMMAND_ENV = "FOGLINE_DEVICE_KEY_COMMAND"
KEY_FILE_ENV = "FOGLINE_DEVICE_KEY_FILE"
#: The purpose labelled captures exported for fine-tuning are sealed under (``.npz`` bytes).
CAPTURES_PURPOSE = "captures"
_HOW_TO_MAKE = "make one with `fogline keys device init --out FILE`"


@dataclass(frozen=True)
class DeviceKey:
    """A device's 32-byte secret; ``origin`` says where it came from (for messages, never the key)."""

    secret: bytes = field(repr=False)
    origin: str = "memory"

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise KeyUnavailable(f"{self.origin}: a device key is 32 bytes, got {len(self.secret)}")

    @classmethod
    def generate(cls) -> DeviceKey:
        """A fresh key from the operating system's CSPRNG."""
        return cls(secrets.token_bytes(32), "new key")

    @classmethod
    def from_hex(cls, text: str, origin: str) -> DeviceKey:
        """Parse 64 hex digits (surrounding white space is ignored)."""
        text = text.strip()
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            secret = b""
        if len(secret) != 32:
            raise KeyUnavailable(
                f"{origin}: a device key is 64 hex digits, got {len(text)} characters"
            )
        return cls(secret, origin)

    def hex(self) -> str:
        return self.secret.hex()

    def fingerprint(self) -> str:
        """A short public name for the key (first 16 hex digits of a derived value): safe to print."""
        return self.derive("fingerprint")[:8].hex()

    def derive(self, purpose: str, length: int = 32) -> bytes:
        """The sub-key for ``purpose`` (``"store"``, ``"model"``, ...): HKDF-SHA256 of the device key."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        return HKDF(
            algorithm=hashes.SHA256(), length=length, salt=None, info=b"fogline/" + purpose.encode()
        ).derive(self.secret)


def init_device_key(path: Path, *, force: bool = False) -> DeviceKey:
    """Create a new device key file at ``path`` (mode 0600, written atomically); refuse to replace one.

    Replacing a key makes everything sealed with the old one unreadable, so an
    existing file is kept unless ``force``; rotate a store's key with
    ``fogline store rekey`` instead.
    """
    path = Path(path)
    if path.exists() and not force:
        raise ConfigError(
            f"{path}: a device key is already there; keep it (data sealed with it needs it) "
            "or pass --force to replace it"
        )
    key = DeviceKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (key.hex() + "\n").encode(), mode=0o600)
    return DeviceKey(key.secret, str(path))


def read_key_file(path: Path) -> DeviceKey:
    """Read a device key file; refuse one that others can read (as ssh does with private keys)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise KeyUnavailable(f"{path}: no such device key file; {_HOW_TO_MAKE}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyUnavailable(f"{path}: cannot read the device key: {exc}") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise KeyUnavailable(
            f"{path}: the device key is readable by others (mode {oct(stat.S_IMODE(mode))}); "
            f"run `chmod 600 {shlex.quote(str(path))}`"
        )
    return DeviceKey.from_hex(text, str(path))


@dataclass(frozen=True)
class KeySource:
    """Where a key comes from: a file given on the command line, else the environment.

    :meth:`load` tries ``file``, then ``$ENV`` (hex), ``$ENV_COMMAND`` (a
    command printing the hex) and ``$ENV_FILE``, where ``ENV`` is ``env``
    (``FOGLINE_DEVICE_KEY`` for a device; the controller's release key uses
    ``FOGLINE_CONTROLLER_KEY``); :meth:`available` says whether any of them
    is set, without reading it. ``option`` and ``what`` are the command-line
    option and the name the error message gives.
    """

    file: Path | None = None
    environ: Mapping[str, str] | None = None
    env: str = KEY_ENV
    option: str = "--device-key"
    what: str = "device key"

    def _env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def _names(self) -> tuple[str, str, str]:
        return self.env, f"{self.env}_COMMAND", f"{self.env}_FILE"

    def available(self) -> bool:
        env = self._env()
        return self.file is not None or any(env.get(n) for n in self._names())

    def load(self) -> DeviceKey:
        """The key, or :class:`KeyUnavailable` naming every place that was looked at."""
        env = self._env()
        hex_env, command_env, file_env = self._names()
        if self.file is not None:
            return read_key_file(self.file)
        if env.get(hex_env):
            return DeviceKey.from_hex(env[hex_env], f"${hex_env}")
        if env.get(command_env):
            return _from_command(env[command_env], command_env)
        if env.get(file_env):
            return read_key_file(Path(env[file_env]))
        raise KeyUnavailable(
            f"no {self.what}: pass {self.option} FILE or set ${file_env}, ${hex_env} "
            f"or ${command_env}; {_HOW_TO_MAKE}"
        )


def _from_command(command: str, variable: str = KEY_COMMAND_ENV) -> DeviceKey:
    origin = f"${variable} ({command})"
    try:
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        raise KeyUnavailable(f"{origin}: cannot run it: {exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise KeyUnavailable(f"{origin}: exited with status {done.returncode}: {last}")
    return DeviceKey.from_hex(done.stdout, origin)


def seal(data: bytes, key: DeviceKey, *, purpose: str, aad: bytes = b"") -> bytes:
    """``data`` encrypted and authenticated (AES-256-GCM) under ``key``'s sub-key for ``purpose``."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(_NONCE)
    return SEAL_MAGIC + nonce + AESGCM(key.derive(purpose)).encrypt(nonce, data, SEAL_MAGIC + aad)


def unseal(blob: bytes, key: DeviceKey, *, purpose: str, aad: bytes = b"") -> bytes:
    """The plain bytes of a :func:`seal`\\ ed blob; :class:`WrongKey` if key, purpose, aad or bytes differ."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not is_sealed(blob):
        raise WrongKey("not sealed data (no fogline seal header)")
    nonce = blob[len(SEAL_MAGIC) : len(SEAL_MAGIC) + _NONCE]
    body = blob[len(SEAL_MAGIC) + _NONCE :]
    try:
        return AESGCM(key.derive(purpose)).decrypt(nonce, body, SEAL_MAGIC + aad)
    except InvalidTag as exc:
        raise WrongKey(
            "sealed data did not open: another device key, or the bytes were altered"
        ) from exc


def is_sealed(blob: bytes) -> bool:
    """Whether ``blob`` starts like a sealed blob (says nothing about whether it opens)."""
    return blob[: len(SEAL_MAGIC)] == SEAL_MAGIC and len(blob) >= len(SEAL_MAGIC) + _NONCE + 16
