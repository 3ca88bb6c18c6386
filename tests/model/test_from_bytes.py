"""Engines load a model from bytes (a sealed file opened in memory) and run it as from its file.

Each backend is held to the same promise on a real model: loaded through a
:data:`~fogline.model.ModelReader` it gives exactly the outputs it gives
when it reads the file itself, and bad bytes are a ModelFormatError naming
the model. The reader here is a stand-in for unsealing (the test is about
the engines); sealed files themselves are in ``tests/security``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fogline.errors import ManifestError, ModelFormatError
from fogline.model import BACKENDS, load_engine, open_model

MODELS = {"onnxruntime": "digits_onnx", "openvino": "digits_onnx", "litert": "digits_tflite"}


class Reader:
    """Hands over every file's bytes, and records which files it was asked for."""

    def __init__(self, change: bytes | None = None) -> None:
        self.asked: list[str] = []
        self.change = change

    def __call__(self, path: Path) -> bytes | None:
        self.asked.append(Path(path).name)
        data = Path(path).read_bytes()
        return data if self.change is None else self.change


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_runs_a_model_from_bytes_as_from_its_file(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # Prepare
    path: Path = request.getfixturevalue(MODELS[backend])
    from_file = load_engine(path, backend=backend)
    feeds = from_file.signature.sample_feeds(batch=3)
    reader = Reader()
    # Execute
    from_bytes = load_engine(path, backend=backend, read=reader)
    # Assert
    assert reader.asked == [path.name]
    assert from_bytes.signature == from_file.signature
    expected, got = from_file.run(feeds), from_bytes.run(feeds)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_openvino_reads_an_ir_and_its_weights_from_memory(
    digits_onnx: Path, tmp_path: Path
) -> None:
    import openvino as ov

    ov.save_model(ov.Core().read_model(str(digits_onnx)), str(tmp_path / "digits.xml"))
    reader = Reader()
    from_file = load_engine(tmp_path / "digits.xml")
    from_bytes = load_engine(tmp_path / "digits.xml", read=reader)
    feeds = from_file.signature.sample_feeds(batch=2)
    assert sorted(reader.asked) == ["digits.bin", "digits.xml"]
    np.testing.assert_array_equal(from_bytes.run(feeds)["logits"], from_file.run(feeds)["logits"])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_bytes_that_are_no_model_are_refused_naming_it(backend: str, digits_onnx: Path) -> None:
    data = digits_onnx.read_bytes()
    for bad in (b"", data[: len(data) // 2], b"not a model at all"):
        with pytest.raises(ModelFormatError, match=r"model\.onnx"):
            load_engine(digits_onnx, backend=backend, read=lambda _p, b=bad: b)


def test_a_manifest_is_checked_on_the_bytes_that_are_loaded(digits_onnx: Path) -> None:
    # Prepare: the bundled model folder has a manifest naming the file's size and sha256
    folder = digits_onnx.parent
    data = digits_onnx.read_bytes()
    # Execute / Assert: the same bytes pass; other bytes fail, although the file is intact
    opened = open_model(folder, read=Reader())
    assert opened.name == "digits"
    altered = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(ManifestError, match="sha256"):
        open_model(folder, read=Reader(change=altered))


def test_a_reader_that_leaves_a_file_to_the_engine_reads_it_from_disk(digits_onnx: Path) -> None:
    engine = load_engine(digits_onnx, read=lambda _path: None)
    assert engine.run(engine.signature.sample_feeds(batch=1))["logits"].shape == (1, 10)
