"""Image folders: every image resized to the model's input, scaled to 0..1, in its layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fogline.data._dataset import Dataset, check_fits, split_batches
from fogline.errors import DataError
from fogline.model import Signature, TensorSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def from_images(folder: Path, signature: Signature, batch_size: int) -> Dataset:
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
    batches = split_batches({spec.name: stacked}, batch_size)
    check_fits(batches, signature, str(folder))
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
