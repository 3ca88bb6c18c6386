"""A model that shows its input: ``image`` is the input itself, ``brightness`` its mean.

Without post-processing its outputs become result fields as they are, so a
result carries the raw input (``image``): what an egress policy must keep on
the device.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper


def echo_model(path: Path, side: int = 8) -> Path:
    """Write the model to ``path``: ``pixels [batch, 1, side, side]`` → ``image``, ``brightness``."""
    nodes = [
        helper.make_node("Identity", ["pixels"], ["image"]),
        helper.make_node("ReduceMean", ["pixels"], ["brightness"], keepdims=0, axes=[1, 2, 3]),
    ]
    shape = ["batch", 1, side, side]
    graph = helper.make_graph(
        nodes,
        "echo",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, shape)],
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, shape),
            helper.make_tensor_value_info("brightness", TensorProto.FLOAT, ["batch"]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
