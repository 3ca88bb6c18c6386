"""Weights on the wire: the global model down, a client's change up, checked on arrival.

Both are numpy's ``.npz`` format (a zip of ``.npy`` arrays, deflated), read
with ``allow_pickle=False``, so a blob from a device is data, never code:

* :func:`encode_weights` / :func:`decode_weights`: the global model, exactly
  (each tensor in its own dtype).
* :func:`encode_update` / :func:`decode_update`: what a client sends, its
  change from the global model of the round as one deflated ``float16``
  vector (half of Flower's ``float32`` arrays before deflate, and no
  per-tensor headers: the names and shapes are the model's; the rounding, at
  most 2**-11 of each coordinate of the change, is far below what one round
  of SGD moves). Decoding checks the number of values against the global
  model and refuses NaN or Inf, with an :class:`~fogline.errors.ItemError`
  that says which.

>>> import numpy as np
>>> base = Weights({"W": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)})
>>> trained = base.like(np.linspace(-0.1, 0.1, base.size))
>>> blob = encode_update(trained, base)
>>> len(blob) < 2 * base.size  # under half of float32's 4 bytes a coordinate
True
>>> back = decode_update(blob, base)
>>> bool(np.allclose(back.vector(), trained.vector(), atol=1e-4))
True
"""

from __future__ import annotations

import io
import zipfile
import zlib
from typing import Any

import numpy as np

from fogline.errors import ItemError
from fogline.federated.strategy import Weights

__all__ = ["decode_update", "decode_weights", "encode_update", "encode_weights"]

#: How an update's change is sent (half the bytes of float32).
UPDATE_DTYPE = np.dtype("<f2")
#: A decoded blob may not hold more than this many bytes of arrays (a zip bomb is refused).
MAX_EXPANSION = 64


def _pack(arrays: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _unpack(blob: bytes, where: str, limit: int) -> dict[str, np.ndarray[Any, Any]]:
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            declared = sum(info.file_size for info in archive.infolist())
        if declared > limit:
            raise ItemError(f"{declared} bytes of arrays, more than the model's {limit}", where)
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except ItemError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise ItemError(f"not an .npz of weights: {exc}", where) from None


def encode_weights(weights: Weights) -> bytes:
    """The weights as a deflated ``.npz``, each tensor in its own dtype."""
    return _pack(dict(weights.arrays))


def decode_weights(blob: bytes, where: str = "the global model") -> Weights:
    """Weights from :func:`encode_weights`; ItemError when the blob is not that."""
    arrays = _unpack(blob, where, MAX_EXPANSION * max(len(blob), 1 << 20))
    try:
        weights = Weights(arrays)
    except Exception as exc:
        raise ItemError(str(exc), where) from None
    _finite(weights.arrays, where)
    return weights


def encode_update(trained: Weights, base: Weights) -> bytes:
    """A client's change ``trained - base``: one little-endian ``float16`` vector, deflated.

    The vector runs over the tensors in the model's order; names and shapes
    are the model's, so they are not sent.
    """
    delta = trained.vector() - base.vector()
    return zlib.compress(delta.astype(UPDATE_DTYPE).tobytes(), 6)


def decode_update(blob: bytes, base: Weights, where: str = "the update") -> Weights:
    """The trained weights ``base + change`` from :func:`encode_update`, checked against ``base``.

    An ItemError names what is wrong: not deflated data, a number of values
    that is not the model's, NaN or Inf.
    """
    expected = base.size * UPDATE_DTYPE.itemsize
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(blob, expected + 1)  # never inflates more than it may hold
    except zlib.error as exc:
        raise ItemError(f"not a deflated float16 vector: {exc}", where) from None
    if len(raw) != expected or inflater.unconsumed_tail or not inflater.eof:
        got = "more" if len(raw) > expected or inflater.unconsumed_tail else f"{len(raw) // 2}"
        raise ItemError(
            f"{got} float16 values where the model has {base.size} "
            f"({', '.join(f'{n} {tuple(a.shape)}' for n, a in base.arrays.items())})",
            where,
        )
    change = np.frombuffer(raw, dtype=UPDATE_DTYPE).astype(np.float64)
    if not np.all(np.isfinite(change)):
        bad = int(np.flatnonzero(~np.isfinite(change))[0])
        raise ItemError(f"value {bad} of the change is NaN or Inf", where)
    return base.like(base.vector() + change)


def _finite(arrays: Any, where: str) -> None:
    for name, array in arrays.items():
        if not np.all(np.isfinite(array)):
            raise ItemError(f"tensor {name!r} holds NaN or Inf", where)
