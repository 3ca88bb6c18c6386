"""Models: the one :class:`Engine` interface, its backends, signatures, manifests.

>>> from fogline.model import load_engine
>>> from fogline.examples import digits_model_path
>>> engine = load_engine(digits_model_path())
>>> engine.signature.input_names
('pixels',)
"""

from fogline._files import sha256_file
from fogline.model._batcher import (
    LANE_OVERFLOWS,
    OVERFLOWS,
    BatcherStats,
    BatchPolicy,
    Lane,
    MicroBatcher,
)
from fogline.model._bench import LatencyStats, PeakMemory, measure, time_calls
from fogline.model._engine import (
    BACKENDS,
    PRECISIONS,
    Engine,
    EngineOptions,
    ModelReader,
    available_backends,
    backend_for,
    load_engine,
    require,
)
from fogline.model._manifest import MANIFEST_NAME, Manifest
from fogline.model._onnx_file import load_onnx, onnx_signature
from fogline.model._open import OpenedModel, open_model
from fogline.model._openvino import cpu_capabilities
from fogline.model._signature import Signature, TensorSpec
from fogline.model._sklearn import sklearn_to_onnx
from fogline.model._torch import torch_to_onnx
from fogline.model._variants import VARIANT_OUTPUT, VariantEngine

__all__ = [
    "BACKENDS",
    "LANE_OVERFLOWS",
    "MANIFEST_NAME",
    "OVERFLOWS",
    "PRECISIONS",
    "VARIANT_OUTPUT",
    "BatchPolicy",
    "BatcherStats",
    "Engine",
    "EngineOptions",
    "Lane",
    "LatencyStats",
    "Manifest",
    "MicroBatcher",
    "ModelReader",
    "OpenedModel",
    "PeakMemory",
    "Signature",
    "TensorSpec",
    "VariantEngine",
    "available_backends",
    "backend_for",
    "cpu_capabilities",
    "load_engine",
    "load_onnx",
    "measure",
    "onnx_signature",
    "open_model",
    "require",
    "sha256_file",
    "sklearn_to_onnx",
    "time_calls",
    "torch_to_onnx",
]
