"""Building candidate variants of a model, each with the runtime's own tooling.

ONNX Runtime's quantization package makes the INT8 variants (dynamic, and
static QDQ per-channel with MinMax, Entropy or Percentile calibration) and
its float16 converter the FP16 one; OpenVINO's NNCF makes the OpenVINO INT8
variant. Nothing here quantizes a tensor by hand.

On a GPU (the CUDA and TensorRT providers of ``onnxruntime-gpu``) the search
adds CUDA FP32, CUDA FP16 (the FP16 model), TensorRT FP16 and TensorRT INT8:
TensorRT quantizes the FP32 model itself with the calibration table that
ONNX Runtime's calibrator writes from the calibration data
(:func:`build_tensorrt_int8`). Which of them are planned depends only on the
providers given (:func:`gpu_plans`), so planning is the same on any machine.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import onnx

from fogline.data import Dataset
from fogline.errors import BackendUnavailable, OptimizeError
from fogline.model import calibration_table_path

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@dataclass
class BuildContext:
    """What every builder may use: the source model, scratch space, calibration data."""

    source: Path
    workdir: Path
    calibration: Dataset
    #: Notes a builder adds about what it built, by output file name.
    notes: dict[str, str] = field(default_factory=dict)
    _prepared: Path | None = field(default=None, repr=False)

    def prepared(self) -> Path:
        """The source after ONNX Runtime's quantization pre-processing (built once)."""
        if self._prepared is None:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            target = self.workdir / "prepared.onnx"
            try:
                quant_pre_process(str(self.source), str(target), skip_symbolic_shape=False)
            except Exception:
                # Symbolic shape inference fails on some graphs; ONNX's own is enough.
                quant_pre_process(str(self.source), str(target), skip_symbolic_shape=True)
            self._prepared = target
        return self._prepared


Builder = Callable[[BuildContext, Path], Path]


@dataclass(frozen=True)
class VariantPlan:
    """A variant to build: its name, the engine and precision it runs with, and how.

    ``providers``: the ONNX Runtime execution providers it runs on, best first
    (the CPU for every variant but the GPU ones; OpenVINO ignores them).
    """

    name: str
    engine: str
    precision: str
    build: Builder
    notes: str = ""
    suffix: str = ".onnx"
    providers: tuple[str, ...] = (CPU,)


@cache
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_vnni() -> bool:
    """True when the CPU has VNNI int8 dot products (no u8s8 saturation risk)."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


class _Reader:
    """Feeds calibration batches to ONNX Runtime's calibrators."""

    def __init__(self, dataset: Dataset) -> None:
        self._batches = dataset.batches
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def calibration_reader(dataset: Dataset) -> object:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):  # type: ignore[misc]
        pass

    return Reader(dataset)


def build_fp32(ctx: BuildContext, out: Path) -> Path:
    shutil.copyfile(ctx.source, out)
    return out


def build_fp16(ctx: BuildContext, out: Path) -> Path:
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    converted = OnnxModel(convert_float_to_float16(onnx.load(str(ctx.source)), keep_io_types=True))
    converted.topological_sort()  # the converter appends its casts out of order
    onnx.save(converted.model, str(out))
    return out


def build_int8_dynamic(ctx: BuildContext, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(ctx.prepared()),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=not has_vnni(),
    )
    return out


def static_builder(
    method: str,
    *,
    exclude: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
) -> Builder:
    """A builder for static QDQ INT8 with per-channel weights."""

    def build(ctx: BuildContext, out: Path) -> Path:
        from onnxruntime.quantization import (
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        calibrate = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method]
        quantize_static(
            str(ctx.prepared()),
            str(out),
            calibration_reader(ctx.calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # Without VNNI, ONNX Runtime's u8s8 kernels can saturate; 7-bit weights avoid it.
            reduce_range=not has_vnni(),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calibrate,
            nodes_to_exclude=list(exclude),
            op_types_to_quantize=list(op_types) if op_types else None,
            extra_options={"CalibMaxIntermediateOutputs": 64},
        )
        return out

    return build


def build_openvino_ir(ctx: BuildContext, out: Path) -> Path:
    import openvino as ov

    ov.save_model(ov.convert_model(str(ctx.source)), str(out), compress_to_fp16=False)
    return out


def build_openvino_int8(ctx: BuildContext, out: Path) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(ctx.source))
    dataset = nncf.Dataset(list(ctx.calibration.batches))
    quantized = nncf.quantize(model, dataset, subset_size=ctx.calibration.size)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def openvino_supports(precision: str) -> str | None:
    """None when this machine can run OpenVINO at ``precision``, else the reason not."""
    try:
        from fogline.model import cpu_capabilities

        caps = cpu_capabilities()
    except BackendUnavailable as exc:
        return str(exc)
    wanted = {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}[precision]
    if wanted not in caps:
        return f"this CPU lacks {wanted} support in OpenVINO (has {', '.join(sorted(caps))})"
    return None


def onnx_plans(methods: Sequence[str] = CALIBRATION_METHODS) -> list[VariantPlan]:
    """The ONNX Runtime variants, FP32 baseline first."""
    note = "" if has_vnni() else "7-bit weights (no VNNI)"
    plans = [
        VariantPlan("ort-fp32", "onnxruntime", "fp32", build_fp32, "graph optimization: all"),
        VariantPlan("ort-fp16", "onnxruntime", "fp16", build_fp16, "float16 weights, fp32 I/O"),
        VariantPlan("ort-int8-dynamic", "onnxruntime", "int8", build_int8_dynamic, note),
    ]
    for method in methods:
        if method not in CALIBRATION_METHODS:
            raise OptimizeError(
                f"unknown calibration method {method!r}; use {', '.join(CALIBRATION_METHODS)}"
            )
        plans.append(
            VariantPlan(
                f"ort-int8-static-{method}",
                "onnxruntime",
                "int8",
                static_builder(method),
                f"QDQ per-channel, {method}; {note}".strip("; "),
            )
        )
    return plans


