"""A global model (of a simulated or a fleet run) as ``model.onnx`` with its ``fogline.yaml`` manifest.

A torch module is exported by :func:`fogline.model.torch_to_onnx` (the
``train`` extra); numpy softmax weights become a three-node graph built with
``onnx.helper``: ``MatMul`` by ``W``, ``Add`` of ``b``, ``Softmax``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fogline._files import atomic_write
from fogline.federated._client import ClientTrainer, TorchTrainer, load_weights
from fogline.federated._simulate import SimulationResult, Task
from fogline.federated.strategy import Weights
from fogline.model import Manifest, load_onnx, onnx_signature, torch_to_onnx

__all__ = ["export_model", "export_weights", "softmax_onnx"]

OPSET = 17


def softmax_onnx(weights: Weights, input_name: str = "input") -> onnx.ModelProto:
    """``probabilities = softmax(input @ W + b)`` for inputs of shape ``(batch, features)``."""
    W = np.asarray(weights["W"], np.float32)
    b = np.asarray(weights["b"], np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", [input_name, "W"], ["logits_mm"]),
            helper.make_node("Add", ["logits_mm", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ],
        "fogline_softmax",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", W.shape[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", W.shape[1]])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fogline"
    )
    onnx.checker.check_model(model)
    return model


def export_model(result: SimulationResult, folder: Path) -> Path:
    """Write ``folder/model.onnx`` and ``folder/fogline.yaml``; the model's path."""
    final = result.history[-1] if result.history else None
    accuracy = None if final is None else final.accuracy
    return export_weights(result.task, result.trainer, result.weights, folder, accuracy)


def export_weights(
    task: Task, trainer: ClientTrainer, weights: Weights, folder: Path, accuracy: float | None
) -> Path:
    """Write ``weights`` of ``task`` as ``folder/model.onnx`` with its manifest; the model's path.

    ``accuracy`` (0..1, on the task's test set) goes into the manifest's metrics.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    if isinstance(trainer, TorchTrainer):
        module = trainer.module
        load_weights(module, weights)
        sample = np.ascontiguousarray(task.test[0][:2], np.float32)
        import torch

        torch_to_onnx(
            module,
            torch.from_numpy(sample),
            path,
            input_names=task.input_names[:1],
            output_names=("logits",),
        )
    else:
        model = softmax_onnx(weights, task.input_names[0])
        atomic_write(path, model.SerializeToString())
    manifest = Manifest.for_model(
        path,
        onnx_signature(load_onnx(path), path),
        name=task.name.replace("_", "-"),
        backend="onnxruntime",
        precision="fp32",
        metrics={} if accuracy is None else {"accuracy": round(100 * accuracy, 2)},
    )
    manifest.write(folder)
    return path
