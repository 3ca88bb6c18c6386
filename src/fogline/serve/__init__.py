"""The inference server: the Open Inference Protocol (KServe v2) over HTTP and gRPC.

Models come from a Triton-style repository (``DIR/<model>/<version>/model.onnx``
with an optional ``config.pbtxt``); each loaded version runs on the one
:class:`~fogline.model.Engine` interface and, with dynamic batching, the
shared :class:`~fogline.model.MicroBatcher`.

The request codecs are public so that they can be fuzzed and tested on
their own: :func:`parse_infer` / :func:`encode_infer` (HTTP bodies) and
:func:`read_inputs` / :func:`requested_outputs` (a gRPC ``ModelInferRequest``).
"""

from fogline.serve._config import ModelConfig, TensorConfig, VersionPolicy
from fogline.serve._grpc_tensors import read_inputs, requested_outputs
from fogline.serve._http_codec import BadRequest, encode_infer, parse_infer
from fogline.serve._manager import CONTROLS, LoadedVersion, ModelManager, VersionState
from fogline.serve._repository import Repository
from fogline.serve._server import Server, run

__all__ = [
    "CONTROLS",
    "BadRequest",
    "LoadedVersion",
    "ModelConfig",
    "ModelManager",
    "Repository",
    "Server",
    "TensorConfig",
    "VersionPolicy",
    "VersionState",
    "encode_infer",
    "parse_infer",
    "read_inputs",
    "requested_outputs",
    "run",
]
