"""Generated arrays, for load tests and for trying a pipeline without any data."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from fogline.pipeline._base import ArraySpec, SourceSpec
from fogline.pipeline._item import Corrupt, Item

#: Distinct arrays generated up front and cycled, so an item costs no RNG call.
POOL_SIZE = 64
#: The pool's memory cap: large arrays get a smaller pool.
POOL_BYTES = 32 << 20


class SyntheticSpec(SourceSpec):
    """``count`` arrays of ``shape`` and ``dtype`` (``count: null`` = until stopped).

    ``pattern`` is ``random`` (normal noise for floats, the full range for
    integers, seeded by ``seed``), ``zeros``, or ``sine`` (a sine wave along
    the flattened array whose phase moves from item to item).

    >>> spec = SyntheticSpec(shape=[2, 3], count=2)
    >>> spec.output().describe()
    '(2, 3) float32'
    >>> [item.data.shape for item in spec.build("s").read(threading.Event())]
    [(2, 3), (2, 3)]
    """

    type: Literal["synthetic"] = "synthetic"
    shape: list[int] = Field(min_length=1)
    dtype: str = "float32"
    count: int | None = Field(None, ge=0)
    pattern: Literal["random", "zeros", "sine"] = "random"
    seed: int = 0

    @field_validator("shape")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(d <= 0 for d in value):
            raise ValueError(f"shape {value}: every dimension must be positive")
        return value

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        try:
            kind = np.dtype(value)
        except TypeError:
            raise ValueError(f"unknown dtype {value!r}") from None
        if kind.kind not in "biuf":
            raise ValueError(f"dtype {value!r}: use a numeric or bool dtype")
        return kind.name

    def output(self) -> ArraySpec:
        return ArraySpec(tuple(self.shape), self.dtype)

    def build(self, name: str) -> SyntheticSource:
        return SyntheticSource(name, self.pool(), self.count)

    def pool(self) -> list[np.ndarray]:
        """The arrays the source cycles through."""
        dtype = np.dtype(self.dtype)
        size = int(np.prod(self.shape))
        count = max(1, min(POOL_SIZE, POOL_BYTES // max(1, size * dtype.itemsize)))
        rng = np.random.default_rng(self.seed)
        shape = (count, *self.shape)
        if self.pattern == "zeros":
            arrays = np.zeros(shape, dtype)
        elif self.pattern == "sine":
            steps = np.arange(size) / size + np.arange(count)[:, None] / count
            wave = np.sin(2 * np.pi * steps).reshape(shape)
            arrays = _scaled(wave, dtype)
        elif dtype.kind == "f":
            arrays = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arrays = rng.integers(0, 2, shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            arrays = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        return list(arrays)


def _scaled(wave: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """A -1..1 wave in ``dtype``: as is for floats, spread over the range for integers."""
    if dtype.kind == "f":
        return wave.astype(dtype)
    if dtype.kind == "b":
        return wave > 0
    info = np.iinfo(dtype)
    mid, half = (float(info.max) + float(info.min)) / 2, (float(info.max) - float(info.min)) / 2
    # Just inside the range: float64 rounds int64's extremes up past them.
    return np.round(mid + wave * half * (1 - 2**-20)).astype(dtype)


class SyntheticSource:
    """Cycles through ``pool`` ``count`` times.

    The arrays are shared, not copied (a frame of 224x224x3 floats would
    cost more to copy than to make): they are read-only, and stages make new
    arrays rather than change the ones they are given. An item has no
    ``meta`` (a dict per item would cost a load test): its position is
    :attr:`Item.position`'s own ``"name#sequence"``.
    """

    def __init__(self, name: str, pool: list[np.ndarray], count: int | None = None) -> None:
        self.name = name
        self._pool = [np.array(array) for array in pool]
        for array in self._pool:
            array.setflags(write=False)
        self._count = count

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        pool, size, count, name = self._pool, len(self._pool), self._count, self.name
        sequence = 0
        while count is None or sequence < count:
            if stop.is_set():
                return
            yield Item(name, sequence, time.time(), pool[sequence % size])
            sequence += 1
