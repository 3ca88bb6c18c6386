"""Fuzz the OIP gRPC request codec: any ``ModelInferRequest`` gives arrays, or SignatureMismatch.

The bytes are parsed as the protocol's ``ModelInferRequest`` (the protobuf
the gRPC server receives; bytes that do not parse never reach fogline, gRPC
refuses them) and its tensors read with :func:`fogline.serve.read_inputs`
and :func:`fogline.serve.requested_outputs`, as ``ModelInfer`` does. What
must hold: arrays with the declared shapes, or a
:class:`~fogline.errors.FoglineError` (the server answers
INVALID_ARGUMENT) — anything else is an INTERNAL error on the server.

    python fuzz/oip_grpc.py [CORPUS ...] [-max_total_time=60]
"""

from __future__ import annotations

import sys

from _harness import fuzz, instrumented
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

with instrumented(__name__, ["fogline.serve._grpc_tensors", "fogline.oip._datatypes"]):
    from fogline.errors import FoglineError
    from fogline.serve import read_inputs, requested_outputs


def TestOneInput(data: bytes) -> None:
    try:
        request = service_pb2.ModelInferRequest.FromString(data)
    except DecodeError:
        return  # gRPC refuses it before fogline sees it
    try:
        requested_outputs(request)
        inputs = read_inputs(request)
    except FoglineError as exc:
        assert str(exc), "an error without a message"
        return
    for tensor in request.inputs:
        assert list(inputs[tensor.name].shape) == list(tensor.shape), f"{tensor.name}: shape"


def main() -> None:
    fuzz(TestOneInput)


if __name__ == "__main__":
    main()
    sys.exit(0)
