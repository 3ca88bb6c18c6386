"""Reading ONNX files: bad files and unsafe external data are refused, naming the file.

Every check runs through ``load_onnx`` and through both engines that read
``.onnx`` files (ONNX Runtime and OpenVINO), because each is a way a model
from elsewhere reaches a runtime.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

from fogline.errors import ModelFormatError
from fogline.model import load_engine, load_onnx, onnx_signature

Loader = Callable[[Path], object]

LOADERS: dict[str, Loader] = {
    "load_onnx": load_onnx,
    "onnxruntime": lambda path: load_engine(path, backend="onnxruntime"),
    "openvino": lambda path: load_engine(path, backend="openvino"),
}
loaders = pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS.keys())

WEIGHTS = np.arange(12, dtype=np.float32).reshape(4, 3)


# --- building small models whose weights live in another file --------------------------------


def external_tensor(name: str, location: str, data_file: Path | None) -> TensorProto:
    """``WEIGHTS`` as a tensor stored at ``location``; its bytes go to ``data_file`` if given."""
    tensor = numpy_helper.from_array(WEIGHTS, name)
    raw = tensor.raw_data
    set_external_data(tensor, location=location, offset=0, length=len(raw))
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    if data_file is not None:
        data_file.write_bytes(raw)
    return tensor


def matmul_model(weights: TensorProto) -> onnx.ModelProto:
    """``Y = X @ W`` with ``W`` an initializer."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "matmul",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def if_model(weights: TensorProto) -> onnx.ModelProto:
    """``Y = W`` chosen by an ``If``: the tensor sits in the branches, not the top graph."""

    def branch(tag: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Constant", [], [f"W_{tag}"], value=weights)],
            f"branch_{tag}",
            [],
            [helper.make_tensor_value_info(f"W_{tag}", TensorProto.FLOAT, [4, 3])],
        )

    graph = helper.make_graph(
        [
            helper.make_node(
                "If", ["cond"], ["Y"], then_branch=branch("then"), else_branch=branch("else")
            )
        ],
        "choose",
        [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """``tmp_path/model``: the model's folder; ``tmp_path`` itself is outside it."""
    folder = tmp_path / "model"
    folder.mkdir()
    return folder


def save(model: onnx.ModelProto, path: Path) -> Path:
    # onnx.save would try to move external data around; write the proto as it is.
    path.write_bytes(model.SerializeToString())
    return path


# --- files that are not models ---------------------------------------------------------------


@loaders
def test_an_empty_file_is_refused(load: Loader, tmp_path: Path):
    # Prepare
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")

    # Execute / Assert
    with pytest.raises(ModelFormatError, match="empty") as info:
        load(path)
    assert str(path) in str(info.value)


@loaders
def test_a_truncated_model_is_refused(load: Loader, tmp_path: Path, digits_onnx: Path):
    # Prepare
    data = digits_onnx.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])

    # Execute / Assert
    with pytest.raises(ModelFormatError) as info:
        load(path)
    assert str(path) in str(info.value)


@loaders
def test_a_text_file_renamed_onnx_is_refused(load: Loader, tmp_path: Path):
    # Prepare
    path = tmp_path / "notes.onnx"
    path.write_text("these are my notes, not a model\nsecond line\n")

    # Execute / Assert
    with pytest.raises(ModelFormatError) as info:
        load(path)
    assert str(path) in str(info.value)


@loaders
def test_a_missing_file_is_refused(load: Loader, tmp_path: Path):
    path = tmp_path / "nowhere.onnx"
    with pytest.raises(ModelFormatError, match="no such model file") as info:
        load(path)
    assert str(path) in str(info.value)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_bytes_give_a_model_or_a_model_format_error(
    data: st.DataObject, digits_onnx: Path, tmp_path_factory: pytest.TempPathFactory
):
    # Prepare: cut the digits model short, or overwrite a few of its bytes
    original = digits_onnx.read_bytes()
    if data.draw(st.booleans(), label="truncate"):
        damaged = original[: data.draw(st.integers(1, len(original) - 1), label="length")]
    else:
        buffer = bytearray(original)
        for _ in range(data.draw(st.integers(1, 8), label="flips")):
            at = data.draw(st.integers(0, min(len(buffer) - 1, 4096)), label="at")
            buffer[at] = data.draw(st.integers(0, 255), label="byte")
        damaged = bytes(buffer)
    path = tmp_path_factory.mktemp("damaged") / "model.onnx"
    path.write_bytes(damaged)

    # Execute / Assert: never a foreign exception
    try:
        load_onnx(path)
    except ModelFormatError as exc:
        assert str(path) in str(exc)


# --- external data ---------------------------------------------------------------------------


@loaders
def test_external_data_outside_the_folder_is_refused(load: Loader, model_dir: Path):
    # Prepare: the data file exists, one level up
    secret = model_dir.parent / "secret.bin"
    path = save(matmul_model(external_tensor("W", "../secret.bin", secret)), model_dir / "m.onnx")
    assert secret.is_file()

    # Execute / Assert
    with pytest.raises(ModelFormatError, match="outside") as info:
        load(path)
    assert str(path) in str(info.value)
    assert "../secret.bin" in str(info.value)


