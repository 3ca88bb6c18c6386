"""What clients and the server of secure aggregation say to each other: one value object per message.

Each validates itself, so a malformed message is refused where it arrives,
whatever carries it (method calls in a simulation, MQTT on the fleet).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fogline.errors import ConfigError, ItemError

from ._secagg_crypto import SEED_BYTES
from ._secagg_field import FieldQuantizer

__all__ = [
    "EncryptedShare",
    "KeyAdvert",
    "MaskedInput",
    "SecAggParams",
    "UnmaskRequest",
    "UnmaskResponse",
]


@dataclass(frozen=True)
class SecAggParams:
    """One round's settings, known to the server and every sampled client.

    ``threshold`` (how many clients must survive to the end) defaults to
    tolerating up to a third of the sampled clients dropping; it must be a
    majority, so no two disjoint groups can each rebuild a client's secrets.

    >>> SecAggParams(num_clients=10, dimension=3).threshold
    7
    >>> SecAggParams(num_clients=10, dimension=3, threshold=5)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: the threshold must be a majority of the 10 clients and at most 10, not 5
    """

    num_clients: int
    dimension: int
    clip: float = 1.0
    bits: int = 32
    threshold: int = 0  # 0: tolerate a third dropping
    round_id: str = "0"

    def __post_init__(self) -> None:
        if self.num_clients < 2:
            raise ConfigError(
                f"secure aggregation needs at least 2 clients, not {self.num_clients}"
            )
        if self.dimension < 1:
            raise ConfigError(f"the update dimension must be at least 1, not {self.dimension}")
        if self.threshold == 0:
            object.__setattr__(self, "threshold", self.num_clients - self.num_clients // 3)
        if not self.num_clients < 2 * self.threshold <= 2 * self.num_clients:
            raise ConfigError(
                f"the threshold must be a majority of the {self.num_clients} clients "
                f"and at most {self.num_clients}, not {self.threshold}"
            )
        self.quantizer  # noqa: B018 -- refuses bits too few for the clients

    @property
    def quantizer(self) -> FieldQuantizer:
        """The field and quantization every client of the round uses."""
        return FieldQuantizer(bits=self.bits, clip=self.clip, num_clients=self.num_clients)


def _check_id(client_id: str) -> None:
    if not client_id or "\x00" in client_id:
        raise ItemError(f"a client id must be a non-empty string without NUL, not {client_id!r}")


@dataclass(frozen=True)
class KeyAdvert:
    """Stage 0, client to server (then broadcast): a client's two X25519 public keys.

    ``cipher_key`` agrees the keys that seal shares, ``mask_key`` the seeds of
    pairwise masks.
    """

    client_id: str
    cipher_key: bytes
    mask_key: bytes

    def __post_init__(self) -> None:
        _check_id(self.client_id)
        if len(self.cipher_key) != SEED_BYTES or len(self.mask_key) != SEED_BYTES:
            raise ItemError(f"{self.client_id}: X25519 public keys are {SEED_BYTES} bytes")
        if self.cipher_key == self.mask_key:
            raise ItemError(f"{self.client_id}: the two public keys must differ")


@dataclass(frozen=True)
class EncryptedShare:
    """Stage 1, client to server to client: shares for ``recipient``, sealed so the server cannot read them."""

    sender: str
    recipient: str
    sealed: bytes

    def __post_init__(self) -> None:
        _check_id(self.sender)
        _check_id(self.recipient)
        if self.sender == self.recipient:
            raise ItemError(f"{self.sender} cannot send shares to itself")


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Stage 2, client to server: the quantized update plus all masks, modulo ``2**bits``."""

    client_id: str
    values: npt.NDArray[np.uint64]

    def __post_init__(self) -> None:
        _check_id(self.client_id)
        if self.values.dtype != np.uint64 or self.values.ndim != 1:
            raise ItemError(f"{self.client_id}: a masked input is a 1-D uint64 array")


@dataclass(frozen=True)
class UnmaskRequest:
    """Stage 3, server to each survivor: whose self-mask seed and whose mask key to rebuild."""

    survivors: frozenset[str]
    dropped: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        both = self.survivors & self.dropped
        if both:
            raise ItemError(f"a client cannot both survive and drop: {sorted(both)}")


@dataclass(frozen=True)
class UnmaskResponse:
    """Stage 3, survivor to server: its shares of the survivors' seeds and of the dropped clients' keys."""

    client_id: str
    seed_shares: Mapping[str, bytes]
    key_shares: Mapping[str, bytes]

    def __post_init__(self) -> None:
        _check_id(self.client_id)
        both = set(self.seed_shares) & set(self.key_shares)
        if both:
            raise ItemError(f"{self.client_id} must not reveal both shares for {sorted(both)}")
