"""ONNX Runtime's CUDA and TensorRT providers on a real NVIDIA GPU (marked ``gpu``).

Skipped, with the reason, where this onnxruntime build has no CUDA provider
or no GPU is visible (tests/conftest.py). The engine contract itself runs on
these providers too: ``test_engine_conformance.py`` is parametrized over them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fogline.model import EngineOptions, engine_fallback, load_engine, tensorrt_version
from fogline.optimize import Dataset, OptimizeOptions, optimize
from fogline.optimize._variants import BuildContext, build_fp16, build_tensorrt_int8

pytestmark = pytest.mark.gpu

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tensorrt() -> None:
    """Skip, saying why, where TensorRT's libraries are missing (onnxruntime-gpu offers the
    provider without them)."""
    if tensorrt_version() == "unknown":
        pytest.skip("needs TensorRT: its libraries (libnvinfer) are not installed here")


@pytest.fixture(scope="module")
def reference(digits_onnx: Path, eval_pixels: np.ndarray) -> np.ndarray:
    """The CPU's FP32 logits on the held-out digits."""
    cpu = load_engine(digits_onnx, options=EngineOptions(providers=("cpu",)))
    return cpu.run({"pixels": eval_pixels})["logits"]


def _top1(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == reference.argmax(1)))


def test_cuda_fp32_gives_the_cpus_answers(
    digits_onnx: Path, eval_pixels: np.ndarray, reference: np.ndarray
):
    engine = load_engine(digits_onnx, options=EngineOptions(providers=("cuda",)))
    assert (engine.device, engine_fallback(engine)) == (CUDA, None)
    logits = engine.run({"pixels": eval_pixels})["logits"]
    np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-3)


def test_cuda_fp16_model_stays_close(
    tmp_path: Path, digits_onnx: Path, eval_pixels: np.ndarray, reference: np.ndarray
):
    # Prepare: the FP16 model the search's cuda-fp16 variant runs
    ctx = BuildContext(digits_onnx, tmp_path, Dataset("eight", ({"pixels": eval_pixels[:8]},)))
    fp16 = build_fp16(ctx, tmp_path / "fp16.onnx")

    # Execute
    engine = load_engine(fp16, options=EngineOptions(providers=("cuda",)))
    logits = engine.run({"pixels": eval_pixels})["logits"]

    # Assert
    assert (engine.device, engine.precision) == (CUDA, "fp16")
    assert _top1(logits, reference) >= 0.99


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_runs_the_model_at_the_precision_asked_for(
    tensorrt: None,
    tmp_path: Path,
    digits_onnx: Path,
    eval_pixels: np.ndarray,
    reference: np.ndarray,
    precision: str,
):
    options = EngineOptions(providers=("tensorrt",), precision=precision, cache_dir=tmp_path)
    engine = load_engine(digits_onnx, options=options)
    assert (engine.device, engine_fallback(engine)) == (TENSORRT, None)
    logits = engine.run({"pixels": eval_pixels})["logits"]
    assert _top1(logits, reference) >= 0.99
    assert engine.engine_cache is not None and engine.engine_cache.parent == tmp_path
    assert precision in engine.engine_cache.name


def test_tensorrt_int8_with_the_calibration_table_keeps_the_answers(
    tensorrt: None,
    tmp_path: Path,
    digits_onnx: Path,
    digits_calibration: Dataset,
    eval_pixels: np.ndarray,
    reference: np.ndarray,
):
    # Prepare: the model and table the search's tensorrt-int8 variant runs
    ctx = BuildContext(digits_onnx, tmp_path, digits_calibration)
    model = build_tensorrt_int8(ctx, tmp_path / "tensorrt-int8.onnx")
    cache = tmp_path / "cache"

    # Execute
    options = EngineOptions(providers=("tensorrt",), precision="int8", cache_dir=cache)
    engine = load_engine(model, options=options)
    logits = engine.run({"pixels": eval_pixels})["logits"]

    # Assert
    assert (engine.device, engine.precision) == (TENSORRT, "int8")
    assert engine.engine_cache is not None
    assert (engine.engine_cache / "calibration.flatbuffers").is_file()
    assert _top1(logits, reference) >= 0.95


def test_a_second_start_reuses_the_engine_tensorrt_built(
    tensorrt: None, tmp_path: Path, digits_onnx: Path, eval_pixels: np.ndarray
):
    # Prepare: a first start builds the engine into the cache
    options = EngineOptions(providers=("tensorrt",), precision="fp16", cache_dir=tmp_path)
    first = load_engine(digits_onnx, options=options)
    first.run({"pixels": eval_pixels[:4]})
    assert first.engine_cache is not None
    built = {p: p.stat().st_mtime_ns for p in first.engine_cache.rglob("*") if p.is_file()}
    first.close()
    assert any(p.suffix == ".engine" for p in built), sorted(built)

    # Execute: a second start of the same model on the same GPU
    second = load_engine(digits_onnx, options=options)
    second.run({"pixels": eval_pixels[:4]})

    # Assert: same folder, no new file, every engine file untouched
    assert second.engine_cache == first.engine_cache
    after = {p: p.stat().st_mtime_ns for p in second.engine_cache.rglob("*") if p.is_file()}
    assert after == built


def test_a_cuda_that_cannot_start_is_recorded_as_a_fallback(digits_onnx: Path):
    # A process that sees no GPU: ONNX Runtime falls back to the CPU, and the engine says so.
    code = (
        "from fogline.model import EngineOptions, engine_fallback, load_engine\n"
        f"e = load_engine({str(digits_onnx)!r}, options=EngineOptions(providers=('cuda',)))\n"
        "print(e.device, engine_fallback(e))\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["CPUExecutionProvider", CUDA]


def test_the_search_builds_measures_and_records_the_gpu_variants(
    tmp_path: Path, digits_onnx: Path, digits_calibration: Dataset, digits_eval: Dataset
):
    has_tensorrt = tensorrt_version() != "unknown"
    # Execute
    options = OptimizeOptions(variants=("cuda-*", "tensorrt-*"), duration_s=0.2, sensitivity=False)
    report = optimize(digits_onnx, digits_calibration, digits_eval, tmp_path / "out", options)

    # Assert
    ran = {v.name: (v.status, v.device, v.error) for v in report.variants}
    assert ran["cuda-fp32"][:2] == ("ok", CUDA), ran
    assert ran["cuda-fp16"][:2] == ("ok", CUDA), ran
    if has_tensorrt:
        assert ran["tensorrt-fp16"][:2] == ("ok", TENSORRT), ran
        assert ran["tensorrt-int8"][:2] == ("ok", TENSORRT), ran
    else:  # planned only where TensorRT is installed, and the report says why not
        assert "libnvinfer" in report.skipped["tensorrt-*"]
    assert report.machine["gpu"] and report.machine["tensorrt"]
    chosen = report.variant(report.selected)
    from fogline.model import Manifest

    manifest = Manifest.read(tmp_path / "out")
    # a selection on the CPU writes no provider fields (old fogline reads its manifest)
    on_cpu = chosen.device == "CPUExecutionProvider"
    assert manifest.engine.device == (None if on_cpu else chosen.device)
    assert (manifest.engine.providers is None) == on_cpu
    if chosen.name == "tensorrt-int8":
        assert (tmp_path / "out" / "model.calibration.flatbuffers").is_file()
