"""ONNX Runtime's execution providers: which to ask for, with what options, and TensorRT's cache.

The CUDA and TensorRT providers come with ``onnxruntime-gpu`` (the same
``onnxruntime`` module, a different wheel). Everything here that decides is a
plain function of explicit inputs (the providers a build offers, the GPU's
name, TensorRT's version), so it is tested on a machine without a GPU; only
:func:`gpu_name` and :func:`tensorrt_version` look at the machine.

TensorRT builds an engine for one model on one GPU with one TensorRT
version, which takes seconds to minutes. Its engine cache is kept on disk in
a folder named after the model's sha256, the GPU's name, the TensorRT
version and the precision (with the calibration table's hash for INT8), so a
device restarts without rebuilding and a different GPU or TensorRT never
picks up a stale engine. The root is ``$FOGLINE_CACHE_DIR/tensorrt``, else
the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/fogline/tensorrt``,
or :attr:`~fogline.model.EngineOptions.cache_dir`. TensorRT's timing cache
(how fast each kernel was on this GPU) is shared by every model on that GPU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import importlib.metadata
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fogline.errors import ConfigError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
#: The providers that run on an NVIDIA GPU, best first.
GPU_PROVIDERS = (TENSORRT, CUDA)
#: Short names a user may type (``--provider cuda``).
ALIASES = {
    "cpu": CPU,
    "cuda": CUDA,
    "tensorrt": TENSORRT,
    "trt": TENSORRT,
    "coreml": "CoreMLExecutionProvider",
}
#: The file beside ``model.onnx`` that holds its TensorRT INT8 calibration table.
CALIBRATION_SUFFIX = ".calibration.flatbuffers"
#: The name the table is given inside an engine cache folder (TensorRT reads it there).
CALIBRATION_NAME = "calibration.flatbuffers"
ProviderOptions = dict[str, str | int | bool]


def provider_name(name: str) -> str:
    """The full provider name for a short one (``cuda`` → ``CUDAExecutionProvider``).

    >>> provider_name("trt"), provider_name("CPUExecutionProvider")
    ('TensorrtExecutionProvider', 'CPUExecutionProvider')
    """
    return ALIASES.get(name.strip().lower(), name.strip())


def choose_providers(
    requested: Sequence[str] | None, available: Sequence[str], *, tensorrt_installed: bool = True
) -> list[str]:
    """The execution providers to ask ONNX Runtime for, best first, CPU always last.

    Without ``requested``: TensorRT, CUDA, CoreML, CPU, those the build
    offers; TensorRT only when its libraries are installed
    (``tensorrt_installed``: onnxruntime-gpu offers the provider either way,
    and without them ONNX Runtime would fall back after an error). TensorRT
    is always followed by CUDA when the build has it, so the operators
    TensorRT does not take run on the GPU rather than the CPU.

    >>> choose_providers(("trt",), [TENSORRT, CUDA, CPU])
    ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    >>> choose_providers(None, ["AzureExecutionProvider", CPU])
    ['CPUExecutionProvider']
    >>> choose_providers(None, [TENSORRT, CUDA, CPU], tensorrt_installed=False)
    ['CUDAExecutionProvider', 'CPUExecutionProvider']
    """
    preferred = (TENSORRT, CUDA, "CoreMLExecutionProvider", CPU)
    if requested:
        chosen = [provider_name(p) for p in requested]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise ConfigError(missing_provider_message(missing, available))
    else:
        chosen = [p for p in preferred if p in available and (p != TENSORRT or tensorrt_installed)]
    if TENSORRT in chosen and CUDA in available and CUDA not in chosen:
        chosen.insert(chosen.index(TENSORRT) + 1, CUDA)
    return [p for p in dict.fromkeys(chosen) if p != CPU] + [CPU]


def prefer_providers(
    preferred: Sequence[str], available: Sequence[str], *, tensorrt_installed: bool = True
) -> tuple[list[str], str | None]:
    """The providers to ask for when a model's manifest prefers ``preferred``, and the
    fallback: the first preferred one this build cannot give, else None.

    A manifest's providers say where the model was measured, not where it must
    run: those this build offers are kept, in order (TensorRT only when its
    libraries are installed, followed by CUDA), the CPU last, and what is left
    out is recorded rather than refused, so a model optimized on a GPU still
    opens on a CPU-only device. An explicit request (``--provider``) goes
    through :func:`choose_providers` and fails instead.

    >>> prefer_providers([TENSORRT, CUDA, CPU], ["AzureExecutionProvider", CPU])
    (['CPUExecutionProvider'], 'TensorrtExecutionProvider')
    >>> prefer_providers(["cuda"], [TENSORRT, CUDA, CPU])
    (['CUDAExecutionProvider', 'CPUExecutionProvider'], None)
    """
    wanted = [provider_name(p) for p in preferred]
    kept = [p for p in wanted if p in available and (p != TENSORRT or tensorrt_installed)]
    if TENSORRT in kept and CUDA in available and CUDA not in kept:
        kept.insert(kept.index(TENSORRT) + 1, CUDA)
    chosen = [p for p in dict.fromkeys(kept) if p != CPU] + [CPU]
    fallback = wanted[0] if wanted and wanted[0] != chosen[0] else None
    return chosen, fallback


def onnxruntime_wheels() -> dict[str, str]:
    """The installed distributions that provide the ``onnxruntime`` module, with versions.

    ``onnxruntime`` and ``onnxruntime-gpu`` both install the same files; with
    both installed, whichever was installed last won, often the CPU one.
    """
    found: dict[str, str] = {}
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def gpu_wheel_recipe(version: str | None = None) -> str:
    """The commands that leave ``onnxruntime-gpu`` alone owning the ``onnxruntime`` module."""
    pin = f"=={version}" if version else ""
    return (
        "pip uninstall -y onnxruntime onnxruntime-gpu && "
        f"pip install --force-reinstall --no-deps onnxruntime-gpu{pin}"
    )


def missing_provider_message(
    missing: Sequence[str], available: Sequence[str], wheels: dict[str, str] | None = None
) -> str:
    """Why a provider cannot be used: what this build offers, and how to get a GPU one.

    ``wheels`` are the installed onnxruntime distributions (default:
    :func:`onnxruntime_wheels`); with both the CPU and the GPU one installed,
    the message says so, since that is the usual reason the GPU providers vanish.

    >>> print(missing_provider_message([CUDA], [CPU], {"onnxruntime": "1.32.0"}))
    ... # doctest: +NORMALIZE_WHITESPACE
    execution provider(s) CUDAExecutionProvider are not available in this onnxruntime build;
    available: CPUExecutionProvider (the CUDA and TensorRT providers come with onnxruntime-gpu:
    pip install 'fogline[gpu]', then pip uninstall -y onnxruntime onnxruntime-gpu && pip install
    --force-reinstall --no-deps onnxruntime-gpu; see docs/gpu.md)
    """
    text = (
        f"execution provider(s) {', '.join(missing)} are not available in this onnxruntime "
        f"build; available: {', '.join(available)}"
    )
    if not any(p in GPU_PROVIDERS for p in missing):
        return text
    wheels = onnxruntime_wheels() if wheels is None else wheels
    if "onnxruntime" in wheels and "onnxruntime-gpu" in wheels:
        return text + (
            f" (both onnxruntime {wheels['onnxruntime']} and onnxruntime-gpu "
            f"{wheels['onnxruntime-gpu']} are installed and share one module, and the CPU "
            f"wheel's files won: {gpu_wheel_recipe(wheels['onnxruntime-gpu'])}; see docs/gpu.md)"
        )
    return text + (
        " (the CUDA and TensorRT providers come with onnxruntime-gpu: pip install "
        f"'fogline[gpu]', then {gpu_wheel_recipe()}; see docs/gpu.md)"
    )


def calibration_table_path(model: Path) -> Path:
    """Where a model's TensorRT INT8 calibration table lives: beside it, same stem.

    >>> calibration_table_path(Path("out/model.onnx")).as_posix()
    'out/model.calibration.flatbuffers'
    """
    return model.with_name(model.stem + CALIBRATION_SUFFIX)


def slug(text: str) -> str:
    """``text`` as a safe part of a folder name.

    >>> slug("NVIDIA H100 80GB HBM3")
    'NVIDIA-H100-80GB-HBM3'
    """
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def default_cache_root() -> Path:
    """The root of TensorRT's caches: ``$FOGLINE_CACHE_DIR/tensorrt``, else the user's cache."""
    base = os.environ.get("FOGLINE_CACHE_DIR")
    if base:
        return Path(base) / "tensorrt"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fogline" / "tensorrt"


@dataclass(frozen=True)
class TensorRtCache:
    """Where TensorRT keeps the engines of one model on one GPU with one TensorRT version.

    ``mode`` is the precision the engine is built for (``fp32``, ``fp16``,
    ``int8-qdq`` for a model with its own quantization, ``int8-<table hash>``).

    >>> cache = TensorRtCache(Path("/c"), "ab" * 32, "NVIDIA H100 80GB HBM3", "10.13.0", "fp16")
    >>> cache.engines.as_posix()
    '/c/abababababababab-NVIDIA-H100-80GB-HBM3-trt10.13.0-fp16'
    >>> cache.timing.as_posix()
    '/c/timing-NVIDIA-H100-80GB-HBM3-trt10.13.0'
    """

    root: Path
    model_sha256: str
    gpu: str
    tensorrt: str
    mode: str

    @property
    def engines(self) -> Path:
        """The folder of this model's engines (and its INT8 calibration table)."""
        key = f"{self.model_sha256[:16]}-{slug(self.gpu)}-trt{slug(self.tensorrt)}-{self.mode}"
        return self.root / key

    @property
    def timing(self) -> Path:
        """The timing cache of this GPU and TensorRT, shared by every model."""
        return self.root / f"timing-{slug(self.gpu)}-trt{slug(self.tensorrt)}"

    def prepare(self, calibration_table: Path | None = None) -> None:
        """Make the folders, and put the INT8 calibration table where TensorRT reads it."""
        self.engines.mkdir(parents=True, exist_ok=True)
        self.timing.mkdir(parents=True, exist_ok=True)
        if calibration_table is not None:
            target = self.engines / CALIBRATION_NAME
            if not target.is_file():
                shutil.copyfile(calibration_table, target)


