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
    engine_fallback,
    load_engine,
    require,
)
from fogline.model._manifest import MANIFEST_NAME, Manifest
from fogline.model._onnx_file import load_onnx, onnx_signature
from fogline.model._open import OpenedModel, open_model
from fogline.model._openvino import cpu_capabilities
from fogline.model._providers import (
    GPU_PROVIDERS,
    TensorRtCache,
    calibration_table_path,
    default_cache_root,
    gpu_name,
    nvidia_gpu_visible,
    provider_name,
    tensorrt_version,
)
from fogline.model._signature import Signature, TensorSpec
from fogline.model._sklearn import sklearn_to_onnx
from fogline.model._torch import torch_to_onnx
from fogline.model._variants import VARIANT_OUTPUT, VariantEngine

__all__ = [
    "BACKENDS",
    "GPU_PROVIDERS",
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
    "TensorRtCache",
    "TensorSpec",
    "VariantEngine",
    "available_backends",
    "backend_for",
    "calibration_table_path",
    "cpu_capabilities",
    "default_cache_root",
    "engine_fallback",
    "gpu_name",
    "load_engine",
    "load_onnx",
    "measure",
    "nvidia_gpu_visible",
    "onnx_signature",
    "open_model",
    "provider_name",
    "require",
    "sha256_file",
    "sklearn_to_onnx",
    "tensorrt_version",
    "time_calls",
    "torch_to_onnx",
]
