"""Fuzz the OIP HTTP request codec: any body gives input arrays, or a 4xx error.

An inference request's body (JSON, optionally followed by Triton's binary
tensor data, with ``Inference-Header-Content-Length``) is decoded by
:func:`fogline.serve.parse_infer`, as ``POST /v2/models/<m>/infer`` does.
What must hold: it returns arrays whose shapes and dtypes are the ones the
request declared, or raises :class:`~fogline.serve.BadRequest` (400 or 413)
or a :class:`~fogline.errors.FoglineError` — anything else is a 500 on the
server. The answer's encoder (:func:`fogline.serve.encode_infer`) is then
run on the decoded arrays and must hold to the same.

Half the inputs are the raw body; the other half build a request from the
protocol's own vocabulary (datatypes, shapes, ``binary_data_size``,
``outputs``), so the fuzzer gets past the JSON and into the tensors.

    python fuzz/oip_http.py [CORPUS ...] [-max_total_time=60]
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris
from _harness import fuzz, instrumented, json_value

with instrumented(__name__, ["fogline.serve._http_codec", "fogline.oip._datatypes"]):
    from fogline.errors import FoglineError
    from fogline.oip import FROM_NAME, numpy_dtype
    from fogline.serve import BadRequest, encode_infer, parse_infer

DATATYPES = sorted(set(FROM_NAME.values()))


def request(data: bytes) -> tuple[bytes, str | None]:
    """The body and the ``Inference-Header-Content-Length`` an input stands for."""
    if not data or data[0] % 2 == 0:
        return data[1:], None
    fdp = atheris.FuzzedDataProvider(data[1:])
    inputs: list[Any] = []
    tail = b""
    for index in range(fdp.ConsumeIntInRange(0, 3)):
        shape = [fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(0, 3))]
        entry: dict[str, Any] = {
            "name": f"in{index}" if fdp.ConsumeIntInRange(0, 7) else "in0",
            "datatype": fdp.PickValueInList(DATATYPES),
            "shape": shape,
        }
        if fdp.ConsumeBool():
            blob = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
            entry["parameters"] = {"binary_data_size": len(blob) + fdp.ConsumeIntInRange(-1, 1)}
            tail += blob
        else:
            entry["data"] = json_value(fdp, {"type": "array", "items": {"type": "number"}})
        inputs.append(entry)
    body: dict[str, Any] = {"inputs": inputs}
    if fdp.ConsumeBool():
        body["outputs"] = [
            {"name": f"in{i}", "parameters": {"binary_data": fdp.ConsumeBool()}}
            for i in range(fdp.ConsumeIntInRange(0, 2))
        ]
    if fdp.ConsumeBool():
        body["parameters"] = {"binary_data_output": fdp.ConsumeBool()}
    if fdp.ConsumeBool():
        body["id"] = fdp.ConsumeUnicodeNoSurrogates(8)
    header = json.dumps(body).encode()
    if not tail and fdp.ConsumeBool():
        return header, None
    return header + tail, str(len(header) + fdp.ConsumeIntInRange(-2, 1))


def TestOneInput(data: bytes) -> None:
    body, header_length = request(data)
    try:
        header, inputs, wanted = parse_infer(body, header_length)
    except BadRequest as exc:
        assert exc.status in (400, 413) and str(exc), "a BadRequest without status or message"
        return
    except FoglineError as exc:
        assert str(exc), "an error without a message"
        return
    declared = {spec["name"]: spec for spec in header["inputs"]}
    for name, array in inputs.items():
        assert list(array.shape) == declared[name]["shape"], f"{name}: shape changed"
        assert array.dtype == numpy_dtype(declared[name]["datatype"]), f"{name}: dtype changed"
    try:
        answer, json_length = encode_infer("m", 1, header, inputs, wanted)
    except (BadRequest, FoglineError) as exc:
        assert str(exc), "an error without a message"
        return
    json.loads(answer[:json_length] if json_length is not None else answer)


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
    sys.exit(0)
