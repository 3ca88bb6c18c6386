"""Tensors of the gRPC protocol: a ``ModelInferRequest``'s inputs as arrays, outputs' datatypes.

Inputs come either as ``raw_input_contents`` (the protocol's little-endian
bytes, decoded by :func:`fogline.oip.decode`) or as the typed
``contents`` fields; a request may not mix the two. Shapes are checked
before numpy is asked to make an array of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fogline.errors import SignatureMismatch
from fogline.oip import check_shape, decode, element_count, numpy_dtype

# Typed ``InferTensorContents`` field of each datatype, and the numpy type it holds.
_CONTENTS: dict[str, tuple[str, str]] = {
    "BOOL": ("bool_contents", "bool"),
    "INT8": ("int_contents", "int32"),
    "INT16": ("int_contents", "int32"),
    "INT32": ("int_contents", "int32"),
    "INT64": ("int64_contents", "int64"),
    "UINT8": ("uint_contents", "uint32"),
    "UINT16": ("uint_contents", "uint32"),
    "UINT32": ("uint_contents", "uint32"),
    "UINT64": ("uint64_contents", "uint64"),
    "FP32": ("fp32_contents", "float32"),
    "FP64": ("fp64_contents", "float64"),
    "BYTES": ("bytes_contents", "object"),
}
_CONTENTS_FIELDS = sorted({field for field, _ in _CONTENTS.values()})


def refuse_parameters(parameters: Iterable[str], where: str) -> None:
    if "shared_memory_region" in parameters:
        raise SignatureMismatch(f"{where}: shared memory is not supported; send the data inline")
    if "classification" in parameters:
        raise SignatureMismatch(f"{where}: the classification extension is not supported")


def requested_outputs(request: Any) -> list[str]:
    names: list[str] = []
    for output in request.outputs:
        refuse_parameters(output.parameters, f"output {output.name!r}")
        if output.name in names:
            raise SignatureMismatch(f"output {output.name!r} is requested twice")
        names.append(output.name)
    return names


def read_inputs(request: Any) -> dict[str, np.ndarray]:
    """The request's tensors, from ``raw_input_contents`` or from their typed ``contents``."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise SignatureMismatch(
            f"the request has {len(request.inputs)} input(s) but {len(raw)} raw_input_contents; "
            "they must pair up one to one"
        )
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if name in inputs:
            raise SignatureMismatch(f"input {name!r} is given twice")
        refuse_parameters(tensor.parameters, f"input {name!r}")
        shape = [int(d) for d in tensor.shape]
        check_shape(shape, name)
        if raw:
            if tensor.HasField("contents"):
                raise SignatureMismatch(
                    f"input {name!r} has typed contents in a request that uses "
                    "raw_input_contents; use one or the other"
                )
            inputs[name] = decode(raw[index], tensor.datatype, shape, name)
        else:
            inputs[name] = from_contents(tensor, shape)
    return inputs


def from_contents(tensor: Any, shape: list[int]) -> np.ndarray:
    name, datatype = tensor.name, tensor.datatype
    dtype = numpy_dtype(datatype)  # an unknown datatype is refused here
    if datatype not in _CONTENTS:
        raise SignatureMismatch(
            f"input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents"
        )
    field, carrier = _CONTENTS[datatype]
    stray = [f for f in _CONTENTS_FIELDS if f != field and len(getattr(tensor.contents, f))]
    if stray:
        raise SignatureMismatch(
            f"input {name!r} is {datatype}, which travels in contents.{field}, but it has "
            f"values in contents.{stray[0]}"
        )
    values = getattr(tensor.contents, field)
    count = element_count(shape)
    if len(values) != count:
        raise SignatureMismatch(
            f"input {name!r}: {len(values)} value(s) in contents.{field}, but shape {shape} "
            f"holds {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    wide = np.array(values, dtype=carrier)
    array = wide.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(array, wide):
        raise SignatureMismatch(
            f"input {name!r}: a value in contents.{field} is out of {datatype}'s range"
        )
    return array.reshape(shape)
