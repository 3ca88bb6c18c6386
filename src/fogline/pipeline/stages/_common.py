"""What the stage modules share: strict field types, item checks, geometry, outputs, labels.

Field types validate *before* pydantic's lax coercion, so a YAML slip such as
``size: "224"`` is refused with a message that names it instead of being
read as something else. Runtime helpers turn bad data into
:class:`~fogline.errors.ItemError` carrying the item's position, never a
numpy traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, ValidationInfo

from fogline.errors import ConfigError, ItemError
from fogline.model import Signature, TensorSpec
from fogline.pipeline._base import ArraySpec
from fogline.pipeline._item import Item

Geometry = tuple[float, float, float, float]


def _shown(value: Any) -> str:
    """The value as the user wrote it (JSON-ish: strings in double quotes)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    """A number that is a finite float; YAML and JSON allow integers past float's range (1e400)."""
    if not _is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _positive_int(value: Any) -> Any:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"expected a positive integer, got {_shown(value)}")
    return int(value)


def _pair(value: Any) -> Any:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"expected two integers [height, width], got {_shown(value)}")
    if not all(_is_int(v) and v > 0 for v in value):
        raise ValueError(f"expected two positive integers [height, width], got {_shown(value)}")
    return (int(value[0]), int(value[1]))


def _numbers(value: Any) -> Any:
    if _is_number(value):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"expected a number or a non-empty list of numbers, got {_shown(value)}")
    if not all(_is_finite(v) for v in value):
        raise ValueError(f"expected finite numbers, got {_shown(value)}")
    return tuple(float(v) for v in value)


def _finite(value: Any) -> Any:
    if not _is_finite(value):
        raise ValueError(f"expected a number, got {_shown(value)}")
    return float(value)


def _fraction(value: Any) -> Any:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"expected a number from 0 to 1, got {_shown(value)}")
    return float(value)


def _labels(value: Any, info: ValidationInfo) -> Any:
    """Labels inline (a list; numbers become strings) or from a text file, one per line."""
    if value is None:
        return None
    if isinstance(value, str | Path):
        path = Path(value).expanduser()
        base = (info.context or {}).get("base")
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read labels from {path}: {exc.strerror or exc}") from exc
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise ValueError(f"labels file {path} is empty")
        return tuple(line.strip() for line in lines)
    if isinstance(value, list | tuple) and value:
        if not all(isinstance(v, str) or _is_number(v) for v in value):
            raise ValueError(f"expected labels as strings, got {_shown(value)}")
        return tuple(str(v) for v in value)
    raise ValueError(f"expected a list of labels or a path to a text file, got {_shown(value)}")


#: A positive integer; strings, booleans and floats are refused.
PositiveInt = Annotated[int, BeforeValidator(_positive_int)]
#: ``[height, width]``, two positive integers.
HeightWidth = Annotated[tuple[int, int], BeforeValidator(_pair)]
#: One number or a non-empty list of finite numbers (one per channel).
Numbers = Annotated[tuple[float, ...], BeforeValidator(_numbers)]
#: A finite number (a string such as "0.5" is refused).
Finite = Annotated[float, BeforeValidator(_finite)]
#: A threshold from 0 to 1.
Fraction = Annotated[float, BeforeValidator(_fraction)]
#: Class labels: a list, or a text file with one label per line (``None``: the index).
Labels = Annotated[tuple[str, ...] | None, BeforeValidator(_labels)]


# --- runtime checks on items -----------------------------------------------------------------


def array_of(item: Item, what: str, rank: int | None = None) -> np.ndarray:
    """``item.data`` as an array of ``rank`` dims, or :class:`ItemError`."""
    data = item.data
    if not isinstance(data, np.ndarray):
        raise ItemError(f"{what} needs an array, got {type(data).__name__}", item.position)
    if rank is not None and data.ndim != rank:
        raise ItemError(
            f"{what} needs rank-{rank} data, got shape {list(data.shape)}", item.position
        )
    return data


