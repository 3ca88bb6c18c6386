""":func:`load_dataset`: one entry for the three ways to write a data set, and ``.npz`` files."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fogline.data._dataset import LABELS_KEY, Dataset, check_fits, split_batches
from fogline.data._function import from_function
from fogline.data._images import from_images
from fogline.errors import DataError
from fogline.model import Signature


@dataclass(frozen=True)
class Arrays:
    """An ``.npz``'s arrays already in memory, under a name for messages and provenance.

    Labelled captures sealed with a device key are opened in memory and
    handed on as this, so that they never reach the disk in plain.
    """

    name: str
    arrays: Mapping[str, np.ndarray] = field(repr=False)

    def __str__(self) -> str:
        return self.name


def load_dataset(spec: str | Arrays, signature: Signature, *, batch_size: int = 32) -> Dataset:
    """Read ``spec`` (an ``.npz``, an image folder, or ``module:function``) to fit ``signature``.

    An ``.npz`` holds one array per input and, optionally, ``labels``; a
    function yields batches (dicts of arrays, ``labels`` among them when
    known, or bare arrays for a one-input model).

    >>> import tempfile, pathlib, numpy as np
    >>> from fogline.model import Signature, TensorSpec
    >>> signature = Signature((TensorSpec("x", "float32", ("batch", 4)),), ())
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.npz"
    >>> np.savez(path, x=np.zeros((70, 4), np.float32), labels=np.arange(70))
    >>> data = load_dataset(str(path), signature)
    >>> [len(b["x"]) for b in data.batches], data.size
    ([32, 32, 6], 70)
    """
    if isinstance(spec, Arrays):
        return _from_arrays(dict(spec.arrays), spec.name, signature, batch_size)
    path = Path(spec)
    if path.suffix == ".npz" or path.is_file():
        return _from_npz(path, signature, batch_size)
    if path.is_dir():
        return from_images(path, signature, batch_size)
    if ":" in spec and not path.exists():
        return from_function(spec, signature)
    raise DataError(
        f"{spec}: no such file or folder; data is an .npz file, a folder of images, "
        "or a Python callable written module:function"
    )


def _from_npz(path: Path, signature: Signature, batch_size: int) -> Dataset:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file: {exc}") from exc
    return _from_arrays(arrays, str(path), signature, batch_size)


def _from_arrays(
    arrays: dict[str, np.ndarray], path: str, signature: Signature, batch_size: int
) -> Dataset:
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
    batches = split_batches(arrays, batch_size)
    check_fits(batches, signature, path)
    return Dataset(path, batches, None if labels is None else np.asarray(labels))
