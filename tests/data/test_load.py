"""Reading calibration and evaluation data from .npz files, image folders and callables."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fogline.data import load_dataset
from fogline.errors import DataError
from fogline.model import Signature, TensorSpec

GRAY = Signature((TensorSpec("pixels", "float32", ("batch", 1, 8, 8)),), ())
RGB_NHWC = Signature((TensorSpec("image", "float32", (None, 16, 12, 3)),), ())


def test_npz_is_split_into_batches_with_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, pixels=np.ones((70, 1, 8, 8), np.float32), labels=np.arange(70))
    data = load_dataset(str(path), GRAY, batch_size=32)
    assert [len(b["pixels"]) for b in data.batches] == [32, 32, 6]
    assert data.size == 70 and data.labels is not None and list(data.labels[:3]) == [0, 1, 2]
    assert data.limit(40).size == 40 and data.limit(40).labels is not None


def test_npz_with_arrays_of_different_lengths_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, pixels=np.ones((7, 1, 8, 8), np.float32), labels=np.arange(6))
    with pytest.raises(DataError, match="differ in length"):
        load_dataset(str(path), GRAY)


def test_a_corrupt_npz_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_dataset(str(path), GRAY)


def test_image_folder_with_label_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(3):
            pixels = rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    data = load_dataset(str(tmp_path), RGB_NHWC)
    batch = data.batches[0]["image"]
    assert batch.shape == (6, 16, 12, 3) and batch.dtype == np.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    assert data.labels is not None and sorted(data.labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_image_folder_in_channels_first_layout(tmp_path):
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(tmp_path / "white.png")
    data = load_dataset(str(tmp_path), GRAY)
    assert data.batches[0]["pixels"].shape == (1, 1, 8, 8)
    assert np.allclose(data.batches[0]["pixels"], 1.0) and data.labels is None


def test_a_broken_image_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"bad\.png"):
        load_dataset(str(tmp_path), GRAY)


def test_callable_data_and_its_errors():
    data = load_dataset("fogline.examples:digits_eval", GRAY)
    assert data.labels is not None and data.size == len(data.labels) == 597
    with pytest.raises(DataError, match="cannot import"):
        load_dataset("fogline.examples:no_such_function", GRAY)
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset("missing-folder", GRAY)


def test_a_function_yielding_labels_of_the_wrong_length_is_refused(tmp_path, monkeypatch):
    (tmp_path / "short_labels.py").write_text(
        "import numpy as np\n"
        "def data():\n"
        "    yield {'pixels': np.zeros((4, 1, 8, 8), np.float32), 'labels': np.arange(3)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DataError, match="4 items but 3 labels"):
        load_dataset("short_labels:data", GRAY)
