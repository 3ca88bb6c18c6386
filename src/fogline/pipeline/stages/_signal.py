"""Sensor steps: sliding window, FFT magnitude, band energies, standard scaling.

A sensor source yields one 1-D row of channels per reading; ``window``
stacks each source's rows into ``(size, channels)`` blocks (returning None
until one is full), ``fft`` turns a block into its magnitude spectrum,
``bands`` sums that spectrum's power into a few bands, and ``scale``
standardises features with statistics saved at training time.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import PrivateAttr, field_validator, model_validator

from fogline.errors import ConfigError, ItemError
from fogline.pipeline._base import ArraySpec, ExistingPath, PreprocessSpec, Stage, check_fits
from fogline.pipeline._item import Item
from fogline.pipeline.stages._common import Numbers, PositiveInt, _shown, array_of


class WindowSpec(PreprocessSpec):
    """Stack each source's 1-D rows into ``(size, channels)`` windows, one every ``hop`` rows.

    ``hop`` defaults to ``size`` (windows that do not overlap). The window
    goes on as the newest row's item (its source, sequence, times and meta)
    with ``meta["window_start"]`` the sequence number of its oldest row (and
    ``meta["window_start_at"]`` that row's capture time).

    >>> stage = WindowSpec(type="window", size=3, hop=2).build()
    >>> [stage(Item("s", i, 0.0, np.array([i], np.float32))) is not None for i in range(7)]
    [False, False, True, False, True, False, True]
    """

    type: Literal["window"]
    size: PositiveInt
    hop: PositiveInt | None = None

    def output(self, given: ArraySpec) -> ArraySpec:
        check_fits(given, rank=1, what="window")
        c = given.shape[0] if given.shape else None
        return ArraySpec((self.size, c), given.dtype, None)

    def build(self) -> Stage:
        return _Window(self.size, self.hop or self.size)


@dataclass(slots=True)
class _Ring:
    rows: np.ndarray
    sequences: list[int]
    times: list[float]
    count: int = 0


@dataclass(slots=True)
class _Window:
    size: int
    hop: int
    rings: dict[str, _Ring] = field(default_factory=dict)

    def __call__(self, item: Item) -> Item | None:
        row = array_of(item, "window", 1)
        ring = self.rings.get(item.source)
        if ring is None:
            rows = np.empty((self.size, row.shape[0]), row.dtype)
            ring = self.rings[item.source] = _Ring(rows, [0] * self.size, [0.0] * self.size)
        elif ring.rows.shape[1] != row.shape[0]:
            del self.rings[item.source]
            raise ItemError(
                f"window: row has {row.shape[0]} channels, earlier rows had "
                f"{ring.rows.shape[1]}; the window starts again",
                item.position,
            )
        i = ring.count % self.size
        ring.rows[i] = row
        ring.sequences[i] = item.sequence
        ring.times[i] = item.captured_at
        ring.count += 1
        if ring.count < self.size or (ring.count - self.size) % self.hop:
            return None
        oldest = ring.count % self.size
        if oldest:
            item.data = np.concatenate((ring.rows[oldest:], ring.rows[:oldest]))
        else:
            item.data = ring.rows.copy()
        item.meta["window_start"] = ring.sequences[oldest]
        item.meta["window_start_at"] = ring.times[oldest]
        return item


class FftSpec(PreprocessSpec):
    """Magnitude spectrum along ``axis`` (a real FFT: ``n`` samples give ``n // 2 + 1`` bins).

    ``taper: hann`` multiplies each block by a Hann window first, which
    keeps a strong tone from leaking into every bin.

    >>> FftSpec(type="fft").output(ArraySpec((256, 3), "float32")).describe()
    '(129, 3) float32'
    """

    type: Literal["fft"]
    axis: int = 0
    taper: Literal["none", "hann"] = "none"

    def output(self, given: ArraySpec) -> ArraySpec:
        if given.shape is None:
            return ArraySpec(None, "float32")
        rank = len(given.shape)
        if not -rank <= self.axis < rank:
            raise ConfigError(f"fft along axis {self.axis} cannot take {given.describe()}")
        axis = self.axis % rank
        n = given.shape[axis]
        shape = list(given.shape)
        shape[axis] = None if n is None else n // 2 + 1
        return ArraySpec(tuple(shape), "float32")

    def build(self) -> Stage:
        return _Fft(self.axis, self.taper == "hann")


@lru_cache(maxsize=32)
def _hann(n: int) -> np.ndarray:
    return np.hanning(n).astype(np.float32)


@dataclass(frozen=True, slots=True)
class _Fft:
    axis: int
    taper: bool

    def __call__(self, item: Item) -> Item:
        data = array_of(item, "fft")
        if not -data.ndim <= self.axis < data.ndim or data.shape[self.axis] == 0:
            raise ItemError(
                f"fft along axis {self.axis} cannot take shape {list(data.shape)}", item.position
            )
        if data.dtype.kind not in "biuf":
            raise ItemError(f"fft cannot take {data.dtype} data", item.position)
        if self.taper:
            shape = [1] * data.ndim
            shape[self.axis] = data.shape[self.axis]
            data = data * _hann(data.shape[self.axis]).reshape(shape)
        item.data = np.abs(np.fft.rfft(data, axis=self.axis)).astype(np.float32)
        return item


class BandsSpec(PreprocessSpec):
    """Power (sum of squared magnitudes) of a spectrum in bands along axis 0.

    ``count`` splits the bins into that many contiguous bands of equal width
    where it divides, else as ``np.array_split`` does (the first ``bins %
    count`` bands hold one bin more); ``edges``
    (Hz, increasing) with ``sample_rate`` gives the bands between
    consecutive edges, each holding bins ``lo <= f < hi`` (the last one
    ``lo <= f <= hi``). Bin ``k`` of an ``F``-bin spectrum lies at
    ``k * sample_rate / (2 * (F - 1))``, i.e. it came from an even-length
    window.

    >>> BandsSpec(type="bands", count=4).output(ArraySpec((129, 3), "float32")).describe()
    '(4, 3) float32'
    """

    type: Literal["bands"]
    count: PositiveInt | None = None
    edges: Numbers | None = None
    sample_rate: float | None = None

    @model_validator(mode="after")
    def _one(self) -> BandsSpec:
        if (self.count is None) == (self.edges is None):
            raise ValueError("bands takes either `count` or `edges` (with `sample_rate`)")
        if self.sample_rate is not None and not (
            math.isfinite(self.sample_rate) and self.sample_rate > 0
        ):
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate:g}")
        if self.edges is not None:
            if self.sample_rate is None:
                raise ValueError("bands `edges` are in Hz: give `sample_rate` too")
            e = self.edges
            if len(e) < 2 or any(b <= a for a, b in itertools.pairwise(e)):
                raise ValueError(f"edges must be at least two increasing values, got {list(e)}")
            if e[0] < 0 or e[-1] > self.sample_rate / 2:
                raise ValueError(
                    f"edges must lie from 0 to sample_rate / 2 = {self.sample_rate / 2:g} Hz, "
                    f"got {list(e)}"
                )
        return self

    @property
    def _bands(self) -> int:
        return self.count if self.count is not None else len(self.edges or ()) - 1

    def output(self, given: ArraySpec) -> ArraySpec:
        if given.rank not in (None, 1, 2):
            raise ConfigError(f"bands needs a spectrum of rank 1 or 2, but gets {given.describe()}")
        bins = given.shape[0] if given.shape else None
        if self.count is not None and bins is not None and self.count > bins:
            raise ConfigError(f"bands count {self.count} is more than the {bins} bins it gets")
        shape = None if given.shape is None else (self._bands, *given.shape[1:])
        return ArraySpec(shape, "float32")

    def build(self) -> Stage:
        return _Bands(self.count, self.edges, self.sample_rate)


@dataclass(frozen=True, slots=True)
class _Bands:
    count: int | None
    edges: tuple[float, ...] | None
    sample_rate: float | None

    def bounds(self, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last bin of each band, for a spectrum of ``bins`` bins."""
        if self.count is not None:  # as np.array_split: the first bins % count get one more
            q, r = divmod(bins, self.count)
            cuts = np.concatenate(([0], np.cumsum([q + 1] * r + [q] * (self.count - r))))
            return cuts[:-1], cuts[1:]
        assert self.edges is not None and self.sample_rate is not None
        freqs = np.arange(bins) * (self.sample_rate / max(1, 2 * (bins - 1)))
        edges = np.asarray(self.edges)
        ends = np.searchsorted(freqs, edges[1:], side="left")
        ends[-1] = np.searchsorted(freqs, edges[-1], side="right")
        return np.searchsorted(freqs, edges[:-1], side="left"), ends

    def __call__(self, item: Item) -> Item:
        data = array_of(item, "bands")
        if data.ndim not in (1, 2) or data.shape[0] == 0:
            raise ItemError(
                f"bands needs a spectrum of rank 1 or 2, got shape {list(data.shape)}",
                item.position,
            )
        starts, ends = _cached_bounds(self, data.shape[0])
        power = np.square(data, dtype=np.float64)
        total = np.zeros((data.shape[0] + 1, *data.shape[1:]))
        np.cumsum(power, axis=0, out=total[1:])
        item.data = (total[ends] - total[starts]).astype(np.float32)
        return item


@lru_cache(maxsize=64)
def _cached_bounds(bands: _Bands, bins: int) -> tuple[np.ndarray, np.ndarray]:
    return bands.bounds(bins)


def _load_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        if path.suffix == ".npz":
            with np.load(path) as npz:
                return np.asarray(npz["mean"]), np.asarray(npz["std"])
        if path.suffix == ".json":
            stats = json.loads(path.read_text(encoding="utf-8"))
            return np.asarray(stats["mean"], float), np.asarray(stats["std"], float)
    except KeyError as exc:
        raise ValueError(f"{path} has no {exc.args[0]!r}: it needs `mean` and `std`") from None
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"cannot read statistics from {path}: {exc}") from exc
    raise ValueError(f"scale reads .npz or .json statistics, got {path.name}")


class ScaleSpec(PreprocessSpec):
    """Standard scaling ``(x - mean) / std`` with saved or inline statistics, as float32.

    ``path`` names a ``.npz`` (arrays ``mean``, ``std``) or ``.json`` (``{"mean":
    [...], "std": [...]}``) file; their shapes must broadcast onto the data
    without growing it. A ``std`` of 0 (a constant feature) divides by 1.

    >>> spec = ScaleSpec(type="scale", mean=[1.0, 2.0], std=[2.0, 0.5])
    >>> spec.build()(Item("s", 0, 0.0, np.array([3.0, 3.0]))).data.tolist()
    [1.0, 2.0]
    """

    type: Literal["scale"]
    path: ExistingPath | None = None
    mean: Numbers | None = None
    std: Numbers | None = None
    _stats: tuple[np.ndarray, np.ndarray] = PrivateAttr()

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | Path):
            raise ValueError(f"expected a path, got {_shown(value)}")
        return value

    @model_validator(mode="after")
    def _load(self) -> ScaleSpec:
        if self.path is not None:
            if self.mean is not None or self.std is not None:
                raise ValueError("scale takes either `path` or `mean` and `std`, not both")
            mean, std = _load_stats(self.path)
        elif self.mean is not None and self.std is not None:
            mean, std = np.asarray(self.mean), np.asarray(self.std)
        else:
            raise ValueError("scale needs `path`, or both `mean` and `std`")
        try:
            np.broadcast_shapes(mean.shape, std.shape)
        except ValueError:
            raise ValueError(
                f"mean {list(mean.shape)} and std {list(std.shape)} do not match"
            ) from None
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise ValueError("mean and std must be finite numbers")
        std = np.where(std == 0, 1.0, std)
        mean, std = (a.reshape(()) if a.size == 1 else a for a in (mean, std))
        self._stats = (mean.astype(np.float32), (1.0 / std).astype(np.float32))
        return self

    def output(self, given: ArraySpec) -> ArraySpec:
        shape = np.broadcast_shapes(self._stats[0].shape, self._stats[1].shape)
        if given.shape is not None:
            fits = len(shape) <= len(given.shape) and all(
                s == 1 or g is None or s == g
                for s, g in zip(reversed(shape), reversed(given.shape), strict=False)
            )
            if not fits:
                raise ConfigError(
                    f"scale statistics of shape {list(shape)} do not fit {given.describe()}"
                )
        return ArraySpec(given.shape, "float32", given.layout)

    def build(self) -> Stage:
        return _Scale(*self._stats)


@dataclass(frozen=True, slots=True)
class _Scale:
    mean: np.ndarray
    inverse_std: np.ndarray

    def __call__(self, item: Item) -> Item:
        data = array_of(item, "scale")
        try:
            out = (data.astype(np.float32) - self.mean) * self.inverse_std
        except (ValueError, TypeError):
            out = None
        if out is None or out.shape != data.shape:
            raise ItemError(
                f"scale statistics of shape {list(self.mean.shape)} do not fit "
                f"shape {list(data.shape)}",
                item.position,
            )
        item.data = out
        return item