def image_of(item: Item, what: str) -> np.ndarray:
    """``item.data`` as an HWC image with at least one pixel, or :class:`ItemError`."""
    data = array_of(item, what, 3)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise ItemError(f"{what} got an empty image {list(data.shape)}", item.position)
    return data


def check_dtype(given: ArraySpec, allowed: Sequence[str], what: str) -> None:
    if given.dtype is not None and given.dtype not in allowed:
        raise ConfigError(
            f"{what} takes {', '.join(allowed)} data, but gets {given.describe()}; "
            "add a cast step before it"
        )


def channels(given: ArraySpec) -> int | None:
    """The known channel count of channels-last data (``None`` when unknown)."""
    return None if not given.shape else given.shape[-1]


# --- geometry (see the contract: model = source * s + t) -------------------------------------


def compose(
    item: Item, before: np.ndarray, after: np.ndarray, sx: float, sy: float, tx: float, ty: float
) -> None:
    """Compose this step's map (``out = in * s + t``) onto ``meta["geometry"]``.

    The first geometric step also records ``meta["source_size"]`` (width,
    height) from ``before``; every step records ``meta["model_size"]``, the
    image size after it, which decoders of normalized boxes need.
    """
    meta = item.meta
    if "source_size" not in meta:
        meta["source_size"] = (int(before.shape[1]), int(before.shape[0]))
    gx, gy, hx, hy = meta.get("geometry", (1.0, 1.0, 0.0, 0.0))
    meta["geometry"] = (gx * sx, gy * sy, hx * sx + tx, hy * sy + ty)
    meta["model_size"] = (int(after.shape[1]), int(after.shape[0]))


def to_source(boxes: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Map ``(N, 4)`` boxes ``x1, y1, x2, y2`` from model pixels to source pixels, clipped."""
    sx, sy, tx, ty = meta.get("geometry", (1.0, 1.0, 0.0, 0.0))
    out = np.empty_like(boxes, dtype=np.float64)
    out[:, 0::2] = (boxes[:, 0::2] - tx) / sx
    out[:, 1::2] = (boxes[:, 1::2] - ty) / sy
    size = meta.get("source_size")
    if size is not None:
        np.clip(out[:, 0::2], 0.0, float(size[0]), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(size[1]), out=out[:, 1::2])
    return out


# --- model outputs ---------------------------------------------------------------------------


def pick_output(outputs: Signature, name: str | None, what: str) -> TensorSpec:
    """The output ``name`` (or the only output when ``name`` is None), or :class:`ConfigError`."""
    names = ", ".join(outputs.output_names) or "none"
    if name is None:
        if len(outputs.outputs) != 1:
            raise ConfigError(
                f"{what}: the model has {len(outputs.outputs)} outputs ({names}); "
                "say which one with `output`"
            )
        return outputs.outputs[0]
    for spec in outputs.outputs:
        if spec.name == name:
            return spec
    raise ConfigError(f"{what}: the model has no output {name!r}; it has {names}")


def per_item(spec: TensorSpec) -> tuple[int | None, ...]:
    """An output's shape without its batch dim (what ``item.outputs`` holds); None = unknown."""
    return tuple(d if isinstance(d, int) else None for d in spec.shape[1:])


def output_of(item: Item, name: str, what: str) -> np.ndarray:
    try:
        return item.outputs[name]
    except KeyError:
        raise ItemError(f"{what}: the item has no model output {name!r}", item.position) from None


def need(produced: frozenset[str], key: str, what: str) -> None:
    if key not in produced:
        known = ", ".join(sorted(produced)) or "none"
        raise ConfigError(f"{what} needs result[{key!r}] from an earlier step; known: {known}")


def label_of(labels: tuple[str, ...] | None, index: int) -> str:
    if labels is not None and 0 <= index < len(labels):
        return labels[index]
    return str(index)
