"""Re-fitting an ONNX model's last layer as a linear head, without its PyTorch source.

The last linear layer that feeds the model's output (through a ``Softmax``,
``LogSoftmax`` or ``Identity``, if any) is found in the graph: a ``Gemm``
with constant weights, or a ``MatMul`` by a constant followed by an ``Add``
of a constant. Its input is exposed as an extra graph output with the
``onnx`` package, so ONNX Runtime computes the features; a softmax head is
fitted on them in numpy (Adam, warm-started from the current weights, with
an L2 pull towards them to limit forgetting) and written back into the
initializers. Everything before the head is left as it was.

>>> import onnx
>>> from fogline.examples import digits_model_path
>>> head = find_head(onnx.load(str(digits_model_path())))
>>> head.node_type, head.features, head.weight.shape, head.transposed
('Gemm', 'relu_2', (128, 10), True)
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from fogline.errors import ModelFormatError
from fogline.model import EngineOptions, load_engine

__all__ = ["Head", "find_head", "fit_head", "head_features", "with_head"]

#: Ops between the head and the graph output that do not change which class wins.
_PASS_THROUGH = ("Softmax", "LogSoftmax", "Identity")

Progress = Callable[[int, int, float, float], None]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Head:
    """The model's last linear layer, as ``logits = features @ weight + bias``.

    ``weight`` is ``(features, classes)`` whatever the layout in the file
    (``transposed`` says the file holds it as ``(classes, features)``, as a
    ``Gemm`` with ``transB=1`` does); ``bias`` is None when the layer has none.
    """

    node_type: str
    features: str
    weight_name: str
    bias_name: str | None
    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32] | None
    transposed: bool

    @property
    def classes(self) -> int:
        return int(self.weight.shape[1])


def find_head(model: onnx.ModelProto, output: str | None = None) -> Head:
    """The linear layer that computes ``output`` (default: the first graph output).

    A :class:`~fogline.errors.ModelFormatError` says what was found instead
    when the output does not come from one (a quantized or convolutional head,
    weights computed at run time, an FP16 model).
    """
    graph = model.graph
    name = output or graph.output[0].name
    producers = {out: node for node in graph.node for out in node.output}
    constants = {init.name: init for init in graph.initializer}
    node = producers.get(name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is None:
        raise ModelFormatError(f"output {name!r}: no node computes it, so there is no head")
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            attrs.get("transA", 0)
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            raise ModelFormatError(
                f"output {name!r} comes from a Gemm with transA/alpha/beta set; "
                "only a plain linear layer can be re-fitted"
            )
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        return _head(
            node.op_type,
            node.input[0],
            node.input[1],
            bias,
            bool(attrs.get("transB", 0)),
            constants,
        )
    if node.op_type == "Add":
        matmul = next((producers.get(i) for i in node.input if i in producers), None)
        bias = next((i for i in node.input if i in constants), None)
        if matmul is not None and matmul.op_type == "MatMul" and bias is not None:
            return _head("MatMul+Add", matmul.input[0], matmul.input[1], bias, False, constants)
    if node.op_type == "MatMul":
        return _head("MatMul", node.input[0], node.input[1], None, False, constants)
    raise ModelFormatError(
        f"output {name!r} comes from a {node.op_type} node, not a linear layer (Gemm, or "
        "MatMul + Add); re-fit the whole network from its PyTorch source (--layers all)"
    )


def _head(
    op: str,
    features: str,
    weight: str,
    bias: str | None,
    transposed: bool,
    constants: Mapping[str, TensorProto],
) -> Head:
    for tensor in (weight, bias):
        if tensor is None:
            continue
        if tensor not in constants:
            raise ModelFormatError(
                f"the head's {op} takes {tensor!r}, which is computed, not a stored weight"
            )
        if constants[tensor].data_type != TensorProto.FLOAT:
            raise ModelFormatError(
                f"the head's weight {tensor!r} is not float32; re-fit the FP32 model, "
                "then optimize the candidate again"
            )
    W = numpy_helper.to_array(constants[weight]).astype(np.float32)
    if W.ndim != 2:
        raise ModelFormatError(f"the head's weight {weight!r} has shape {list(W.shape)}, not 2-D")
    W = W.T if transposed else W
    b = None if bias is None else numpy_helper.to_array(constants[bias]).astype(np.float32)
    if b is not None and b.shape != (W.shape[1],):
        raise ModelFormatError(
            f"the head's bias {bias!r} has shape {list(b.shape)}; a per-class bias of "
            f"{W.shape[1]} is re-fitted"
        )
    return Head(op, features, weight, bias, W, b, transposed)


def head_features(
    model: onnx.ModelProto,
    head: Head,
    batches: tuple[Mapping[str, np.ndarray], ...],
    *,
    threads: int | None = None,
) -> npt.NDArray[np.float32]:
    """The head's input for every item of ``batches``, computed in ONNX Runtime."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    width = int(head.weight.shape[0])
    probe.graph.output.append(
        helper.make_tensor_value_info(head.features, TensorProto.FLOAT, [None, width])
    )
    with tempfile.TemporaryDirectory(prefix="fogline-head-") as tmp:
        path = Path(tmp) / "features.onnx"
        path.write_bytes(probe.SerializeToString())
        engine = load_engine(path, backend="onnxruntime", options=EngineOptions(threads=threads))
        try:
            parts = [engine.run(batch)[head.features] for batch in batches]
        finally:
            engine.close()
    features = np.concatenate(parts).astype(np.float32)
    if features.ndim != 2 or features.shape[1] != head.weight.shape[0]:
        raise ModelFormatError(
            f"the head's input {head.features!r} has shape {list(features.shape[1:])}, "
            f"its weight expects {head.weight.shape[0]} features"
        )
    return features


