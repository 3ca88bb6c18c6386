"""Signed checkpoints of an audit log: "the log up to ``seq`` ends in ``hash``", signed with Ed25519.

The hash chain alone shows an edited, deleted or re-ordered line, but not a
log cut short at the end, nor one rewritten from some line on with a fresh
chain. A :class:`Checkpoint` closes both: it is signed with a key the log
cannot re-sign without, and it leaves the device (with the agent's
telemetry) for the controller to keep. A log that ends before the last
checkpoint someone holds, or whose line ``seq`` has another hash, was cut
or rewritten.

The signing key (:class:`AuditSigner`) is an Ed25519 key from
``cryptography``, kept in a PEM file (PKCS#8, mode 0600) created on first
use; its public half is written beside it (``.pub``), and is what a verifier
needs. :func:`key_fingerprint` names a key in what is printed.

>>> import pathlib, tempfile
>>> signer = AuditSigner(pathlib.Path(tempfile.mkdtemp()) / "audit.key")
>>> point = signer.sign(7, "ab" * 32)
>>> point.verify(signer.public_key())
>>> point.seq, point.key == public_hex(signer.public_key())
(7, True)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fogline._files import atomic_write
from fogline.errors import ConfigError, KeyUnavailable

log = logging.getLogger(__name__)

#: What a checkpoint's signature covers begins with this, so it signs nothing else by mistake.
CONTEXT = b"fogline-audit-checkpoint-v1\n"

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw

#: Where an agent keeps a copy of the newest checkpoint it sent, relative to its data folder
#: (beside ``audit.jsonl``): a log later cut after it is found on the device too.
SENT_CHECKPOINT = Path("agent") / "audit-sent.json"


def public_hex(key: Ed25519PublicKey) -> str:
    """The 32 raw bytes of a public key, as hex (what a checkpoint carries)."""
    return key.public_bytes(*_RAW).hex()


def key_fingerprint(key: Ed25519PublicKey | str) -> str:
    """A short, printable name for a public key: ``ed25519:`` and 16 hex digits of its SHA-256.

    >>> key_fingerprint("00" * 32)
    'ed25519:66687aadf862bd77'
    """
    raw = bytes.fromhex(key) if isinstance(key, str) else key.public_bytes(*_RAW)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _message(seq: int, head: str, when: float) -> bytes:
    body = {"hash": head, "seq": seq, "time": when}
    return CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Checkpoint:
    """The signed statement "the log's line ``seq`` has hash ``hash``" (made at ``time``).

    ``key`` is the signer's public key (hex) and ``signature`` the Ed25519
    signature (hex). Whoever verifies must trust ``key`` by other means (the
    ``.pub`` file, the controller's record of the device): a checkpoint
    proves who signed it, not that its signer may.
    """

    seq: int
    hash: str
    time: float
    key: str
    signature: str

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "checkpoint") -> Checkpoint:
        """A checkpoint from its JSON form; :class:`ConfigError` naming what is wrong."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: not a checkpoint (a JSON object with seq, hash, ...)")
        try:
            point = cls(
                seq=int(data["seq"]),
                hash=str(data["hash"]),
                time=float(data["time"]),
                key=str(data["key"]),
                signature=str(data["signature"]),
            )
        except KeyError as exc:
            raise ConfigError(f"{where}: no {exc.args[0]!r} in the checkpoint") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return point

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def signer(self) -> str:
        """The fingerprint of the key that signed it."""
        try:
            return key_fingerprint(self.key)
        except ValueError:
            return "(not a key)"

    def verify(self, trusted: Ed25519PublicKey | None = None) -> None:
        """Check the signature; :class:`ConfigError` says why it does not hold.

        With ``trusted`` the checkpoint must also be signed by that key, not
        merely by the key it names itself.
        """
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(self.key))
            signature = bytes.fromhex(self.signature)
        except ValueError as exc:
            raise ConfigError(f"the checkpoint's key or signature is not hex: {exc}") from None
        if trusted is not None and public_hex(trusted) != self.key:
            raise ConfigError(
                f"signed by {self.signer}, not by the trusted key {key_fingerprint(trusted)}"
            )
        try:
            key.verify(signature, _message(self.seq, self.hash, self.time))
        except InvalidSignature:
            raise ConfigError(
                f"the signature by {self.signer} does not match seq {self.seq} and its hash "
                "(forged, or the checkpoint was edited)"
            ) from None


