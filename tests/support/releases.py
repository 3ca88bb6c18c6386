"""Small real releases: a tiny ONNX model and a release folder around it."""

from __future__ import annotations

import random
from pathlib import Path

import onnx
from onnx import TensorProto, helper


def tiny_model(path: Path, offset: float) -> Path:
    """A real ONNX model: y = x + offset, x float32 [N, 4]."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [4], [offset] * 4)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])], "add", [x], [y], [bias]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def model_folder(root: Path, offset: float, *, data_bytes: int = 0, small_files: int = 0) -> Path:
    folder = root / f"model-{offset}"
    tiny_model(folder / "model.onnx", offset)
    (folder / "labels.txt").write_text("a\nb\nc\nd\n")
    if data_bytes:
        (folder / "data.bin").write_bytes(random.Random(offset).randbytes(data_bytes))
    for i in range(small_files):
        (folder / "extra" / str(i % 3)).mkdir(parents=True, exist_ok=True)
        (folder / "extra" / str(i % 3) / f"f{i}.txt").write_text(f"{offset} {i}\n")
    return folder
