"""Image steps on HWC arrays: resize, letterbox, crop (geometric) and colour.

The geometric steps compose ``item.meta["geometry"]`` (``model = source * s
+ t``, see the pipeline contract) so that detection decoders can map boxes
back to source pixels, and record ``meta["source_size"]`` (width, height of
the image the first of them saw) for clipping and ``meta["model_size"]``
(the image size after the last of them) for normalized boxes. Pixel
coordinates are continuous: pixel ``i`` spans ``[i, i + 1)``, the
convention under which OpenCV's resize is a pure scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import field_validator, model_validator

from fogline.errors import ConfigError, ItemError
from fogline.pipeline._base import ArraySpec, PreprocessSpec, Stage, check_fits
from fogline.pipeline._item import Item
from fogline.pipeline._optional import optional
from fogline.pipeline.stages._common import (
    HeightWidth,
    _is_int,
    _shown,
    channels,
    check_dtype,
    compose,
    image_of,
)

Interpolation = Literal["linear", "nearest", "area", "cubic"]
# OpenCV's interpolation flags (cv2.INTER_*), spelled out so that importing
# fogline does not import OpenCV: a device that only replays CSV logs needs none.
_INTERPOLATION = {"nearest": 0, "linear": 1, "cubic": 2, "area": 3}
#: The dtypes OpenCV resizes with every interpolation.
_RESIZABLE = ("uint8", "uint16", "int16", "float32", "float64")


def _image_output(given: ArraySpec, what: str) -> int | None:
    check_fits(given, rank=3, layout="HWC", what=what)
    return channels(given)


def _height_width(given: ArraySpec) -> tuple[int | None, int | None]:
    return (None, None) if given.shape is None else (given.shape[0], given.shape[1])


def _resize(data: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    if data.shape[0] == height and data.shape[1] == width:
        return data
    out: np.ndarray = optional("cv2").resize(data, (width, height), interpolation=interpolation)
    return out.reshape(height, width, data.shape[2])  # OpenCV drops a channel axis of 1


def _resizable(item: Item, what: str) -> np.ndarray:
    data = image_of(item, what)
    if data.dtype.name not in _RESIZABLE:
        raise ItemError(f"{what} cannot take {data.dtype} data", item.position)
    return data


class ResizeSpec(PreprocessSpec):
    """Resize to ``size`` ``[height, width]`` (aspect ratio not kept).

    >>> spec = ResizeSpec(type="resize", size=[224, 320])
    >>> spec.output(ArraySpec((None, None, 3), "uint8", "HWC")).describe()
    '(224, 320, 3) uint8 HWC'
    """

    needs = ("cv2",)

    type: Literal["resize"]
    size: HeightWidth
    interpolation: Interpolation = "linear"

    def output(self, given: ArraySpec) -> ArraySpec:
        c = _image_output(given, "resize")
        check_dtype(given, _RESIZABLE, "resize")
        return ArraySpec((*self.size, c), given.dtype, "HWC")

    def build(self) -> Stage:
        return _Resize(*self.size, _INTERPOLATION[self.interpolation])


@dataclass(frozen=True, slots=True)
class _Resize:
    height: int
    width: int
    interpolation: int

    def __call__(self, item: Item) -> Item:
        data = _resizable(item, "resize")
        out = _resize(data, self.height, self.width, self.interpolation)
        h, w = data.shape[:2]
        compose(item, data, out, self.width / w, self.height / h, 0.0, 0.0)
        item.data = out
        return item


class LetterboxSpec(PreprocessSpec):
    """Scale to fit ``size`` keeping the aspect ratio, centred, the rest filled with ``fill``.

    >>> spec = LetterboxSpec(type="letterbox", size=[640, 640])
    >>> spec.output(ArraySpec((480, 640, 3), "uint8", "HWC")).describe()
    '(640, 640, 3) uint8 HWC'
    """

    needs = ("cv2",)

    type: Literal["letterbox"]
    size: HeightWidth
    fill: float = 114.0
    interpolation: Interpolation = "linear"

    @field_validator("fill", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_shown(value)}")
        return value

    def output(self, given: ArraySpec) -> ArraySpec:
        c = _image_output(given, "letterbox")
        check_dtype(given, _RESIZABLE, "letterbox")
        if given.dtype is not None and np.dtype(given.dtype).kind in "ui":
            info = np.iinfo(given.dtype)
            if not (info.min <= self.fill <= info.max and float(self.fill).is_integer()):
                raise ConfigError(f"letterbox fill {self.fill:g} does not fit {given.dtype} data")
        return ArraySpec((*self.size, c), given.dtype, "HWC")

    def build(self) -> Stage:
        return _Letterbox(*self.size, self.fill, _INTERPOLATION[self.interpolation])


@dataclass(frozen=True, slots=True)
class _Letterbox:
    height: int
    width: int
    fill: float
    interpolation: int

    def __call__(self, item: Item) -> Item:
        data = _resizable(item, "letterbox")
        h, w, c = data.shape
        r = min(self.height / h, self.width / w)
        nh = min(self.height, max(1, round(h * r)))
        nw = min(self.width, max(1, round(w * r)))
        top, left = (self.height - nh) // 2, (self.width - nw) // 2
        out = np.full((self.height, self.width, c), self.fill, dtype=data.dtype)
        out[top : top + nh, left : left + nw] = _resize(data, nh, nw, self.interpolation)
        compose(item, data, out, nw / w, nh / h, float(left), float(top))
        item.data = out
        return item


class CropSpec(PreprocessSpec):
    """Cut out ``box`` ``[x, y, width, height]``, or a ``center`` ``[height, width]`` region.

    >>> spec = CropSpec(type="crop", center=[100, 100])
    >>> spec.output(ArraySpec((480, 640, 3), "uint8", "HWC")).describe()
    '(100, 100, 3) uint8 HWC'
    """

    type: Literal["crop"]
    box: tuple[int, int, int, int] | None = None
    center: HeightWidth | None = None

    @field_validator("box", mode="before")
    @classmethod
    def _box(cls, value: Any) -> Any:
        if value is None:
            return None
        if (
            not isinstance(value, list | tuple)
            or len(value) != 4
            or not all(_is_int(v) for v in value)
        ):
            raise ValueError(f"expected four integers [x, y, width, height], got {_shown(value)}")
        if value[0] < 0 or value[1] < 0 or value[2] <= 0 or value[3] <= 0:
            raise ValueError(
                f"expected x, y >= 0 and width, height > 0 in [x, y, width, height], "
                f"got {_shown(value)}"
            )
        return tuple(int(v) for v in value)

    @model_validator(mode="after")
    def _one(self) -> CropSpec:
        if (self.box is None) == (self.center is None):
            raise ValueError("crop takes either `box: [x, y, width, height]` or `center: [h, w]`")
        return self

    def _extent(self) -> tuple[int, int, int, int]:
        """Minimum image size needed (height, width) and the crop size (height, width)."""
        if self.box is not None:
            x, y, w, h = self.box
            return y + h, x + w, h, w
        assert self.center is not None
        return (*self.center, *self.center)

    def output(self, given: ArraySpec) -> ArraySpec:
        c = _image_output(given, "crop")
        need_h, need_w, h, w = self._extent()
        have_h, have_w = _height_width(given)
        if (have_h is not None and have_h < need_h) or (have_w is not None and have_w < need_w):
            raise ConfigError(
                f"crop needs an image of at least {need_h}x{need_w} (h x w), "
                f"but gets {given.describe()}"
            )
        return ArraySpec((h, w, c), given.dtype, "HWC")

    def build(self) -> Stage:
        return _Crop(self.box, self.center)


@dataclass(frozen=True, slots=True)
class _Crop:
    box: tuple[int, int, int, int] | None
    center: tuple[int, int] | None

    def __call__(self, item: Item) -> Item:
        data = image_of(item, "crop")
        height, width = data.shape[:2]
        if self.box is not None:
            x, y, w, h = self.box
        else:
            assert self.center is not None
            h, w = self.center
            x, y = (width - w) // 2, (height - h) // 2
        if x < 0 or y < 0 or x + w > width or y + h > height:
            raise ItemError(
                f"crop [x={x}, y={y}, width={w}, height={h}] does not fit a {width}x{height} image",
                item.position,
            )
        out = np.ascontiguousarray(data[y : y + h, x : x + w])
        compose(item, data, out, 1.0, 1.0, float(-x), float(-y))
        item.data = out
        return item


class ColourSpec(PreprocessSpec):
    """Convert RGB (the sources' order) to ``rgb``, ``bgr`` or ``gray``.

    Gray keeps a channel axis of 1, ``(H, W, 1)``, so later steps and the
    model see the same rank as for colour; a 1-channel image becomes
    ``rgb``/``bgr`` by repeating its channel.

    >>> ColourSpec(type="colour", to="gray").output(ArraySpec((8, 8, 3), "uint8")).describe()
    '(8, 8, 1) uint8 HWC'
    """

    needs = ("cv2",)

    type: Literal["colour"]
    to: Literal["rgb", "bgr", "gray"]

    def output(self, given: ArraySpec) -> ArraySpec:
        c = _image_output(given, "colour")
        if c is not None and c not in (1, 3):
            raise ConfigError(f"colour needs 1 or 3 channels (RGB), but gets {given.describe()}")
        return ArraySpec((*_height_width(given), 1 if self.to == "gray" else 3), given.dtype, "HWC")

    def build(self) -> Stage:
        return _Colour(self.to)


_GRAY = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma, as OpenCV uses


@dataclass(frozen=True, slots=True)
class _Colour:
    to: str

    def __call__(self, item: Item) -> Item:
        data = image_of(item, "colour")
        c = data.shape[2]
        if c not in (1, 3):
            raise ItemError(
                f"colour needs 1 or 3 channels, got shape {list(data.shape)}", item.position
            )
        if c == 1:
            if self.to != "gray":
                item.data = np.repeat(data, 3, axis=2)
            return item
        if self.to == "bgr":
            item.data = np.ascontiguousarray(data[:, :, ::-1])
        elif self.to == "gray":
            if data.dtype.name in ("uint8", "uint16", "float32"):
                cv2 = optional("cv2")
                gray = cv2.cvtColor(data, cv2.COLOR_RGB2GRAY)
            else:
                gray = (data @ _GRAY).astype(data.dtype)
            item.data = gray.reshape(*gray.shape[:2], 1)
        return item