def openvino_plans() -> tuple[list[VariantPlan], dict[str, str]]:
    """OpenVINO variants this machine can run, and the reasons for those it cannot."""
    plans: list[VariantPlan] = []
    skipped: dict[str, str] = {}
    for precision, build, suffix in (
        ("fp32", build_openvino_ir, ".xml"),
        ("bf16", build_openvino_ir, ".xml"),
        ("int8", build_openvino_int8, ".xml"),
    ):
        name = f"openvino-{precision}"
        reason = openvino_supports(precision)
        if reason is None and precision == "int8":
            import importlib.util

            if importlib.util.find_spec("nncf") is None:
                reason = "nncf is not installed: pip install 'fogline[openvino]'"
        if reason is not None:
            skipped[name] = reason
            continue
        notes = "NNCF post-training quantization" if precision == "int8" else ""
        plans.append(VariantPlan(name, "openvino", precision, build, notes, suffix))
    return plans, skipped


def quantized(plan: VariantPlan, method: str = "minmax") -> VariantPlan:
    """``plan`` followed by static INT8: pruning and quantization compound."""
    builder = static_builder(method)

    def build(ctx: BuildContext, out: Path) -> Path:
        folder = ctx.workdir / f"{plan.name}-for-int8"
        folder.mkdir(exist_ok=True)
        source = plan.build(ctx, folder / "model.onnx")
        return builder(BuildContext(source, folder, ctx.calibration), out)

    note = "" if has_vnni() else "; 7-bit weights (no VNNI)"
    return VariantPlan(
        f"{plan.name}-int8",
        "onnxruntime",
        "int8",
        build,
        f"{plan.notes}; then static INT8 QDQ per-channel, {method}{note}",
    )


def build_tensorrt_int8(ctx: BuildContext, out: Path) -> Path:
    """The FP32 model, with the TensorRT INT8 calibration table of the calibration data beside it.

    ONNX Runtime's calibrator runs the model on the calibration batches and
    records each tensor's range (MinMax); ``write_calibration_table`` writes
    them in the flatbuffers form TensorRT's provider reads
    (``<out>.calibration.flatbuffers``, see :func:`fogline.model.calibration_table_path`).
    """
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization import write_calibration_table as write_table

    shutil.copyfile(ctx.source, out)
    folder = ctx.workdir / f"{out.stem}-calibration"
    folder.mkdir(exist_ok=True)
    calibrator = create_calibrator(
        ctx.source,
        augmented_model_path=folder / "augmented.onnx",
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"CalibMaxIntermediateOutputs": 64},
    )
    calibrator.collect_data(calibration_reader(ctx.calibration))
    ranges = calibrator.compute_data()
    write_table({name: ranges[name] for name in ranges}, dir=str(folder))
    shutil.copyfile(folder / "calibration.flatbuffers", calibration_table_path(out))
    return out


def gpu_plans(available: Sequence[str]) -> tuple[list[VariantPlan], dict[str, str]]:
    """The GPU variants the given execution providers can run, and one line for those they cannot.

    >>> plans, skipped = gpu_plans(["CPUExecutionProvider"])
    >>> plans, list(skipped)
    ([], ['gpu'])
    >>> [p.name for p in gpu_plans([TENSORRT, CUDA, CPU])[0]]
    ['cuda-fp32', 'cuda-fp16', 'tensorrt-fp16', 'tensorrt-int8']
    """
    plans: list[VariantPlan] = []
    skipped: dict[str, str] = {}
    if CUDA in available:
        plans += [
            VariantPlan("cuda-fp32", "onnxruntime", "fp32", build_fp32, "CUDA", providers=(CUDA,)),
            VariantPlan(
                "cuda-fp16",
                "onnxruntime",
                "fp16",
                build_fp16,
                "CUDA; float16 weights, fp32 I/O",
                providers=(CUDA,),
            ),
        ]
    if TENSORRT in available:
        trt = (TENSORRT, CUDA) if CUDA in available else (TENSORRT,)
        plans += [
            VariantPlan(
                "tensorrt-fp16",
                "onnxruntime",
                "fp16",
                build_fp32,
                "TensorRT FP16 engine of the FP32 model",
                providers=trt,
            ),
            VariantPlan(
                "tensorrt-int8",
                "onnxruntime",
                "int8",
                build_tensorrt_int8,
                "TensorRT INT8 engine, calibration table from the calibration data (MinMax)",
                providers=trt,
            ),
        ]
    others = ", ".join(p.removesuffix("ExecutionProvider") for p in available) or "none"
    if not plans:
        skipped["gpu"] = (
            f"no CUDA or TensorRT execution provider in this onnxruntime build (it has {others}); "
            "GPU variants need onnxruntime-gpu and an NVIDIA GPU (docs/gpu.md)"
        )
    elif TENSORRT not in available:
        skipped["tensorrt-*"] = (
            f"no TensorRT execution provider in this onnxruntime build (it has {others})"
        )
    return plans, skipped
