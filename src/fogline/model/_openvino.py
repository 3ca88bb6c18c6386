"""The OpenVINO backend (``pip install 'fogline[openvino]'``).

Reads ``.onnx`` directly or OpenVINO IR (``.xml`` + ``.bin``, what NNCF
writes for INT8). Precision ``bf16`` asks the CPU plugin for bfloat16
inference and is refused on CPUs without native BF16. Each thread gets its
own infer request, so one engine may be shared by threads.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import (
    BackendUnavailable,
    ConfigError,
    ModelError,
    ModelFormatError,
    SignatureMismatch,
)
from fogline.model._engine import EngineOptions, require
from fogline.model._onnx_file import load_onnx, onnx_signature, parse_onnx
from fogline.model._signature import Dim, Signature, TensorSpec


def cpu_capabilities() -> set[str]:
    """OpenVINO's optimization capabilities of this CPU (e.g. FP32, BF16, INT8)."""
    require("openvino", "openvino")
    import openvino as ov

    return set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _ov_signature(model: Any) -> Signature:
    def spec(port: Any) -> TensorSpec:
        dims: list[Dim] = [
            int(d.get_length()) if d.is_static else None for d in port.get_partial_shape()
        ]
        dtype = np.dtype(port.get_element_type().to_dtype()).name
        return TensorSpec(port.get_any_name(), dtype, tuple(dims))

    return Signature(
        tuple(spec(p) for p in model.inputs),
        tuple(spec(p) for p in model.outputs),
        {},
        f"openvino IR {model.get_friendly_name()}",
    )


class OpenVinoEngine:
    """Run an ``.onnx`` or OpenVINO ``.xml`` model on the CPU with OpenVINO.

    Given ``data`` (the model's bytes) and, for an IR, ``weights`` (the
    ``.bin``'s), the model is read from memory (``Core.read_model(model=,
    weights=)``): a sealed model opened in memory is never written out.
    """

    backend = "openvino"
    device = "CPU"

    def __init__(
        self,
        path: Path,
        options: EngineOptions | None = None,
        *,
        data: bytes | None = None,
        weights: bytes | None = None,
    ) -> None:
        require("openvino", "openvino")
        import openvino as ov

        options = options or EngineOptions()
        self.path = Path(path)
        core = ov.Core()
        is_onnx = self.path.suffix.lower() == ".onnx"
        in_memory = data is not None or weights is not None
        bin_path = self.path.with_suffix(".bin")
        if is_onnx:
            parsed = (
                load_onnx(self.path, with_external_data=False)
                if data is None
                else parse_onnx(data, self.path)
            )
            self._signature = onnx_signature(parsed, self.path)
        elif (data is None and not self.path.is_file()) or (
            weights is None and not bin_path.is_file()
        ):
            raise ModelFormatError(f"{self.path}: an OpenVINO IR needs both .xml and .bin")
        try:
            if not in_memory:
                model = core.read_model(str(self.path))
            else:
                text = data if data is not None else self.path.read_bytes()
                blob = b"" if is_onnx else weights if weights is not None else bin_path.read_bytes()
                tensor = ov.Tensor(np.frombuffer(blob, dtype=np.uint8).copy())
                model = core.read_model(model=text, weights=tensor)
        except Exception as exc:
            raise ModelFormatError(f"{self.path}: OpenVINO cannot read it: {exc}") from exc
        if self.path.suffix.lower() != ".onnx":
            self._signature = _ov_signature(model)
        is_int8 = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        precision = options.precision or ("int8" if is_int8 else "fp32")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if options.threads is not None:
            config["INFERENCE_NUM_THREADS"] = options.threads
        if precision == "bf16":
            if "BF16" not in set(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")):
                raise BackendUnavailable("this CPU has no native BF16; OpenVINO bf16 is refused")
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        elif precision in ("fp32", "int8"):
            config["INFERENCE_PRECISION_HINT"] = "f32"
        else:
            raise ConfigError(f"OpenVINO on CPU runs fp32, bf16 or int8, not {precision}")
        self.precision = precision
        try:
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise ModelFormatError(f"{self.path}: OpenVINO cannot compile it: {exc}") from exc
        self._names = [p.get_any_name() for p in self._compiled.outputs]
        self._local = threading.local()

    @property
    def signature(self) -> Signature:
        return self._signature

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._compiled is None:
            raise ModelError(f"{self.path.name}: the engine is closed")
        # OpenVINO reuses the last input and casts dtypes silently: check first.
        self._signature.check_feeds(inputs)
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        try:
            result = request.infer(dict(inputs))
        except Exception as exc:
            raise SignatureMismatch(f"{self.path.name}: cannot run on these inputs: {exc}") from exc
        return {name: np.asarray(result[i]) for i, name in enumerate(self._names)}

    def close(self) -> None:
        self._compiled = None
        self._local = threading.local()  # drop the infer requests of every thread