def tensorrt_mode(precision: str, *, quantized: bool, table: Path | None) -> str:
    """The precision part of the cache key, and a check that INT8 has what it needs.

    A model with its own QuantizeLinear/DequantizeLinear runs INT8 as it is;
    a float model needs a calibration table.

    >>> tensorrt_mode("fp32", quantized=False, table=None)
    'fp32'
    >>> tensorrt_mode("int8", quantized=True, table=None)
    'int8-qdq'
    """
    if precision != "int8":
        return "fp16" if precision == "fp16" else "fp32"
    if quantized:
        return "int8-qdq"
    if table is None or not table.is_file():
        raise ConfigError(
            "TensorRT INT8 of a float model needs a calibration table "
            f"({table or 'none given'} is missing): fogline optimize writes it beside the "
            "model as <model>.calibration.flatbuffers"
        )
    return f"int8-{hashlib.sha256(table.read_bytes()).hexdigest()[:12]}"


def provider_options(
    providers: Sequence[str],
    *,
    device_id: int = 0,
    precision: str = "fp32",
    cache: TensorRtCache | None = None,
    calibration: bool = False,
) -> list[tuple[str, ProviderOptions]]:
    """Each provider with its options, in the form ``InferenceSession(providers=...)`` takes.

    CUDA and TensorRT run on GPU ``device_id``; TensorRT builds FP16 or INT8
    engines by ``precision``, reads its INT8 calibration table (when
    ``calibration``) from the cache folder, and keeps engines and timings in
    ``cache``.

    >>> provider_options(["CUDAExecutionProvider", "CPUExecutionProvider"], device_id=1)
    [('CUDAExecutionProvider', {'device_id': 1}), ('CPUExecutionProvider', {})]
    """
    out: list[tuple[str, ProviderOptions]] = []
    for name in providers:
        options: ProviderOptions = {}
        if name == CUDA:
            options = {"device_id": device_id}
        elif name == TENSORRT:
            if cache is None:
                raise ConfigError("TensorRT needs an engine cache (TensorRtCache)")
            options = {
                "device_id": device_id,
                "trt_fp16_enable": precision in ("fp16", "int8"),
                "trt_int8_enable": precision == "int8",
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache.engines),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache.timing),
            }
            if calibration:
                options["trt_int8_calibration_table_name"] = CALIBRATION_NAME
                options["trt_int8_use_native_calibration_table"] = False
        out.append((name, options))
    return out


