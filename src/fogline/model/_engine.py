"""The one engine interface, and how a backend is picked for a model file.

Everything in fogline that runs a model goes through :class:`Engine`:
the optimizer's measurements, ``fogline bench``, and later the pipeline,
the server and the fleet agent's health check. A backend is a class that
loads one model file and runs batches on it; they are interchangeable.

Concurrency: ``Engine.run`` is called from worker threads; the runtimes
release the GIL while they compute, and each backend documents whether one
instance may be shared across threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from fogline.errors import BackendUnavailable, ConfigError
from fogline.model._signature import Signature

Backend = Literal["onnxruntime", "openvino", "litert"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]

BACKENDS: tuple[Backend, ...] = ("onnxruntime", "openvino", "litert")
#: How a caller hands over a model file's bytes when they must not be read from the disk as
#: they are (a file sealed with the device key, opened in memory only): the bytes, or None
#: for a file the engine may read itself. This package never decrypts; its callers do.
ModelReader = Callable[[Path], "bytes | None"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "bf16", "int8")
GRAPH_OPTIMIZATION = ("disable", "basic", "extended", "all")


@runtime_checkable
class Engine(Protocol):
    """A loaded model that runs a batch.

    ``run`` takes a mapping of input name to array (batch first) and returns
    the outputs by name. ``backend``, ``precision`` and ``device`` say what
    actually runs it, e.g. ``onnxruntime``, ``int8``, ``CPUExecutionProvider``.
    """

    backend: str
    precision: str
    device: str

    @property
    def signature(self) -> Signature: ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EngineOptions:
    """How to run a model: threads, graph optimization, providers and the GPU's settings.

    ``providers`` are ONNX Runtime's execution providers, best first (short
    names such as ``cuda`` and ``tensorrt`` are accepted; None: the best this
    build offers); asking for one the build lacks is an error.
    ``preferred_providers`` are a softer wish, a model manifest's: those this
    build offers are used, in order, the CPU last, and the first one left out
    is recorded as the engine's ``fallback`` (``providers`` wins over them). On a GPU, ``device_id`` picks the GPU; with TensorRT,
    ``precision`` ``fp16`` or ``int8`` builds FP16 or INT8 engines, an INT8
    engine of a float model reads ``calibration_table`` (default: the
    ``<model>.calibration.flatbuffers`` beside it), and engines are cached
    under ``cache_dir`` (default: the user's cache folder; see
    :mod:`fogline.model._providers`).

    >>> EngineOptions(threads=2).threads
    2
    >>> EngineOptions(providers=("cuda",), device_id=1).device_id
    1
    >>> EngineOptions(graph_optimization="fast")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: graph_optimization must be one of disable, basic, extended, all; got 'fast'
    """

    threads: int | None = None
    graph_optimization: str = "all"
    providers: tuple[str, ...] | None = None
    preferred_providers: tuple[str, ...] | None = None
    precision: str | None = None
    #: Let idle compute threads spin (ONNX Runtime's default). Spinning wins on a
    #: quiet machine and loses badly when other processes want the same cores.
    spin: bool | None = None
    device_id: int = 0
    cache_dir: Path | None = None
    calibration_table: Path | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1; got {self.threads}")
        if self.device_id < 0:
            raise ConfigError(f"device_id must be 0 or more; got {self.device_id}")
        if self.graph_optimization not in GRAPH_OPTIMIZATION:
            raise ConfigError(
                f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATION)}; "
                f"got {self.graph_optimization!r}"
            )
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}"
            )


def engine_fallback(engine: Engine) -> str | None:
    """The GPU provider ``engine`` was asked to run on that did not start, else None.

    ONNX Runtime falls back to the CPU (or TensorRT to CUDA) rather than fail;
    ``engine.device`` then names what really runs and this names what was
    asked for. Engines of other backends never fall back.

    >>> from fogline.examples import digits_model_path
    >>> engine_fallback(load_engine(digits_model_path())) is None
    True
    """
    value = getattr(engine, "fallback", None)
    return value if isinstance(value, str) else None


def backend_for(path: Path) -> Backend:
    """The default backend for a model file, by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix == ".tflite":
        return "litert"
    if suffix == ".xml":
        return "openvino"
    raise ConfigError(
        f"{path}: unknown model format {suffix or '(no suffix)'!r}; "
        "fogline runs .onnx, .tflite and OpenVINO .xml models"
    )


def load_engine(
    path: str | Path,
    *,
    backend: str = "auto",
    options: EngineOptions | None = None,
    read: ModelReader | None = None,
) -> Engine:
    """Load ``path`` with the given backend (``auto`` picks by file suffix).

    With ``read``, the model's bytes (and an OpenVINO IR's weights) come from
    ``read(file)`` and the runtime loads them from memory, so a model
    decrypted by the caller never touches the disk; ``path`` still names it.

    Raises :class:`~fogline.errors.ModelFormatError` for a bad file and
    :class:`~fogline.errors.BackendUnavailable` when the backend's package is
    not installed.
    """
    path = Path(path)
    options = options or EngineOptions()
    chosen = backend_for(path) if backend == "auto" else backend
    data = None if read is None else read(path)
    if chosen == "onnxruntime":
        from fogline.model._onnxruntime import OnnxRuntimeEngine

        return OnnxRuntimeEngine(path, options, data=data)
    if chosen == "openvino":
        from fogline.model._openvino import OpenVinoEngine

        weights = None
        if read is not None and path.suffix.lower() == ".xml":
            weights = read(path.with_suffix(".bin"))
        return OpenVinoEngine(path, options, data=data, weights=weights)
    if chosen == "litert":
        from fogline.model._litert import LiteRtEngine

        return LiteRtEngine(path, options, data=data)
    raise ConfigError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")


def available_backends() -> dict[str, bool]:
    """Which backends can be used on this machine."""
    import importlib.util

    return {
        "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
        "openvino": importlib.util.find_spec("openvino") is not None,
        "litert": importlib.util.find_spec("ai_edge_litert") is not None,
    }


def require(module: str, extra: str) -> None:
    """Raise :class:`BackendUnavailable` with the install hint when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise BackendUnavailable(
            f"{module} is not installed; install it with: pip install 'fogline[{extra}]'"
        )
