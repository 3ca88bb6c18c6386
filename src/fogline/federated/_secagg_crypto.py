"""The cryptographic primitives of secure aggregation, all from well-kept libraries.

- key agreement: X25519 (``cryptography``), the shared secret stretched by
  HKDF-SHA256 with a label and the round id, so one agreement gives
  independent keys for share encryption and for masks;
- the mask generator: the ChaCha20 keystream (``cryptography``) under a
  32-byte seed, read as little-endian 64-bit words reduced modulo
  ``2**bits`` (a power of two divides ``2**64``, so the result is uniform);
- share sealing: ChaCha20-Poly1305 with a random nonce, the sender, the
  recipient and the round bound in as associated data;
- secret sharing: Shamir over GF(2**128) from pycryptodome, which takes
  16-byte secrets, so a 32-byte secret is shared as two blocks at the same
  share indices.

Nothing here draws randomness itself except through ``os.urandom`` (via
``cryptography`` and pycryptodome's ``Crypto.Random``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fogline.errors import ConfigError, ItemError

__all__ = [
    "SEED_BYTES",
    "combine_secret",
    "derive_key",
    "mask_vector",
    "open_shares",
    "seal_shares",
    "split_secret",
]

#: every seed and key is 32 bytes (256 bits): never a 32-bit seed
SEED_BYTES = 32
_NONCE_BYTES = 12
_BLOCK = 16


def derive_key(private: X25519PrivateKey, public: bytes, *, label: bytes, round_id: str) -> bytes:
    """A 32-byte key shared by the owners of ``private`` and ``public``, for one purpose and round."""
    try:
        peer = X25519PublicKey.from_public_bytes(public)
        secret = private.exchange(peer)
    except ValueError as error:
        raise ItemError(f"a public key cannot be used for key agreement: {error}") from error
    info = b"fogline secagg " + label + b" " + round_id.encode()
    return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(secret)


def mask_vector(seed: bytes, dimension: int, bits: int) -> npt.NDArray[np.uint64]:
    """``dimension`` uniform elements modulo ``2**bits`` from the ChaCha20 keystream of ``seed``."""
    if len(seed) != SEED_BYTES:
        raise ConfigError(f"a mask seed must be {SEED_BYTES} bytes, not {len(seed)}")
    # each seed is used for exactly one stream, so a fixed nonce is safe
    encryptor = Cipher(algorithms.ChaCha20(seed, bytes(16)), mode=None).encryptor()
    stream = encryptor.update(bytes(8 * dimension))
    words = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
    return words & np.uint64((1 << bits) - 1)


def _associated(sender: str, recipient: str, round_id: str) -> bytes:
    return "\x00".join(("fogline secagg share", round_id, sender, recipient)).encode()


def seal_shares(
    key: bytes, plaintext: bytes, *, sender: str, recipient: str, round_id: str
) -> bytes:
    """Encrypt and authenticate ``plaintext`` from ``sender`` to ``recipient``: nonce + ciphertext."""
    nonce = os.urandom(_NONCE_BYTES)  # the pair's key serves both directions: never reuse a nonce
    aad = _associated(sender, recipient, round_id)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


def open_shares(key: bytes, sealed: bytes, *, sender: str, recipient: str, round_id: str) -> bytes:
    """Decrypt what :func:`seal_shares` made; a changed byte, sender or recipient is refused."""
    nonce, body = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, body, _associated(sender, recipient, round_id))
    except InvalidTag as error:
        raise ItemError(
            f"the shares from {sender} to {recipient} fail authentication (tampered or misrouted)"
        ) from error


def _shamir() -> Any:
    """pycryptodome's Shamir, imported when secure aggregation first shares a secret.

    Deferred so that importing ``fogline.federated`` (which a fleet agent
    does) needs only the ``fleet`` extra; secure aggregation needs ``federated``.
    """
    try:
        from Crypto.Protocol.SecretSharing import Shamir
    except ImportError as exc:
        raise ConfigError(
            "secure aggregation needs pycryptodome: pip install 'fogline[federated]'"
        ) from exc
    return Shamir


def split_secret(secret: bytes, threshold: int, count: int) -> list[bytes]:
    """``count`` Shamir shares of ``secret`` (a multiple of 16 bytes); share ``i`` has index ``i + 1``."""
    if len(secret) % _BLOCK:
        raise ConfigError(
            f"a shared secret must be a multiple of {_BLOCK} bytes, not {len(secret)}"
        )
    shares = [b""] * count
    for start in range(0, len(secret), _BLOCK):
        for index, block in _shamir().split(threshold, count, secret[start : start + _BLOCK]):
            shares[index - 1] += block
    return shares


def combine_secret(shares: dict[int, bytes]) -> bytes:
    """The secret back from ``{index: share}`` (at least the threshold of them)."""
    length = {len(share) for share in shares.values()}
    if len(length) != 1 or next(iter(length)) % _BLOCK:
        raise ItemError(
            "shares of one secret must all have the same length, a multiple of 16 bytes"
        )
    size = length.pop()
    secret = b""
    for start in range(0, size, _BLOCK):
        blocks = [(index, share[start : start + _BLOCK]) for index, share in sorted(shares.items())]
        secret += bytes(_shamir().combine(blocks))
    return secret
