"""Reading ONNX files safely: parse, check, and refuse unsafe external data.

A model is data from elsewhere. Before any runtime sees it we parse it
without its external data, check that every external tensor lives inside
the model's folder (no ``../``, no absolute path, no symlink escaping it),
and map every parse error to :class:`~fogline.errors.ModelFormatError`.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import helper

from fogline.errors import ModelFormatError
from fogline.model._signature import Dim, Signature, TensorSpec


def load_onnx(path: Path, *, with_external_data: bool = True) -> onnx.ModelProto:
    """Parse and check an ONNX file, raising :class:`ModelFormatError` on any fault."""
    path = Path(path)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise ModelFormatError(f"{path}: the file is empty, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise ModelFormatError(
            f"{path}: not a valid ONNX model (truncated or corrupt?): {exc}"
        ) from exc
    if model.ir_version == 0 or not model.HasField("graph") or not model.graph.node:
        raise ModelFormatError(f"{path}: not an ONNX model (no IR version or empty graph)")
    _check_external_data(model, path)
    if with_external_data:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as exc:
            raise ModelFormatError(f"{path}: cannot read external data: {exc}") from exc
    try:
        onnx.checker.check_model(model if with_external_data else str(path))
    except (onnx.checker.ValidationError, ValueError, OSError) as exc:
        raise ModelFormatError(f"{path}: the ONNX checker rejects the model: {exc}") from exc
    return model


def parse_onnx(data: bytes, path: Path) -> onnx.ModelProto:
    """Parse and check an ONNX model held in memory (``path`` names it in messages).

    A model in memory has no folder, so one that keeps tensors in external
    data files is refused rather than read from beside ``path``.
    """
    if not data:
        raise ModelFormatError(f"{path}: the model is empty, not an ONNX model")
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelFormatError(
            f"{path}: not a valid ONNX model (truncated or corrupt?): {exc}"
        ) from exc
    if model.ir_version == 0 or not model.HasField("graph") or not model.graph.node:
        raise ModelFormatError(f"{path}: not an ONNX model (no IR version or empty graph)")
    if uses_external_data(model):
        raise ModelFormatError(
            f"{path}: the model keeps tensors in external data files, which cannot be loaded "
            "from memory; save it as one file (onnx.save with save_as_external_data=False)"
        )
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelFormatError(f"{path}: the ONNX checker rejects the model: {exc}") from exc
    return model


def _check_external_data(model: onnx.ModelProto, path: Path) -> None:
    root = path.parent.resolve()
    for tensor in _all_initializers(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        if not location or os.path.isabs(location):
            raise ModelFormatError(
                f"{path}: tensor {tensor.name!r} points at external data {location!r} "
                "that is not a relative path inside the model's folder"
            )
        target = (root / location).resolve()
        if not target.is_relative_to(root):
            raise ModelFormatError(
                f"{path}: tensor {tensor.name!r} points at external data {location!r} "
                "outside the model's folder; refusing to read it"
            )
        if not target.is_file():
            raise ModelFormatError(
                f"{path}: tensor {tensor.name!r} needs external data file {location!r}, "
                "which is missing"
            )


def _all_initializers(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor in the model, subgraphs (If/Loop/Scan bodies) included."""
    tensors: list[onnx.TensorProto] = []
    graphs = [model.graph]
    while graphs:
        graph = graphs.pop()
        tensors.extend(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    tensors.append(attr.t)
                tensors.extend(attr.tensors)
                if attr.HasField("g"):
                    graphs.append(attr.g)
                graphs.extend(attr.graphs)
    return tensors


def uses_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in _all_initializers(model))


def _dims(value_info: onnx.ValueInfoProto) -> tuple[Dim, ...]:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return ()
    dims: list[Dim] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _dtype(value_info: onnx.ValueInfoProto, path: Path) -> str:
    type_proto = value_info.type
    if not type_proto.HasField("tensor_type"):
        kind = type_proto.WhichOneof("value")
        # Non-tensor outputs (e.g. the ZipMap of scikit-learn classifiers) are
        # sequences of maps; we describe them but they are not tensors.
        if kind in ("sequence_type", "map_type"):
            return "str"
        raise ModelFormatError(f"{path}: {value_info.name!r} has unsupported type {kind}")
    elem = type_proto.tensor_type.elem_type
    if elem == onnx.TensorProto.STRING:
        return "str"
    if elem == onnx.TensorProto.BFLOAT16:
        return "bfloat16"
    try:
        return str(helper.tensor_dtype_to_np_dtype(elem))
    except (KeyError, ValueError) as exc:  # the checker lets unknown element types through
        raise ModelFormatError(
            f"{path}: {value_info.name!r} has element type {elem}, which ONNX does not define"
        ) from exc


def onnx_signature(model: onnx.ModelProto, path: Path) -> Signature:
    """The :class:`Signature` of a parsed ONNX model."""
    initializers = {t.name for t in model.graph.initializer}
    try:
        inputs = tuple(
            TensorSpec(v.name, _dtype(v, path), _dims(v))
            for v in model.graph.input
            if v.name not in initializers
        )
        outputs = tuple(TensorSpec(v.name, _dtype(v, path), _dims(v)) for v in model.graph.output)
    except ValueError as exc:  # e.g. a float6 input: ONNX defines it, fogline cannot feed it
        raise ModelFormatError(f"{path}: cannot use the model's inputs or outputs: {exc}") from exc
    opset = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    producer = f"{model.producer_name} {model.producer_version}".strip()
    return Signature(inputs, outputs, opset, producer)
