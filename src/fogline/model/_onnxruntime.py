"""The ONNX Runtime backend.

Execution providers are chosen from what this onnxruntime build offers, in
the order TensorRT, CUDA, CoreML, CPU; CPU is always last so every operator
has a home. The CUDA and TensorRT providers get their options (GPU, FP16 or
INT8, TensorRT's engine cache) from :mod:`fogline.model._providers`. ONNX
Runtime falls back to the CPU when a GPU provider cannot start (no CUDA
libraries, no GPU); the engine then says so: ``device`` is the provider that
really runs it and ``fallback`` the one that did not start.
One session may be shared by threads: ``InferenceSession.run``
is thread-safe and releases the GIL.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from fogline.errors import ConfigError, ModelError, ModelFormatError, SignatureMismatch
from fogline.model._engine import EngineOptions
from fogline.model._onnx_file import load_onnx, onnx_signature, parse_onnx, uses_external_data
from fogline.model._providers import (
    TENSORRT,
    TensorRtCache,
    calibration_table_path,
    default_cache_root,
    fallback_of,
    gpu_name,
    prefer_providers,
    provider_options,
    tensorrt_mode,
    tensorrt_version,
)
from fogline.model._providers import choose_providers as _choose
from fogline.model._signature import Signature

log = logging.getLogger(__name__)

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_INT8_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "DynamicQuantizeLinear",
    }
)


def choose_providers(requested: tuple[str, ...] | None = None) -> list[str]:
    """The execution providers to use, best first, CPU always included."""
    available = ort.get_available_providers()
    if requested or TENSORRT not in available:
        return _choose(requested, available)
    return _choose(requested, available, tensorrt_installed=tensorrt_version() != "unknown")


def _providers_for(options: EngineOptions) -> tuple[list[str], str | None]:
    """The providers to ask for, and a preferred one this build cannot give (None: none)."""
    if options.providers or not options.preferred_providers:
        return choose_providers(options.providers), None
    available = ort.get_available_providers()
    installed = TENSORRT not in available or tensorrt_version() != "unknown"
    return prefer_providers(options.preferred_providers, available, tensorrt_installed=installed)


def model_precision(model: onnx.ModelProto) -> str:
    """Guess the precision a model computes in from its operators and weights."""
    if any(node.op_type in _INT8_OPS for node in model.graph.node):
        return "int8"
    fp16 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    fp32 = sum(1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    return "fp16" if fp16 > fp32 else "fp32"


class OnnxRuntimeEngine:
    """Run an ``.onnx`` file with ONNX Runtime.

    >>> from fogline.examples import digits_model_path
    >>> engine = OnnxRuntimeEngine(digits_model_path(), EngineOptions(threads=1))
    >>> engine.backend, engine.precision, engine.device
    ('onnxruntime', 'fp32', 'CPUExecutionProvider')
    >>> out = engine.run(engine.signature.sample_feeds(batch=4))
    >>> out["logits"].shape
    (4, 10)

    Given ``data`` (the model's bytes: a sealed file opened in memory), the
    session is made from them and the file at ``path`` is not read.
    """

    backend = "onnxruntime"
    #: Where TensorRT keeps this model's engines (None: TensorRT is not used).
    engine_cache: Path | None = None

    def __init__(
        self, path: Path, options: EngineOptions | None = None, *, data: bytes | None = None
    ) -> None:
        options = options or EngineOptions()
        self.path = Path(path)
        if data is None:
            model = load_onnx(self.path, with_external_data=False)
        else:
            model = parse_onnx(data, self.path)
        self._signature = onnx_signature(model, self.path)
        file_precision = model_precision(model)
        #: What TensorRT is asked to build (``precision``); reported only if TensorRT runs.
        self.precision = options.precision or file_precision
        quantized = file_precision == "int8"
        has_external = uses_external_data(model)
        del model
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = _LEVELS[options.graph_optimization]
        if options.threads is not None:
            session_options.intra_op_num_threads = options.threads
            session_options.inter_op_num_threads = 1
        if options.spin is not None:
            flag = "1" if options.spin else "0"
            session_options.add_session_config_entry("session.intra_op.allow_spinning", flag)
        providers, unavailable = _providers_for(options)
        # ONNX Runtime cannot read some small tensors (e.g. a Reshape's shape) from
        # external data through a path; a model with external data is handed over whole.
        source: str | bytes = str(self.path) if data is None else data
        if has_external:
            source = load_onnx(self.path).SerializeToString()
        with_options = self._provider_options(providers, options, source, quantized)
        try:
            self._session = ort.InferenceSession(
                source, sess_options=session_options, providers=with_options
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelFormatError(f"{self.path}: ONNX Runtime cannot load it: {exc}") from exc
        ran = self._session.get_providers()
        #: The provider that runs the model, and the one asked for that did not start.
        self.device: str = ran[0]
        if self.device != TENSORRT:
            self.precision = file_precision  # the CPU and CUDA run the file as it is
        self.fallback: str | None = unavailable or fallback_of(providers, ran)
        if unavailable is not None:
            log.warning(
                "%s: the manifest prefers %s, which this onnxruntime build does not offer; "
                "running on %s",
                self.path.name,
                unavailable,
                self.device,
            )
        elif self.fallback is not None:
            log.warning(
                "%s: %s did not start; ONNX Runtime runs the model on %s",
                self.path.name,
                self.fallback,
                self.device,
            )
        self._output_names = list(self._signature.output_names)

    def _provider_options(
        self, providers: list[str], options: EngineOptions, source: str | bytes, quantized: bool
    ) -> list[tuple[str, dict[str, str | int | bool]]]:
        """The providers with their options; for TensorRT, its cache folder made ready."""
        cache, table = None, None
        if TENSORRT in providers:
            table = options.calibration_table or calibration_table_path(self.path)
            mode = tensorrt_mode(self.precision, quantized=quantized, table=table)
            table = table if mode.startswith("int8-") and mode != "int8-qdq" else None
            blob = source if isinstance(source, bytes) else Path(source).read_bytes()
            cache = TensorRtCache(
                Path(options.cache_dir) if options.cache_dir else default_cache_root(),
                hashlib.sha256(blob).hexdigest(),
                gpu_name(options.device_id),
                tensorrt_version(),
                mode,
            )
            try:
                cache.prepare(table)
            except OSError as exc:
                raise ConfigError(
                    f"TensorRT's engine cache {cache.engines}: {exc.strerror or exc}"
                ) from exc
            self.engine_cache = cache.engines
        return provider_options(
            providers,
            device_id=options.device_id,
            precision=self.precision,
            cache=cache,
            calibration=table is not None,
        )

    @property
    def signature(self) -> Signature:
        return self._signature

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self._session.run(self._output_names, inputs)
        except Exception as exc:
            if self._session is None:
                raise ModelError(f"{self.path.name}: the engine is closed") from None
            # Name the input that does not fit, then fall back to ORT's words.
            try:
                self._signature.check_feeds(inputs)
            except SignatureMismatch as mismatch:
                raise mismatch from exc
            raise SignatureMismatch(f"{self.path.name}: cannot run on these inputs: {exc}") from exc
        return dict(zip(self._output_names, outputs, strict=True))

    def close(self) -> None:
        self._session = None
