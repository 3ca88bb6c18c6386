"""The inference server: the Open Inference Protocol (KServe v2) over HTTP and gRPC.

Models come from a Triton-style repository (``DIR/<model>/<version>/model.onnx``
with an optional ``config.pbtxt``); each loaded version runs on the one
:class:`~fogline.model.Engine` interface and, with dynamic batching, the
shared :class:`~fogline.model.MicroBatcher`.
"""

from fogline.serve._config import ModelConfig, TensorConfig, VersionPolicy
from fogline.serve._manager import CONTROLS, LoadedVersion, ModelManager, VersionState
from fogline.serve._repository import Repository
from fogline.serve._server import Server, run

__all__ = [
    "CONTROLS",
    "LoadedVersion",
    "ModelConfig",
    "ModelManager",
    "Repository",
    "Server",
    "TensorConfig",
    "VersionPolicy",
    "VersionState",
    "run",
]
