"""Calibration and evaluation data: ``.npz`` files, image folders, or a callable.

Whatever the source, the result is a :class:`Dataset`: a list of batches
(input name → array) that fit the model's signature, plus the labels when
the source has them. Data that does not fit is refused here, before any
variant is built, with the file and the input named.
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import DataError, SignatureMismatch
from fogline.model import Signature, TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABELS_KEY = "labels"


@dataclass(frozen=True)
class Dataset:
    """Batches of model inputs, and one label per item when known."""

    source: str
    batches: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None = None

    @property
    def size(self) -> int:
        return sum(len(next(iter(b.values()))) for b in self.batches)

    def limit(self, items: int) -> Dataset:
        """The first ``items`` items (whole batches, the last one cut)."""
        kept: list[dict[str, np.ndarray]] = []
        count = 0
        for batch in self.batches:
            if count >= items:
                break
            n = len(next(iter(batch.values())))
            take = min(n, items - count)
            kept.append({k: v[:take] for k, v in batch.items()})
            count += take
        labels = None if self.labels is None else self.labels[:count]
        return Dataset(self.source, tuple(kept), labels)


def load_dataset(spec: str, signature: Signature, *, batch_size: int = 32) -> Dataset:
    """Read ``spec`` (an ``.npz``, an image folder, or ``module:function``)."""
    path = Path(spec)
    if path.suffix == ".npz" or path.is_file():
        return _from_npz(path, signature, batch_size)
    if path.is_dir():
        return _from_images(path, signature, batch_size)
    if ":" in spec and not path.exists():
        return _from_callable(spec, signature)
    raise DataError(
        f"{spec}: no such file or folder; data is an .npz file, a folder of images, "
        "or a Python callable written module:function"
    )


def _split_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int
) -> tuple[dict[str, np.ndarray], ...]:
    n = len(next(iter(arrays.values())))
    return tuple(
        {k: np.ascontiguousarray(v[i : i + batch_size]) for k, v in arrays.items()}
        for i in range(0, n, batch_size)
    )


def _check(batches: Iterable[Mapping[str, np.ndarray]], signature: Signature, where: str) -> None:
    for i, batch in enumerate(batches):
        try:
            signature.check_feeds(batch, where=f"{where} (batch {i})")
        except SignatureMismatch as exc:
            hint = ""
            if "dtype float64" in str(exc):
                hint = "; cast it with .astype('float32') when you build the data"
            raise DataError(f"{exc}{hint}") from exc


def _from_npz(path: Path, signature: Signature, batch_size: int) -> Dataset:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file: {exc}") from exc
    labels = arrays.pop(LABELS_KEY, None)
    if not arrays:
        raise DataError(
            f"{path}: holds no input arrays; it needs key(s) {', '.join(signature.input_names)}"
        )
    lengths = {k: len(v) if v.ndim else 0 for k, v in arrays.items()}
    if labels is not None:
        lengths[LABELS_KEY] = len(labels)
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise DataError(f"{path}: arrays differ in length or are empty: {lengths}")
    batches = _split_batches(arrays, batch_size)
    _check(batches, signature, str(path))
    return Dataset(str(path), batches, None if labels is None else np.asarray(labels))


def _from_callable(spec: str, signature: Signature) -> Dataset:
    module_name, _, func_name = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"{spec}: cannot import {func_name!r} from {module_name!r}: {exc}") from exc
    batches: list[dict[str, np.ndarray]] = []
    labels: list[np.ndarray] = []
    try:
        produced: Iterable[Any] = func()
        for item in produced:
            batch = _as_batch(item, signature, spec)
            if LABELS_KEY in batch:
                labels.append(np.asarray(batch.pop(LABELS_KEY)))
            batches.append(batch)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{spec}: raised {type(exc).__name__}: {exc}") from exc
    if not batches:
        raise DataError(f"{spec}: yielded no batches")
    if labels and len(labels) != len(batches):
        raise DataError(f"{spec}: some batches carry labels and some do not")
    _check(batches, signature, spec)
    return Dataset(spec, tuple(batches), np.concatenate(labels) if labels else None)


def _as_batch(item: Any, signature: Signature, spec: str) -> dict[str, np.ndarray]:
    if isinstance(item, np.ndarray):
        if len(signature.inputs) != 1:
            raise DataError(f"{spec}: yielded a bare array but the model has several inputs")
        return {signature.inputs[0].name: item}
    if isinstance(item, Mapping):
        return {str(k): np.asarray(v) for k, v in item.items()}
    raise DataError(f"{spec}: yields {type(item).__name__}; yield dicts of arrays or arrays")


def _from_images(folder: Path, signature: Signature, batch_size: int) -> Dataset:
    """Images resized to the model's input, scaled to 0..1, in its layout.

    Sub-folders name the labels (``folder/3/img.png`` has label 3) when the
    folder is organized that way, as image data sets usually are.
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise DataError("reading image folders needs Pillow: pip install pillow") from exc
    if len(signature.inputs) != 1:
        raise DataError(f"{folder}: an image folder feeds a model with exactly one input")
    spec = signature.inputs[0]
    channels_first, channels, height, width = _image_layout(spec, folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    mode = "L" if channels == 1 else "RGB"
    images: list[np.ndarray] = []
    for file in files:
        try:
            with Image.open(file) as img:
                array = np.asarray(img.convert(mode).resize((width, height)), dtype=np.float32)
            array /= 255.0
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: cannot read the image: {exc}") from exc
        array = array.reshape(height, width, -1)
        images.append(array.transpose(2, 0, 1) if channels_first else array)
    stacked = np.stack(images).astype(spec.dtype)
    subdirs = {f.parent for f in files}
    labels = None
    if all(f.parent.parent == folder for f in files) and len(subdirs) > 1:
        names = sorted(d.name for d in subdirs)
        codes = [int(n) if n.isdigit() else names.index(n) for n in names]
        lookup = dict(zip(names, codes, strict=True))
        labels = np.asarray([lookup[f.parent.name] for f in files], dtype=np.int64)
    batches = _split_batches({spec.name: stacked}, batch_size)
    _check(batches, signature, str(folder))
    return Dataset(str(folder), batches, labels)


def _image_layout(spec: TensorSpec, folder: Path) -> tuple[bool, int, int, int]:
    """(channels_first, channels, height, width) of a 4-D image input."""
    if spec.rank == 4:
        _, a, b, c = spec.shape
        if a in (1, 3) and isinstance(b, int) and isinstance(c, int):
            return True, int(a), b, c
        if c in (1, 3) and isinstance(a, int) and isinstance(b, int):
            return False, int(c), a, b
    raise DataError(
        f"{folder}: input {spec.name!r} is {spec.describe_shape()}; image folders feed a 4-D "
        "input with 1 or 3 channels and fixed height and width (NCHW or NHWC)"
    )
