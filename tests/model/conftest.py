"""Shared fixtures for the ``fogline.model`` tests: the bundled models and their data.

Everything here is real: the digits ONNX model that ships with fogline, the
LiteRT build of the same classifier in ``examples/tflite`` and the digits
images that scikit-learn ships. Nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fogline.examples import digits_model_path, digits_split

REPO = Path(__file__).resolve().parents[2]
TFLITE_DIR = REPO / "examples" / "tflite"


@pytest.fixture(scope="session")
def digits_onnx() -> Path:
    """The bundled FP32 digits model: ``pixels`` [batch,1,8,8] → ``logits`` [batch,10]."""
    return digits_model_path()


@pytest.fixture(scope="session")
def digits_tflite() -> Path:
    """The same classifier as a float32 ``.tflite`` (NHWC input, dynamic batch)."""
    return TFLITE_DIR / "digits.tflite"


@pytest.fixture(scope="session")
def digits_reference() -> dict[str, np.ndarray]:
    """Keras' own ``logits`` on four ``pixels`` images, to check LiteRT against."""
    with np.load(TFLITE_DIR / "digits_reference.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def eval_pixels() -> np.ndarray:
    """The held-out digits images, [n,1,8,8] float32 in 0..1."""
    pixels, _ = digits_split("eval")
    return pixels


@pytest.fixture(scope="session")
def train_split() -> tuple[np.ndarray, np.ndarray]:
    """The training digits, flattened to 64 float32 features per row, with labels."""
    pixels, labels = digits_split("train")
    return pixels.reshape(len(pixels), -1), labels


@pytest.fixture
def digits_copy(tmp_path: Path, digits_onnx: Path) -> Path:
    """A private copy of the digits model, safe to modify, alone in its folder."""
    folder = tmp_path / "digits"
    folder.mkdir()
    target = folder / "model.onnx"
    shutil.copyfile(digits_onnx, target)
    return target