def fit_head(
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    head: Head,
    *,
    epochs: int,
    learning_rate: float = 0.01,
    l2: float = 1e-3,
    batch_size: int = 32,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
    """New ``(weight, bias)``: softmax cross-entropy plus ``l2/2 * ||w - w_old||²``, by Adam.

    Starts from the head's weights; ``progress(epoch, epochs, loss, accuracy)``
    is called after each epoch with the mean loss and the training accuracy.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(np.int64)
    >>> head = Head("Gemm", "x", "W", "b", np.zeros((4, 2), np.float32),
    ...             np.zeros(2, np.float32), False)
    >>> W, b = fit_head(X, y, head, epochs=20, l2=0.0)
    >>> float(np.mean(np.argmax(X @ W + b, axis=1) == y)) > 0.95
    True
    """
    W0 = head.weight.astype(np.float64)
    b0 = np.zeros(head.classes) if head.bias is None else head.bias.astype(np.float64)
    params = [W0.copy(), b0.copy()]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    rng = np.random.default_rng(seed)
    X = features.astype(np.float64)
    step = 0
    for epoch in range(epochs):
        total, correct = 0.0, 0
        for idx in np.array_split(
            rng.permutation(len(labels)), max(1, -(-len(labels) // batch_size))
        ):
            W, b = params
            logits = X[idx] @ W + b
            probs = _softmax(logits)
            total += float(-np.log(probs[np.arange(len(idx)), labels[idx]] + 1e-12).sum())
            correct += int(np.sum(np.argmax(logits, axis=1) == labels[idx]))
            probs[np.arange(len(idx)), labels[idx]] -= 1.0
            probs /= len(idx)
            grads = [X[idx].T @ probs + l2 * (W - W0), probs.sum(axis=0) + l2 * (b - b0)]
            if head.bias is None:
                grads[1][:] = 0.0
            step += 1
            for p, g, m, v in zip(params, grads, moments, squares, strict=True):
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                p -= learning_rate * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        if progress is not None:
            progress(epoch + 1, epochs, total / len(labels), correct / len(labels))
    weight = params[0].astype(np.float32)
    return weight, None if head.bias is None else params[1].astype(np.float32)


def with_head(
    model: onnx.ModelProto,
    head: Head,
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None,
) -> onnx.ModelProto:
    """A copy of ``model`` with the head's initializers replaced (same names, same layout)."""
    new = onnx.ModelProto()
    new.CopyFrom(model)
    stored = {head.weight_name: weight.T if head.transposed else weight}
    if head.bias_name is not None and bias is not None:
        stored[head.bias_name] = bias
    for init in new.graph.initializer:
        if init.name in stored:
            init.CopyFrom(
                numpy_helper.from_array(np.ascontiguousarray(stored[init.name]), init.name)
            )
    onnx.checker.check_model(new)
    return new


def _softmax(logits: Floats) -> Floats:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    out: Floats = e / e.sum(axis=1, keepdims=True)
    return out
