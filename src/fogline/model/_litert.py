"""The LiteRT backend for ``.tflite`` models (``pip install 'fogline[tflite]'``).

The interpreter is not thread-safe, so one lock serializes ``run``; use one
engine per worker thread for parallelism. A batch whose size differs from
the current input shape resizes the input tensors first, as LiteRT requires.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import ModelError, ModelFormatError, SignatureMismatch
from fogline.model._engine import EngineOptions, require
from fogline.model._signature import Dim, Signature, TensorSpec


def _spec(detail: Mapping[str, Any]) -> TensorSpec:
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    dims: tuple[Dim, ...] = tuple(None if int(d) < 0 else int(d) for d in shape)
    return TensorSpec(detail["name"], np.dtype(detail["dtype"]).name, dims)


class LiteRtEngine:
    """Run a ``.tflite`` model with the LiteRT interpreter (XNNPACK on CPU)."""

    backend = "litert"
    device = "CPU"

    def __init__(
        self, path: Path, options: EngineOptions | None = None, *, data: bytes | None = None
    ) -> None:
        require("ai_edge_litert", "tflite")
        from ai_edge_litert.interpreter import Interpreter

        options = options or EngineOptions()
        self.path = Path(path)
        if data is None:
            if not self.path.is_file():
                raise ModelFormatError(f"{self.path}: no such model file")
            data = self.path.read_bytes()
        # A FlatBuffer model carries the identifier "TFL3" at bytes 4..8.
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelFormatError(f"{self.path}: not a TFLite model (no TFL3 identifier)")
        try:
            self._interpreter = Interpreter(model_content=data, num_threads=options.threads)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelFormatError(f"{self.path}: LiteRT cannot load it: {exc}") from exc
        self._inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        self._signature = Signature(
            tuple(_spec(d) for d in self._inputs),
            tuple(_spec(d) for d in outputs),
            {},
            "tflite",
        )
        self._output_index = [(d["name"], d["index"]) for d in outputs]
        kinds = {d["dtype"] for d in self._inputs} | {d["dtype"] for d in outputs}
        self.precision = options.precision or ("int8" if kinds & {np.int8, np.uint8} else "fp32")
        self._lock = threading.Lock()

    @property
    def signature(self) -> Signature:
        return self._signature

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._signature.check_feeds(inputs)
        with self._lock:
            interp = self._interpreter
            if interp is None:
                raise ModelError(f"{self.path.name}: the engine is closed")
            resized = False
            for detail in self._inputs:
                array = inputs[detail["name"]]
                if tuple(array.shape) != tuple(detail["shape"]):
                    interp.resize_tensor_input(detail["index"], list(array.shape))
                    resized = True
            if resized:
                interp.allocate_tensors()
                self._inputs = interp.get_input_details()
            try:
                for detail in self._inputs:
                    interp.set_tensor(detail["index"], np.ascontiguousarray(inputs[detail["name"]]))
                interp.invoke()
            except (ValueError, RuntimeError) as exc:
                raise SignatureMismatch(f"{self.path.name}: cannot run: {exc}") from exc
            return {name: interp.get_tensor(index).copy() for name, index in self._output_index}

    def close(self) -> None:
        self._interpreter = None
