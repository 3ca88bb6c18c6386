"""The finite field of secure aggregation: clip, quantize, dequantize, and what it costs on the wire.

Masks only cancel exactly in modular arithmetic, so a float update is first
clipped to ``[-clip, clip]`` and mapped to an integer in ``[0, levels]``,
where ``levels = (2**bits - 1) // num_clients`` (rounded down to an even
number, so that zero is exactly a level) leaves enough headroom that
the sum of ``num_clients`` quantized updates never wraps modulo ``2**bits``.
Field elements are held in ``uint64`` arrays; ``bits`` is at most 62 so a sum
of two of them never overflows before it is reduced.

Rounding is to the nearest level (step ``2 * clip / levels``), so one
coordinate of one client is off by at most ``clip / levels``, and the
dequantized sum of ``m`` clients by at most ``m * clip / levels``
(:attr:`FieldQuantizer.sum_error_bound`), plus whatever clipping removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fogline.errors import ConfigError, SignatureMismatch

__all__ = ["FieldQuantizer", "UploadCost", "upload_cost"]

FieldArray = npt.NDArray[np.uint64]

#: bytes of one X25519 public key; a client advertises two of them
PUBLIC_KEY_BYTES = 32
#: one Shamir share of a 32-byte secret (two 16-byte blocks)
SHARE_BYTES = 32
#: an encrypted pair of shares: 12-byte nonce, two shares, 16-byte tag
SEALED_SHARE_BYTES = 12 + 2 * SHARE_BYTES + 16


@dataclass(frozen=True)
class FieldQuantizer:
    """Clip and quantize float updates to the integers modulo ``2**bits``.

    >>> q = FieldQuantizer(bits=16, clip=1.0, num_clients=4)
    >>> q.levels
    16382
    >>> field = q.quantize(np.array([-1.0, 0.0, 0.5, 3.0]))
    >>> [int(v) for v in field]
    [0, 8191, 12286, 16382]
    >>> total = q.add(field, field)
    >>> [round(float(v), 3) for v in q.dequantize_sum(total, count=2)]
    [-2.0, 0.0, 1.0, 2.0]
    """

    bits: int = 32
    clip: float = 1.0
    num_clients: int = 1

    def __post_init__(self) -> None:
        if not 8 <= self.bits <= 62:
            raise ConfigError(
                f"secure aggregation needs 8 to 62 bits per coordinate, not {self.bits}"
            )
        if not (np.isfinite(self.clip) and self.clip > 0):
            raise ConfigError(f"the clipping bound must be a positive number, not {self.clip}")
        if self.num_clients < 1:
            raise ConfigError(f"at least one client is needed, not {self.num_clients}")
        if self.levels < 1:
            raise ConfigError(
                f"{self.bits} bits leave no headroom for {self.num_clients} clients; use more bits"
            )

    @property
    def modulus(self) -> int:
        """``2**bits``: the field all masked values live in."""
        return 1 << self.bits

    @property
    def levels(self) -> int:
        """The largest quantized value, so that ``num_clients`` of them fit below the modulus.

        Even, so that 0.0 falls exactly on a level (``levels / 2``): with an odd
        count it would fall halfway between two, numpy's round-half-to-even
        would send every exact zero half a step down, and a sum of unchanged
        coordinates would drift by ``count`` half-steps instead of being exact.
        """
        return ((self.modulus - 1) // self.num_clients) & ~1

    @property
    def step(self) -> float:
        """The width of one quantization level."""
        return 2.0 * self.clip / self.levels

    def sum_error_bound(self, count: int) -> float:
        """The largest error per coordinate of a dequantized sum of ``count`` clipped updates."""
        return count * self.clip / self.levels

    def quantize(self, update: npt.ArrayLike) -> FieldArray:
        """Clip to ``[-clip, clip]`` and round to the nearest of ``levels + 1`` integers."""
        values = np.asarray(update, dtype=np.float64).ravel()
        if not np.all(np.isfinite(values)):
            raise SignatureMismatch("an update with NaN or Inf cannot be quantized")
        clipped = np.clip(values, -self.clip, self.clip)
        scaled = np.rint((clipped + self.clip) / self.step)
        return np.clip(scaled, 0, self.levels).astype(np.uint64)

    def add(self, left: FieldArray, right: FieldArray) -> FieldArray:
        """``left + right`` modulo ``2**bits``."""
        return (left + right) & np.uint64(self.modulus - 1)

    def subtract(self, left: FieldArray, right: FieldArray) -> FieldArray:
        """``left - right`` modulo ``2**bits`` (unsigned wrap-around, then reduced)."""
        return (left - right) & np.uint64(self.modulus - 1)

    def dequantize_sum(self, total: FieldArray, count: int) -> npt.NDArray[np.float64]:
        """The float sum of ``count`` updates whose quantized values add up to ``total``."""
        if count < 1:
            raise ConfigError(f"a sum of {count} updates cannot be dequantized")
        return total.astype(np.float64) * self.step - count * self.clip


@dataclass(frozen=True)
class UploadCost:
    """Bytes one client uploads in a secure-aggregation round, beside plain float32 FedAvg."""

    masked: int
    keys: int
    shares: int
    unmask: int
    plain: int

    @property
    def total(self) -> int:
        """Everything the client sends."""
        return self.masked + self.keys + self.shares + self.unmask

    @property
    def expansion(self) -> float:
        """``total / plain``: how many times the float32 upload this round costs."""
        return self.total / self.plain


def upload_cost(dimension: int, num_clients: int, bits: int) -> UploadCost:
    """Upload of one client for a vector of ``dimension`` among ``num_clients``, at ``bits`` per coordinate.

    Counts payload bytes (ids and framing aside): the masked vector at
    ``ceil(bits / 8)`` bytes a coordinate, two X25519 public keys, one sealed
    pair of shares for every other client, and at worst one 32-byte share
    per other client when unmasking. Plain FedAvg sends 4 bytes a coordinate.
    The fixed part grows with the number of clients, not with the model, so
    as the model grows the expansion tends to ``bits / 32``:

    >>> round(upload_cost(100_000, 100, 16).expansion, 3)
    0.531
    >>> round(upload_cost(100_000, 100, 32).expansion, 3)
    1.031
    >>> round(upload_cost(1_000, 10, 32).expansion, 3)
    1.295
    """
    if dimension < 1 or num_clients < 2:
        raise ConfigError("the upload cost needs a dimension >= 1 and at least 2 clients")
    FieldQuantizer(bits=bits, num_clients=num_clients)  # refuses a field too small for them
    others = num_clients - 1
    return UploadCost(
        masked=dimension * ((bits + 7) // 8),
        keys=2 * PUBLIC_KEY_BYTES,
        shares=others * SEALED_SHARE_BYTES,
        unmask=others * SHARE_BYTES,
        plain=4 * dimension,
    )
