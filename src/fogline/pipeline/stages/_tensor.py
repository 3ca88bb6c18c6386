"""Steps on any array: normalize, layout, cast, reshape.

These run last before the model, turning a source's data into what the
model's input signature says; each maps the :class:`ArraySpec` it is given
so a chain that does not end in that signature is refused at load time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import field_validator, model_validator

from fogline.errors import ConfigError, ItemError
from fogline.pipeline._base import ArraySpec, PreprocessSpec, Stage, check_fits
from fogline.pipeline._item import Item
from fogline.pipeline.stages._common import (
    Numbers,
    _is_finite,
    _is_int,
    _shown,
    array_of,
)

CastType = Literal[
    "bool", "int8", "uint8", "int16", "uint16", "int32", "int64", "float16", "float32", "float64"
]


class NormalizeSpec(PreprocessSpec):
    """``(x * scale - mean) / std`` per channel (the last axis), as float32.

    ``mean`` and ``std`` hold one value for all channels or one per channel;
    per-channel values need channels-last data, so put ``normalize`` before
    ``layout: chw``.

    >>> spec = NormalizeSpec(type="normalize", mean=[0.5], std=[0.25], scale=1 / 255)
    >>> stage = spec.build()
    >>> item = stage(Item("cam", 0, 0.0, np.full((1, 1, 3), 255, np.uint8)))
    >>> item.data.dtype.name, float(item.data[0, 0, 0])
    ('float32', 2.0)
    """

    type: Literal["normalize"]
    mean: Numbers = (0.0,)
    std: Numbers = (1.0,)
    scale: float = 1.0

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, value: Any) -> Any:
        if not _is_finite(value) or value == 0:
            raise ValueError(f"expected a non-zero number, got {_shown(value)}")
        return value

    @model_validator(mode="after")
    def _lengths(self) -> NormalizeSpec:
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must not hold zeros, got {list(self.std)}")
        n, m = len(self.mean), len(self.std)
        if n > 1 and m > 1 and n != m:
            raise ValueError(f"mean has {n} values but std has {m}; give one per channel")
        return self

    @property
    def _channels(self) -> int:
        return max(len(self.mean), len(self.std))

    def output(self, given: ArraySpec) -> ArraySpec:
        n = self._channels
        if n > 1:
            if given.layout == "CHW":
                raise ConfigError(
                    "normalize applies per channel on the last axis, but gets CHW data; "
                    "put normalize before `layout: chw`"
                )
            c = None if not given.shape else given.shape[-1]
            if given.rank == 0 or (c is not None and c != n):
                raise ConfigError(
                    f"normalize has {n} values per channel, but gets {given.describe()}"
                )
        return ArraySpec(given.shape, "float32", given.layout)

    def build(self) -> Stage:
        std = np.asarray(self.std, np.float32)
        mean = np.asarray(self.mean, np.float32)
        return _Normalize(np.float32(self.scale) / std, mean / std, self._channels)


@dataclass(frozen=True, slots=True)
class _Normalize:
    factor: np.ndarray
    offset: np.ndarray
    channels: int

    def __call__(self, item: Item) -> Item:
        data = array_of(item, "normalize")
        if self.channels > 1 and (data.ndim == 0 or data.shape[-1] != self.channels):
            raise ItemError(
                f"normalize has {self.channels} values per channel, got shape {list(data.shape)}",
                item.position,
            )
        out = data.astype(np.float32)
        if self.channels > 1 and out.ndim > 1:
            # Broadcasting (C,) over (..., W, C) runs numpy's inner loop C values at a time;
            # over rows of W * C values (the factors tiled W times) it runs at full speed.
            width = out.shape[-2]
            factor, offset = _tiled(self.factor, width), _tiled(self.offset, width)
            rows = out.reshape(-1, width * self.channels)
            rows *= factor
            rows -= offset
        else:
            out *= self.factor
            out -= self.offset
        item.data = out
        return item


@lru_cache(maxsize=64)
def _tiled_cached(values: bytes, width: int) -> np.ndarray:
    return np.tile(np.frombuffer(values, np.float32), width)


def _tiled(values: np.ndarray, width: int) -> np.ndarray:
    return _tiled_cached(values.tobytes(), width)


class LayoutSpec(PreprocessSpec):
    """Move the channel axis of an image: ``to: chw`` (from HWC) or ``to: hwc`` (from CHW).

    >>> LayoutSpec(type="layout", to="chw").output(ArraySpec((8, 6, 3), "uint8", "HWC")).describe()
    '(3, 8, 6) uint8 CHW'
    """

    type: Literal["layout"]
    to: Literal["chw", "hwc"]

    def output(self, given: ArraySpec) -> ArraySpec:
        target = self.to.upper()
        source = "HWC" if target == "CHW" else "CHW"
        if given.layout == target:
            raise ConfigError(f"layout to {self.to}: the data is {target} already")
        check_fits(given, rank=3, layout=source, what=f"layout to {self.to}")
        shape = None
        if given.shape is not None:
            order = (2, 0, 1) if target == "CHW" else (1, 2, 0)
            shape = tuple(given.shape[i] for i in order)
        return ArraySpec(shape, given.dtype, target)

    def build(self) -> Stage:
        return _Layout((2, 0, 1) if self.to == "chw" else (1, 2, 0), self.to)


@dataclass(frozen=True, slots=True)
class _Layout:
    order: tuple[int, int, int]
    to: str

    def __call__(self, item: Item) -> Item:
        data = array_of(item, f"layout to {self.to}", 3)
        item.data = np.ascontiguousarray(data.transpose(self.order))
        return item


class CastSpec(PreprocessSpec):
    """Convert the data to ``dtype`` (a plain numpy cast: no scaling, no clipping).

    >>> CastSpec(type="cast", dtype="float32").output(ArraySpec((4,), "uint8")).describe()
    '(4,) float32'
    """

    type: Literal["cast"]
    dtype: CastType = "float32"

    def output(self, given: ArraySpec) -> ArraySpec:
        return ArraySpec(given.shape, self.dtype, given.layout)

    def build(self) -> Stage:
        return _Cast(np.dtype(self.dtype))


@dataclass(frozen=True, slots=True)
class _Cast:
    dtype: np.dtype[Any]

    def __call__(self, item: Item) -> Item:
        data = array_of(item, f"cast to {self.dtype}")
        if data.dtype.kind not in "biuf":
            raise ItemError(f"cast to {self.dtype} cannot take {data.dtype} data", item.position)
        item.data = data.astype(self.dtype, copy=False)
        return item


class ReshapeSpec(PreprocessSpec):
    """Give the data ``shape`` (one dim may be -1: whatever is left), same elements in order.

    >>> ReshapeSpec(type="reshape", shape=[-1, 4]).output(ArraySpec((8, 2), "float32")).describe()
    '(4, 4) float32'
    """

    type: Literal["reshape"]
    shape: tuple[int, ...]

    @field_validator("shape", mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple) or not all(_is_int(v) for v in value):
            raise ValueError(f"expected a list of integers, got {_shown(value)}")
        if any(v == 0 or v < -1 for v in value) or list(value).count(-1) > 1:
            raise ValueError(
                f"expected positive dims with at most one -1, got {_shown(list(value))}"
            )
        return tuple(int(v) for v in value)

    def output(self, given: ArraySpec) -> ArraySpec:
        known = math.prod(d for d in self.shape if d != -1)
        shape: tuple[int | None, ...] = self.shape
        if given.shape is not None and all(d is not None for d in given.shape):
            size = math.prod(d for d in given.shape if d is not None)
            if (-1 in self.shape and size % known) or (-1 not in self.shape and size != known):
                raise ConfigError(
                    f"reshape to {list(self.shape)} cannot take {given.describe()} "
                    f"({size} elements)"
                )
            shape = tuple(size // known if d == -1 else d for d in self.shape)
        else:
            shape = tuple(None if d == -1 else d for d in self.shape)
        return ArraySpec(shape, given.dtype, None)

    def build(self) -> Stage:
        return _Reshape(self.shape)


@dataclass(frozen=True, slots=True)
class _Reshape:
    shape: tuple[int, ...]

    def __call__(self, item: Item) -> Item:
        data = array_of(item, "reshape")
        try:
            item.data = data.reshape(self.shape)
        except ValueError:
            raise ItemError(
                f"reshape to {list(self.shape)} cannot take shape {list(data.shape)}",
                item.position,
            ) from None
        return item
