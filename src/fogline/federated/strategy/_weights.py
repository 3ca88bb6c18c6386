"""The values a strategy works on: :class:`Weights` (named tensors) and a client's :class:`Update`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from fogline.errors import ConfigError, ItemError

__all__ = ["Array", "Update", "Weights"]

Array = npt.NDArray[Any]


@dataclass(frozen=True, eq=False)
class Weights(Mapping[str, Array]):
    """A model's weights: an ordered, read-only mapping of tensor name → floating-point array.

    The arrays are copied and made read-only, so a strategy can keep a
    ``Weights`` without a client changing it behind its back.

    >>> w = Weights({"W": np.zeros((2, 3), np.float32), "b": np.ones(3, np.float32)})
    >>> list(w), w["W"].shape, w.size
    (['W', 'b'], (2, 3), 9)
    >>> w.like(np.arange(9.0))["b"]
    array([6., 7., 8.], dtype=float32)
    """

    arrays: Mapping[str, Array]

    def __post_init__(self) -> None:
        if not self.arrays:
            raise ConfigError("weights need at least one tensor")
        frozen: dict[str, Array] = {}
        for name, value in self.arrays.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"a tensor name must be a non-empty string, not {name!r}")
            array = np.array(value, copy=True)
            if array.dtype.kind != "f":
                raise ConfigError(
                    f"tensor {name!r} has dtype {array.dtype}; weights are floating-point"
                )
            array.flags.writeable = False
            frozen[name] = array
        object.__setattr__(self, "arrays", MappingProxyType(frozen))

    def __getitem__(self, name: str) -> Array:
        return self.arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Weights):
            return NotImplemented
        return list(self) == list(other) and all(
            self[n].dtype == other[n].dtype and np.array_equal(self[n], other[n]) for n in self
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def size(self) -> int:
        """The number of scalars in all tensors together."""
        return sum(int(a.size) for a in self.arrays.values())

    def vector(self) -> npt.NDArray[np.float64]:
        """All tensors flattened into one float64 vector, in name order."""
        return np.concatenate([a.ravel().astype(np.float64) for a in self.arrays.values()])

    def like(self, vector: npt.ArrayLike) -> Weights:
        """Weights with this one's names, shapes and dtypes, filled from a flat ``vector``."""
        flat = np.asarray(vector)
        if flat.shape != (self.size,):
            raise ConfigError(f"a vector of shape {flat.shape} does not fill {self.size} weights")
        out: dict[str, Array] = {}
        start = 0
        for name, array in self.arrays.items():
            stop = start + int(array.size)
            out[name] = flat[start:stop].reshape(array.shape).astype(array.dtype)
            start = stop
        return Weights(out)


@dataclass(frozen=True)
class Update:
    """What one client sends back after a round: its new weights and how many examples it trained on.

    >>> Update("dev-1", Weights({"w": np.zeros(2)}), num_examples=32).client
    'dev-1'
    """

    client: str
    weights: Weights
    num_examples: int

    def __post_init__(self) -> None:
        if not isinstance(self.client, str) or not self.client:
            raise ItemError(f"an update needs a client id, not {self.client!r}")
        if not isinstance(self.weights, Weights):
            raise ItemError("the update's weights are not Weights", f"client {self.client!r}")
        n = self.num_examples
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ItemError(
                f"num_examples must be a positive integer, not {n!r}", f"client {self.client!r}"
            )