class AuditSigner:
    """The Ed25519 key that signs a log's checkpoints, in a PEM file made (0600) on first use."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = Path(key_file)
        self._key: Ed25519PrivateKey | None = None

    @property
    def public_file(self) -> Path:
        """Where the public half is written: the key file's name with ``.pub``."""
        return self.key_file.with_suffix(".pub")

    def private_key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self._key = self._load_or_create()
        return self._key

    def public_key(self) -> Ed25519PublicKey:
        return self.private_key().public_key()

    def sign(self, seq: int, head: str, when: float | None = None) -> Checkpoint:
        """A checkpoint saying line ``seq`` of the log has hash ``head``."""
        when = round(time.time(), 6) if when is None else when
        key = self.private_key()
        signature = key.sign(_message(seq, head, when))
        return Checkpoint(seq, head, when, public_hex(key.public_key()), signature.hex())

    def _load_or_create(self) -> Ed25519PrivateKey:
        try:
            data = self.key_file.read_bytes()
        except FileNotFoundError:
            return self._create()
        except OSError as exc:
            raise KeyUnavailable(f"{self.key_file}: cannot read the audit key: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise KeyUnavailable(
                f"{self.key_file}: not an audit key (a PEM Ed25519 private key): {exc}"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyUnavailable(f"{self.key_file}: an audit key must be Ed25519")
        return key

    def _create(self) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self.key_file.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: two processes starting at once keep one key, not one each
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._load_or_create()
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_file.write_bytes(public)
        return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A verifier's trusted key: a PEM public key, a PEM private key (its public half), or hex."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyUnavailable(f"{path}: cannot read the public key: {exc.strerror or exc}") from exc
    text = data.strip()
    try:
        if text.startswith(b"-----BEGIN PUBLIC KEY"):
            key: Any = serialization.load_pem_public_key(text)
        elif text.startswith(b"-----BEGIN PRIVATE KEY"):
            key = serialization.load_pem_private_key(text, password=None).public_key()
        else:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(text.decode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyUnavailable(
            f"{path}: not an Ed25519 public key (PEM, or 64 hex digits): {exc}"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyUnavailable(f"{path}: the audit key must be Ed25519")
    return key


def read_checkpoint(path: Path, *, where: str | None = None) -> Checkpoint:
    """The checkpoint kept (as JSON) in ``path``; :class:`ConfigError` naming what is wrong."""
    where = str(path) if where is None else where
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read the checkpoint: {exc}") from None
    return Checkpoint.from_dict(data, where=where)


def keep_sent_checkpoint(path: Path, point: Checkpoint) -> bool:
    """Keep ``point`` in ``path`` (0600, atomically) as the newest one sent; whether it was kept.

    One behind the kept one (the log went back: cut, or rewritten) or of the
    same seq with another hash is not written over it: the kept one is the
    evidence ``fogline audit verify`` shows the cut with.
    """
    try:
        kept: Checkpoint | None = read_checkpoint(path)
    except ConfigError:
        kept = None  # none yet, or unreadable: the new one replaces it
    if kept == point:
        return True
    if kept is not None and kept.seq >= point.seq:
        log.warning(
            "%s: the audit log's checkpoint went back (seq %d, sent before: seq %d); "
            "the copy is kept: run `fogline audit verify` on the log",
            path,
            point.seq,
            kept.seq,
        )
        return False
    text = json.dumps(point.as_dict(), sort_keys=True, separators=(",", ":")) + "\n"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(path), text.encode(), mode=0o600)
    return True