@loaders
def test_external_data_at_an_absolute_path_is_refused(load: Loader, model_dir: Path):
    # Prepare: an absolute path that even points into the model's own folder
    target = model_dir / "weights.bin"
    path = save(matmul_model(external_tensor("W", str(target), target)), model_dir / "m.onnx")

    # Execute / Assert
    with pytest.raises(ModelFormatError, match="not a relative path") as info:
        load(path)
    assert str(path) in str(info.value)


@loaders
def test_external_data_behind_a_symlink_out_of_the_folder_is_refused(load: Loader, model_dir: Path):
    # Prepare: weights.bin inside the folder is a link to a file outside it
    secret = model_dir.parent / "secret.bin"
    tensor = external_tensor("W", "weights.bin", secret)
    os.symlink(secret, model_dir / "weights.bin")
    path = save(matmul_model(tensor), model_dir / "m.onnx")

    # Execute / Assert
    with pytest.raises(ModelFormatError, match="outside") as info:
        load(path)
    assert str(path) in str(info.value)


@loaders
def test_external_data_in_a_subgraph_outside_the_folder_is_refused(load: Loader, model_dir: Path):
    # Prepare: the escaping tensor is a Constant inside the branches of an If
    secret = model_dir.parent / "secret.bin"
    path = save(if_model(external_tensor("W", "../secret.bin", secret)), model_dir / "m.onnx")

    # Execute / Assert
    with pytest.raises(ModelFormatError, match="outside") as info:
        load(path)
    assert str(path) in str(info.value)


@loaders
def test_missing_external_data_is_refused(load: Loader, model_dir: Path):
    path = save(matmul_model(external_tensor("W", "weights.bin", None)), model_dir / "m.onnx")

    with pytest.raises(ModelFormatError, match="missing") as info:
        load(path)
    assert str(path) in str(info.value)
    assert "weights.bin" in str(info.value)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("threshold", [0, 1024], ids=lambda t: f"size_threshold={t}")
def test_external_data_inside_the_folder_loads_and_runs_like_the_original(
    backend: str, threshold: int, digits_copy: Path, eval_pixels: np.ndarray
):
    # Prepare: the digits model re-saved with its weights in weights.bin beside it; with
    # size_threshold=0 even the 16-byte shape of its Reshape goes to the data file.
    folder = digits_copy.parent / "external"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save(
        onnx.load(str(digits_copy)),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=threshold,
    )
    parsed = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == TensorProto.EXTERNAL for t in parsed.graph.initializer)
    feeds = {"pixels": eval_pixels[:32]}

    # Execute
    model = load_onnx(path)
    outputs = load_engine(path, backend=backend).run(feeds)
    expected = load_engine(digits_copy, backend=backend).run(feeds)

    # Assert
    assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer)
    np.testing.assert_array_equal(outputs["logits"], expected["logits"])


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_small_model_with_all_weights_external_runs_like_the_original(
    backend: str, model_dir: Path
):
    # Prepare: the same MatMul model twice, weights inline and weights in weights.bin
    inline = save(matmul_model(numpy_helper.from_array(WEIGHTS, "W")), model_dir / "inline.onnx")
    path = model_dir / "external.onnx"
    onnx.save(
        onnx.load(str(inline)),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    feeds = {"X": np.arange(20, dtype=np.float32).reshape(5, 4)}

    # Execute
    outputs = load_engine(path, backend=backend).run(feeds)
    expected = load_engine(inline, backend=backend).run(feeds)

    # Assert
    assert (model_dir / "weights.bin").is_file()
    np.testing.assert_array_equal(outputs["Y"], expected["Y"])
    np.testing.assert_allclose(outputs["Y"], feeds["X"] @ WEIGHTS)


def test_external_data_inside_the_folder_is_read_by_load_onnx(model_dir: Path):
    # Prepare
    path = save(
        matmul_model(external_tensor("W", "weights.bin", model_dir / "weights.bin")),
        model_dir / "m.onnx",
    )

    # Execute
    model = load_onnx(path)
    lazy = load_onnx(path, with_external_data=False)

    # Assert
    np.testing.assert_array_equal(numpy_helper.to_array(model.graph.initializer[0]), WEIGHTS)
    assert lazy.graph.initializer[0].data_location == TensorProto.EXTERNAL


# --- signature of a parsed model -------------------------------------------------------------


def test_onnx_signature_of_the_digits_model(digits_onnx: Path):
    signature = onnx_signature(load_onnx(digits_onnx), digits_onnx)

    assert signature.input_names == ("pixels",)
    assert signature.output_names == ("logits",)
    assert signature.inputs[0].dtype == "float32"
    assert signature.inputs[0].shape == ("batch", 1, 8, 8)
    assert signature.outputs[0].shape == ("batch", 10)
    assert signature.opset.get("ai.onnx", 0) >= 13
    assert signature.producer


def test_onnx_signature_leaves_out_initializers_listed_as_inputs(model_dir: Path):
    # Prepare: old exporters list every weight among the graph inputs too
    model = matmul_model(numpy_helper.from_array(WEIGHTS, "W"))
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3]))
    path = save(model, model_dir / "m.onnx")

    # Execute
    signature = onnx_signature(load_onnx(path), path)

    # Assert
    assert signature.input_names == ("X",)
    assert signature.inputs[0].shape == ("batch", 4)