def fallback_of(asked: Sequence[str], ran: Sequence[str]) -> str | None:
    """The provider asked for first that did not start (ONNX Runtime fell back), else None.

    >>> fallback_of([CUDA, CPU], [CPU])
    'CUDAExecutionProvider'
    >>> fallback_of([TENSORRT, CUDA, CPU], [TENSORRT, CUDA, CPU]) is None
    True
    """
    if not asked or not ran or asked[0] == CPU:
        return None
    return asked[0] if ran[0] != asked[0] else None


@cache
def gpu_name(device_id: int = 0) -> str:
    """The name of NVIDIA GPU ``device_id``: from NVML, else the driver's /proc files, else
    the Jetson's board name; ``unknown-gpu`` when none says."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(device_id))
        finally:
            pynvml.nvmlShutdown()
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # no NVML (a Jetson, no driver): the other places say it
        pass
    gpus = sorted(Path("/proc/driver/nvidia/gpus").glob("*/information"))
    if device_id < len(gpus):
        for line in gpus[device_id].read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    board = Path("/proc/device-tree/model")
    if board.is_file():
        return board.read_text(errors="replace").strip("\x00 \n")
    return "unknown-gpu"


@cache
def tensorrt_version() -> str:
    """The TensorRT version ONNX Runtime will load: from its wheel, else from ``libnvinfer``
    itself (JetPack's); ``unknown`` when there is none."""
    for dist in ("tensorrt", "tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-libs"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    found = ctypes.util.find_library("nvinfer")
    if found is not None:
        try:
            return str(ctypes.CDLL(found).getInferLibVersion())
        except (OSError, AttributeError):
            pass
    return "unknown"


def nvidia_gpu_visible() -> bool:
    """True when an NVIDIA GPU is visible to this process (its driver's device files)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()
