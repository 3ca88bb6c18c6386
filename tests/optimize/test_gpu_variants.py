"""GPU variants in the search, on any machine: which are planned for which providers, the
TensorRT calibration table, and what a search records about where each variant ran.

Running the GPU variants needs a GPU: ``tests/model/test_gpu_engines.py``, marked ``gpu``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnxruntime.quantization.CalTableFlatBuffers.TrtTable import TrtTable
from pydantic import BaseModel, ConfigDict

from fogline.model import Manifest, calibration_table_path
from fogline.optimize import OptimizeOptions, optimize
from fogline.optimize._report import VariantResult
from fogline.optimize._search import _ran_on
from fogline.optimize._variants import (
    CPU,
    CUDA,
    TENSORRT,
    BuildContext,
    build_tensorrt_int8,
    gpu_plans,
)


#: The engine entry of fogline.yaml before execution providers were recorded (extra keys
#: forbidden): a manifest of a CPU variant must still validate against it.
class OldEngineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str
    precision: str
    threads: int | None = None
    graph_optimization: str = "all"


OLD_ENGINE_KEYS = set(OldEngineEntry.model_fields)
FAST = {"duration_s": 0.05, "threads": 1, "sensitivity": False}
HAS_CUDA = CUDA in ort.get_available_providers()


def test_a_cpu_build_plans_no_gpu_variant_and_says_so_in_one_line():
    plans, skipped = gpu_plans(["AzureExecutionProvider", CPU])
    assert plans == []
    assert list(skipped) == ["gpu"]
    assert "\n" not in skipped["gpu"]
    assert "Azure, CPU" in skipped["gpu"] and "onnxruntime-gpu" in skipped["gpu"]


def test_cuda_alone_plans_the_cuda_variants_and_says_why_not_tensorrt():
    plans, skipped = gpu_plans([CUDA, CPU])
    assert [(p.name, p.precision, p.providers) for p in plans] == [
        ("cuda-fp32", "fp32", (CUDA,)),
        ("cuda-fp16", "fp16", (CUDA,)),
    ]
    assert list(skipped) == ["tensorrt-*"]


def test_tensorrt_and_cuda_plan_all_four_gpu_variants():
    plans, skipped = gpu_plans([TENSORRT, CUDA, CPU])
    assert skipped == {}
    by_name = {p.name: p for p in plans}
    assert set(by_name) == {"cuda-fp32", "cuda-fp16", "tensorrt-fp16", "tensorrt-int8"}
    assert by_name["tensorrt-int8"].precision == "int8"
    assert by_name["tensorrt-fp16"].precision == "fp16"
    for name in ("tensorrt-fp16", "tensorrt-int8"):
        assert by_name[name].providers == (TENSORRT, CUDA)  # what TensorRT leaves runs on CUDA
    assert all(p.engine == "onnxruntime" for p in plans)


def test_the_tensorrt_int8_variant_carries_a_calibration_table_of_the_calibration_data(
    tmp_path: Path, digits_model: Path, digits_calibration
):
    # Prepare
    ctx = BuildContext(digits_model, tmp_path, digits_calibration.limit(64))
    out = tmp_path / "tensorrt-int8.onnx"

    # Execute
    build_tensorrt_int8(ctx, out)

    # Assert: the model is the FP32 one, the table has a range for its tensors
    assert out.read_bytes() == digits_model.read_bytes()
    table = calibration_table_path(out)
    assert table.name == "tensorrt-int8.calibration.flatbuffers"
    parsed = TrtTable.GetRootAsTrtTable(table.read_bytes(), 0)
    ranges = {
        parsed.Dict(i).Key().decode(): float(parsed.Dict(i).Value())
        for i in range(parsed.DictLength())
    }
    graph = onnx.load(str(digits_model)).graph
    produced = {o for node in graph.node for o in node.output}
    assert "pixels" in ranges and "logits" in ranges
    assert set(ranges) <= produced | {i.name for i in graph.input}
    assert all(math.isfinite(v) and v >= 0 for v in ranges.values())
    pixels = np.concatenate([b["pixels"] for b in digits_calibration.limit(64).batches])
    assert ranges["pixels"] == pytest.approx(float(np.abs(pixels).max()), rel=1e-5)


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has the CUDA provider")
def test_a_gpu_variant_the_build_cannot_run_fails_alone_and_the_search_goes_on(
    tmp_path: Path, digits_model: Path, digits_calibration, digits_eval
):
    # Prepare: say CUDA is there (an explicit input), on a build that lacks it
    out = tmp_path / "out"
    options = OptimizeOptions(providers=(CPU, "cuda"), variants=("cuda-fp32",), **FAST)

    # Execute
    report = optimize(digits_model, digits_calibration, digits_eval.limit(200), out, options)

    # Assert
    cuda = report.variant("cuda-fp32")
    assert cuda.status == "failed" and cuda.providers == [CUDA]
    assert "CUDAExecutionProvider" in (cuda.error or "") and "onnxruntime-gpu" in (cuda.error or "")
    assert report.selected == "ort-fp32"
    assert "tensorrt-*" in report.skipped and "gpu" not in report.skipped
    data = json.loads((out / "report.json").read_text())
    baseline = next(v for v in data["variants"] if v["name"] == "ort-fp32")
    assert baseline["device"] == CPU and baseline["providers"] == [CPU]
    assert baseline["fallback"] is None
    assert data["machine"]["providers"] == ort.get_available_providers()
    engine = yaml.safe_load((out / "fogline.yaml").read_text())["engine"]
    assert set(engine) <= OLD_ENGINE_KEYS  # a CPU selection pins no provider


def test_a_search_limited_to_the_cpu_says_in_one_line_that_it_has_no_gpu_variants(
    tmp_path: Path, digits_model: Path, digits_calibration
):
    options = OptimizeOptions(providers=("cpu",), variants=("ort-fp16",), **FAST)
    report = optimize(digits_model, digits_calibration, None, tmp_path / "out", options)
    assert "onnxruntime-gpu" in report.skipped["gpu"]
    assert [v.name for v in report.variants] == ["ort-fp32", "ort-fp16"]
    assert {v.device for v in report.variants} == {CPU}
    # the manifest of the CPU selection reads the same to a fogline from before providers
    # were recorded: its engine entry has only the old fields (which forbade others)
    written = yaml.safe_load((tmp_path / "out" / "fogline.yaml").read_text())
    assert written["schema_version"] == 1
    OldEngineEntry.model_validate(written["engine"])
    Manifest.read(tmp_path / "out")


@pytest.mark.parametrize(
    ("providers", "device", "fallback", "written"),
    [
        ([CPU], CPU, None, {}),
        (
            [TENSORRT, CUDA],
            TENSORRT,
            None,
            {"providers": [TENSORRT, CUDA, CPU], "device": TENSORRT},
        ),
        ([CUDA], CPU, CUDA, {"providers": [CUDA, CPU], "device": CPU, "fallback": CUDA}),
    ],
)
def test_the_manifest_records_providers_only_where_they_say_something(
    providers: list[str], device: str, fallback: str | None, written: dict[str, object]
):
    selected = VariantResult("v", "onnxruntime", "fp32", providers=providers)
    assert _ran_on(selected, device, fallback) == written


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has the CUDA provider")
def test_optimize_provider_cuda_on_a_cpu_build_is_one_line_and_exit_2(
    tmp_path: Path, digits_model: Path
):
    done = subprocess.run(
        [
            *(sys.executable, "-m", "fogline", "optimize", str(digits_model)),
            *("-c", "fogline.examples:digits_calibration", "-o", str(tmp_path / "out")),
            *("--provider", "cuda"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "CUDAExecutionProvider" in done.stderr and "onnxruntime-gpu" in done.stderr
    assert not (tmp_path / "out").exists()
