"""A model sealed with a device key runs only where the key is; elsewhere it is a clear error.

The sealed file is opened in memory by :class:`fogline.security.SealedFiles`
(what ``fogline run``, ``fogline serve`` and the agent's health check use);
a copy of it holds no byte sequence of the model and opens with no other key.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fogline.cli import main
from fogline.errors import KeyUnavailable, ModelFormatError, WrongKey
from fogline.examples import digits_model_path
from fogline.model import open_model
from fogline.security import (
    DeviceKey,
    KeySource,
    SealedFiles,
    init_device_key,
)
from support.digits_pipeline import digits_spec, write_spec
from support.leaks import holds_a_slice_of


@pytest.fixture
def sealed_folder(tmp_path: Path) -> tuple[Path, Path]:
    """The digits model folder (manifest and all) with its model sealed, and the key file."""
    key_file = tmp_path / "keys" / "device.key"
    init_device_key(key_file)
    folder = tmp_path / "digits"
    shutil.copytree(digits_model_path().parent, folder)
    assert (
        main(["keys", "device", "seal", str(folder / "model.onnx"), "--device-key", str(key_file)])
        == 0
    )
    return folder, key_file


def test_a_sealed_model_holds_no_bytes_of_the_model_and_opens_only_with_its_key(
    sealed_folder: tuple[Path, Path],
) -> None:
    folder, key_file = sealed_folder
    plain = digits_model_path().read_bytes()
    blob = (folder / "model.onnx").read_bytes()
    assert holds_a_slice_of(plain, plain)  # the search itself finds what is there
    assert not holds_a_slice_of(blob, plain, step=64)

    with pytest.raises(WrongKey, match=r"model\.onnx: sealed data did not open"):
        SealedFiles(DeviceKey.generate())(folder / "model.onnx")
    with pytest.raises(
        KeyUnavailable, match=r"model\.onnx is sealed with a device key.*--device-key"
    ):
        SealedFiles(KeySource(environ={}))(folder / "model.onnx")
    assert SealedFiles(KeySource(file=key_file))(folder / "model.onnx") == plain


def test_a_sealed_model_runs_from_memory_with_the_same_outputs(
    sealed_folder: tuple[Path, Path],
) -> None:
    folder, key_file = sealed_folder
    plain = open_model(digits_model_path().parent)
    sealed = open_model(folder, read=SealedFiles(KeySource(file=key_file)))
    feeds = plain.engine.signature.sample_feeds(batch=4)
    np.testing.assert_array_equal(
        sealed.engine.run(feeds)["logits"], plain.engine.run(feeds)["logits"]
    )
    assert sealed.name == "digits"  # its manifest was read and its hash checked on the plain bytes


def test_a_model_is_sealed_once(
    sealed_folder: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, key_file = sealed_folder
    again = main(
        ["keys", "device", "seal", str(folder / "model.onnx"), "--device-key", str(key_file)]
    )
    assert again == 2 and "already sealed" in capsys.readouterr().err


def test_a_cut_sealed_model_is_a_format_error(sealed_folder: tuple[Path, Path]) -> None:
    folder, key_file = sealed_folder
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes()[:20])
    with pytest.raises(ModelFormatError, match="cut short"):
        SealedFiles(KeySource(file=key_file))(folder / "model.onnx")


def test_fogline_check_opens_a_sealed_model_with_device_key_and_says_what_is_missing(
    sealed_folder: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder, key_file = sealed_folder
    for name in ("FOGLINE_DEVICE_KEY", "FOGLINE_DEVICE_KEY_FILE", "FOGLINE_DEVICE_KEY_COMMAND"):
        monkeypatch.delenv(name, raising=False)
    pipeline = write_spec(tmp_path, digits_spec(model={"path": str(folder)}))

    assert main(["check", str(pipeline), "--device-key", str(key_file)]) == 0
    assert "is ready to run" in capsys.readouterr().out

    assert main(["check", str(pipeline)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "model.onnx is sealed with a device key" in err and "--device-key" in err
    assert "Traceback" not in err

    monkeypatch.setenv("FOGLINE_DEVICE_KEY_FILE", str(key_file))  # as the agent gives it
    assert main(["check", str(pipeline)]) == 0
