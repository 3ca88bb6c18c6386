"""The Open Inference Protocol's HTTP bodies: JSON, and Triton's binary tensor data extension.

:func:`parse_infer` reads an inference request (a JSON header, optionally
followed by the binary data of its inputs) into numpy arrays;
:func:`encode_infer` writes the answer back the way the request asked
(outputs as JSON lists, or as raw bytes after the JSON header). Anything a
client got wrong raises :class:`BadRequest` naming what and where.

Pure functions of bytes and arrays, independent of the web framework, safe
from any thread.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from fogline.oip import (
    FROM_NAME,
    check_shape,
    datatype_of_output,
    decode,
    encode,
    numpy_dtype,
)

#: The header that says how many bytes of the body are JSON (lower case, as ASGI gives it).
HEADER_LENGTH = "inference-header-content-length"


class BadRequest(Exception):
    """A request the protocol cannot take: answered with ``status`` (400, or 413) and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_json(data: bytes, what: str) -> Any:
    """``data`` parsed as JSON; :class:`BadRequest` naming ``what`` when it is not."""
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # json's C scanner has a depth limit; a body can exceed it
        raise BadRequest(f"{what} is JSON nested too deeply to read") from None


def parse_infer(
    body: bytes, header_length: str | None
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bool] | None]:
    """An inference request → (its JSON header, the input arrays, wanted outputs → binary?)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(
                f"Inference-Header-Content-Length {header_length!r} is not a number"
            ) from None
        if not 0 <= length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length says {length} bytes of JSON, but the body "
                f"has {len(body)}"
            )
        header_bytes, binary = body[:length], memoryview(body)[length:]
    else:
        header_bytes, binary = body, memoryview(b"")
    header = parse_json(header_bytes, "the request")
    if not isinstance(header, dict):
        raise BadRequest("the request must be a JSON object with an `inputs` list")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the request needs a non-empty `inputs` list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, spec in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        if not isinstance(spec, dict):
            raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
        name = spec.get("name")
        datatype = spec.get("datatype")
        shape = spec.get("shape")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}: `name` must be a non-empty string")
        where = f"input {name!r}"
        if name in inputs:
            raise BadRequest(f"{where} is given twice")
        if not isinstance(datatype, str) or datatype not in FROM_NAME.values():
            raise BadRequest(f"{where}: unknown datatype {datatype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(
                f"{where}: `shape` must be a list of non-negative integers, got {shape!r}"
            )
        parameters = spec.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest(f"{where}: `parameters` must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise BadRequest(
                    f"{where}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left)"
                )
            inputs[name] = decode(binary[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            if "data" not in spec:
                raise BadRequest(f"{where} has neither `data` nor binary_data_size")
            inputs[name] = _from_json(spec["data"], datatype, shape, where)
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data after the last input: the "
            "binary_data_size parameters do not add up to the body"
        )
    wanted = _requested_outputs(header)
    return header, inputs, wanted


def _from_json(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    count = check_shape(shape, where.removeprefix("input ").strip("'"))
    flat = _flatten(data, where)
    if len(flat) != count:
        raise BadRequest(f"{where}: {len(flat)} values for shape {shape} ({count} elements)")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"{where}: BYTES data must be strings")
        return np.array([v.encode() for v in flat], dtype=object).reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"{where}: BOOL data must be true or false")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"{where}: {datatype} data must be numbers")
    dtype = numpy_dtype(datatype)
    try:
        array = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise BadRequest(f"{where}: a value does not fit {datatype}: {exc}") from None
    if dtype.kind in "iu" and any(isinstance(v, float) and not float(v).is_integer() for v in flat):
        raise BadRequest(f"{where}: {datatype} data must be whole numbers")
    return array.reshape(shape)


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest(f"{where}: `data` must be a list")
    flat: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _requested_outputs(header: dict[str, Any]) -> dict[str, bool] | None:
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("`parameters` must be an object")
    all_binary = bool(parameters.get("binary_data_output", False))
    outputs = header.get("outputs")
    if outputs is None:
        return None if not all_binary else {"*": True}
    if not isinstance(outputs, list):
        raise BadRequest("`outputs` must be a list of {name, parameters}")
    wanted: dict[str, bool] = {}
    for index, spec in enumerate(outputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(f"outputs[{index}] must be an object with a `name`")
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"outputs[{index}]: `parameters` must be an object")
        wanted[spec["name"]] = bool(params.get("binary_data", all_binary))
    return wanted


def encode_infer(
    name: str,
    version: int,
    header: dict[str, Any],
    results: dict[str, np.ndarray],
    wanted: dict[str, bool] | None,
) -> tuple[bytes, int | None]:
    """The protocol's answer as (body, length of its JSON header when binary outputs follow).

    The length is None for a plain JSON answer; otherwise it is what the
    ``Inference-Header-Content-Length`` header says, the binary outputs
    following the JSON in the order the header lists them.
    """
    if wanted is None or "*" in wanted:
        binary_all = wanted is not None
        wanted = {output: binary_all for output in results}
    unknown = sorted(set(wanted) - set(results))
    if unknown:
        raise BadRequest(
            f"unknown output(s) {', '.join(unknown)}; model {name!r} has {', '.join(results)}"
        )
    outputs = []
    blobs: list[bytes] = []
    for output, binary in wanted.items():
        array = results[output]
        datatype = datatype_of_output(array, output)
        entry: dict[str, Any] = {"name": output, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = encode(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [
                v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                for v in array.reshape(-1)
            ]
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": name, "model_version": str(version), "outputs": outputs}
    if "id" in header:
        answer["id"] = header["id"]
    text = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return text, None
    return text + b"".join(blobs), len(text)
