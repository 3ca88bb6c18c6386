"""The bundled example: a digits classifier trained on scikit-learn's ``load_digits``.

The model file ships with fogline; the data is built from the copy of the
digits set that scikit-learn ships, so nothing is ever downloaded. The
calibration and evaluation functions can be named on the command line as
``fogline.examples:digits_calibration`` and ``fogline.examples:digits_eval``.

The shapes detector (``shapes_model_path``, a tiny YOLO-style network) and
its scenes (``fogline.examples:shapes_eval`` and friends) live in
:mod:`fogline.examples._shapes`; its PyTorch side and the architecture
search's family in :mod:`fogline.examples.shapes_torch`.

For federated learning: ``digits_task`` (``fogline fl simulate --task``),
``digits_device_data`` (one device's part of its training set) and the
``learner`` release folder :func:`digits_learner_path`, ready for
``fogline release create``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fogline.data import import_function
from fogline.errors import ConfigError, DataError
from fogline.examples._shapes import (
    SHAPES_LABELS,
    SHAPES_SIZE,
    Detections,
    shapes_calibration,
    shapes_detections,
    shapes_eval,
    shapes_map50,
    shapes_model_path,
    shapes_scene,
    shapes_split,
    shapes_train,
)

_HERE = Path(__file__).parent / "digits"
_LEARNER = Path(__file__).parent / "digits_learner"
_OFFLOAD = Path(__file__).parent / "digits_offload"
TRAIN_SIZE = 1200
LABELS = [str(i) for i in range(10)]
#: Pixel values in load_digits run 0..16; the model takes them scaled to 0..1.
PIXEL_SCALE = 1.0 / 16.0


def digits_model_path() -> Path:
    """Path of the bundled FP32 digits model (``pixels`` [batch,1,8,8] → ``logits`` [batch,10])."""
    return _HERE / "model.onnx"


def digits_learner_path() -> Path:
    """The bundled ``learner`` release folder: ``learner.yaml`` training ``digits_task``.

    Each device trains on its own third of the digits training set
    (:func:`digits_device_data` with ``clients: 3``).
    """
    return _LEARNER


def digits_offload_path() -> Path:
    """The offload example's folder: ``pipeline.yaml`` and ``models/``, a repository for
    ``fogline serve`` holding ``digits-teacher`` (see ``docs/offload.md``)."""
    return _OFFLOAD


def digits_teacher_path() -> Path:
    """The digits teacher: bigger and more accurate than :func:`digits_model_path`, same signature."""
    return _OFFLOAD / "models" / "digits-teacher" / "1" / "model.onnx"


def digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(pixels, labels)`` of the ``train`` or ``eval`` split, shuffled with a fixed seed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DataError(
            "the digits example needs scikit-learn: pip install 'fogline[examples]'"
        ) from exc
    data = load_digits()
    order = np.random.default_rng(0).permutation(len(data.target))
    pixels = (data.images[order] * PIXEL_SCALE).astype(np.float32)[:, None, :, :]
    labels = data.target[order].astype(np.int64)
    if split == "train":
        return pixels[:TRAIN_SIZE], labels[:TRAIN_SIZE]
    if split == "eval":
        return pixels[TRAIN_SIZE:], labels[TRAIN_SIZE:]
    raise DataError(f"unknown digits split {split!r}; use 'train' or 'eval'")


def digits_calibration() -> Iterator[dict[str, np.ndarray]]:
    """256 training images in batches of 32, for INT8 calibration."""
    pixels, _ = digits_split("train")
    for start in range(0, 256, 32):
        yield {"pixels": pixels[start : start + 32]}


def digits_train() -> Iterator[dict[str, np.ndarray]]:
    """The training images with their labels, in batches of 64 (for fine-tuning)."""
    pixels, labels = digits_split("train")
    for start in range(0, len(labels), 64):
        yield {"pixels": pixels[start : start + 64], "labels": labels[start : start + 64]}


def digits_eval() -> Iterator[dict[str, np.ndarray]]:
    """The held-out images with their labels, in batches of 64."""
    pixels, labels = digits_split("eval")
    for start in range(0, len(labels), 64):
        yield {"pixels": pixels[start : start + 64], "labels": labels[start : start + 64]}


def digits_stream() -> tuple[np.ndarray, np.ndarray]:
    """The held-out images as a camera would give them: uint8 8x8 grey levels 0..16, and labels.

    The pipeline demo replays these; its preprocessing scales them the way
    the model was trained (``normalize`` with ``scale: PIXEL_SCALE``).
    """
    pixels, labels = digits_split("eval")
    raw = np.rint(pixels[:, 0] / PIXEL_SCALE).astype(np.uint8)
    return raw, labels


#: Where :func:`digits_drifting_stream` changes: the index of its first changed image.
DRIFT_AT = 1797 - TRAIN_SIZE


def digits_drifting_stream(change: str = "shift") -> tuple[np.ndarray, np.ndarray]:
    """:func:`digits_stream`, then the same images changed: a stream that drifts at :data:`DRIFT_AT`.

    ``change`` is ``shift`` (moved two pixels to the right, as a knocked
    camera would) or ``invert`` (light digits on dark: ``16 - x``). Labels
    stay, so accuracy after the change can be measured.

    >>> pixels, labels = digits_drifting_stream()
    >>> pixels.shape, len(labels), DRIFT_AT
    ((1194, 8, 8), 1194, 597)
    >>> bool((pixels[DRIFT_AT][:, 2:] == pixels[0][:, :-2]).all())
    True
    """
    raw, labels = digits_stream()
    if change == "shift":
        changed = np.zeros_like(raw)
        changed[:, :, 2:] = raw[:, :, :-2]
    elif change == "invert":
        changed = (16 - raw).astype(np.uint8)
    else:
        raise DataError(f"unknown change {change!r}; use 'shift' or 'invert'")
    return np.concatenate([raw, changed]), np.concatenate([labels, labels])


__all__ = [
    "DRIFT_AT",
    "LABELS",
    "PIXEL_SCALE",
    "SHAPES_LABELS",
    "SHAPES_SIZE",
    "Detections",
    "digits_calibration",
    "digits_device_data",
    "digits_drifting_stream",
    "digits_eval",
    "digits_learner_path",
    "digits_model_path",
    "digits_offload_path",
    "digits_split",
    "digits_stream",
    "digits_task",
    "digits_teacher_path",
    "digits_torch_task",
    "digits_train",
    "shapes_calibration",
    "shapes_detections",
    "shapes_eval",
    "shapes_map50",
    "shapes_model_path",
    "shapes_scene",
    "shapes_split",
    "shapes_train",
]


def digits_task() -> dict[str, object]:
    """The federated digits task for the numpy softmax trainer (no torch needed).

    ``fogline fl simulate --task fogline.examples:digits_task``: inputs are the
    64 pixels flattened (``pixels`` [batch, 64]), the softmax weights start at zero.
    """
    (X, y), (Xt, yt) = digits_split("train"), digits_split("eval")
    return {
        "weights": {"W": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)},
        "train": (X.reshape(len(X), 64), y),
        "test": (Xt.reshape(len(Xt), 64), yt),
        "lr": 0.5,
        "batch_size": 16,
        "input_names": ["pixels"],
    }


def digits_torch_task() -> dict[str, object]:
    """The federated digits task with a tiny torch MLP (``pip install 'fogline[train]'``)."""
    from fogline.examples.digits_torch import federated_mlp

    return {
        "model": federated_mlp(),
        "train": digits_split("train"),
        "test": digits_split("eval"),
        "lr": 0.1,
        "batch_size": 16,
        "input_names": ["pixels"],
    }


def device_part(device_id: str, clients: int) -> int:
    """Which of ``clients`` parts a device holds: the trailing number of its id, else a hash.

    >>> device_part("edge-07", 10), device_part("edge-13", 10)
    (7, 3)
    >>> 0 <= device_part("camera", 10) < 10
    True
    """
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ConfigError(f"clients must be a positive integer, not {clients!r}")
    number = re.search(r"(\d+)$", device_id)
    if number is not None:
        return int(number.group(1)) % clients
    return int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "big") % clients


def digits_device_data(
    device_id: str, clients: int = 10, split: str = "dirichlet:0.5", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One device's own ``(X, y)``: its part of :func:`digits_task`'s training set.

    The training set (pixels flattened to 64, as ``digits_task`` has them) is
    split among ``clients`` the way ``fogline fl simulate --split`` does
    (``iid``, ``dirichlet:ALPHA``, ``shards:K``; the same ``seed``, the same
    parts); the device gets part :func:`device_part`. A ``learner.yaml``
    names it as ``data: fogline.examples:digits_device_data``.

    >>> X, y = digits_device_data("edge-2", clients=3, split="iid")
    >>> X.shape[1], len(X) == len(y), 390 < len(y) < 410
    (64, True, True)
    """
    # Looked up by name: fogline.federated sits above the examples in the layering
    # table (tests/test_layering.py), and only this function needs it.
    spec: Any = import_function("fogline.federated:SplitSpec")
    split_clients = import_function("fogline.federated:split_clients")
    X, y = digits_split("train")
    parts = split_clients((X.reshape(len(X), 64), y), clients, spec.parse(split), seed)
    part: tuple[np.ndarray, np.ndarray] = parts[device_part(device_id, clients)]
    return part
