"""The ``fogline`` command as a user runs it: real processes, real files, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fogline.examples import digits_split

FAST = ["--duration", "0.05", "--threads", "1"]


def fogline(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},  # a wide terminal: table cells stay whole
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def calibration_npz(tmp_path_factory) -> Path:
    pixels, labels = digits_split("eval")
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, pixels=pixels[:128], labels=labels[:128])
    return path


def test_optimize_end_to_end(tmp_path, digits_model, calibration_npz):
    out = tmp_path / "out"
    result = fogline(
        "optimize",
        digits_model,
        "--calibration",
        calibration_npz,
        "--eval",
        calibration_npz,
        "--out",
        out,
        "--variants",
        "ort-int8-static-*",
        "--calibrate",
        "minmax",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    assert "selected" in result.stdout and "ort-int8-static-minmax" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert {v["name"] for v in report["variants"]} >= {"ort-fp32", "ort-int8-static-minmax"}
    assert (out / "model.onnx").is_file() and (out / "fogline.yaml").is_file()

    bench = fogline("bench", out, "--batch", "1,4", "--duration", "0.1", "--no-spin", "--json")
    assert bench.returncode == 0, bench.stderr
    figures = json.loads(bench.stdout)
    assert [r["batch"] for r in figures["results"]] == [1, 4]
    assert figures["spin"] is False and figures["graph_optimization"] == "all"
    assert figures["backend"] == report_engine(report)
    assert figures["device"] == "CPUExecutionProvider" or figures["backend"] == "openvino"


def report_engine(report: dict) -> str:
    return next(v["engine"] for v in report["variants"] if v["name"] == report["selected"])


def test_bench_prints_a_table_with_percentiles(digits_model):
    result = fogline("bench", digits_model, "--batch", "1,8", "--duration", "0.1")
    assert result.returncode == 0, result.stderr
    for word in (
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "items/s",
        "mJ/item",
        "energy ",  # measured (RAPL ...) or estimated (CPU time x ... W per core)
        "onnxruntime",
        "fp32",
        "CPUExecutionProvider",
        "peak memory",
    ):
        assert word in result.stdout


def test_inspect_marks_dynamic_dimensions(digits_model):
    result = fogline("inspect", digits_model)
    assert result.returncode == 0, result.stderr
    assert "pixels" in result.stdout and "[batch, 1, 8, 8]" in result.stdout
    assert "logits" in result.stdout and "opset" in result.stdout


def test_truncated_model_is_refused(tmp_path, digits_model, calibration_npz):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(digits_model.read_bytes()[:5000])
    out = tmp_path / "out"
    result = fogline("optimize", bad, "-c", calibration_npz, "-o", out)
    assert_clean_error(result, "broken.onnx")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken.onnx"]


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("these are my notes, not a model\n" * 20)
    assert_clean_error(fogline("bench", bad), "notes.onnx", "ONNX")


def test_external_data_outside_the_folder_is_refused(tmp_path, calibration_npz):
    from onnx import TensorProto, helper

    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 4])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "64")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    out = tmp_path / "out"
    result = fogline("optimize", path, "-c", calibration_npz, "-o", out)
    assert_clean_error(result, "model.onnx", "outside the model's folder")
    assert not out.exists()


def test_calibration_with_wrong_keys_is_refused(tmp_path, digits_model):
    data = tmp_path / "wrong.npz"
    np.savez(data, images=np.zeros((4, 1, 8, 8), np.float32))
    out = tmp_path / "out"
    result = fogline("optimize", digits_model, "-c", data, "-o", out)
    assert_clean_error(result, "wrong.npz", "missing input(s) pixels")
    assert not out.exists()


def test_calibration_with_wrong_dtype_gets_a_hint(tmp_path, digits_model):
    data = tmp_path / "f64.npz"
    np.savez(data, pixels=np.zeros((4, 1, 8, 8), np.float64))
    result = fogline("optimize", digits_model, "-c", data, "-o", tmp_path / "out")
    assert_clean_error(result, "f64.npz", "float64", "astype('float32')")


def test_calibration_with_wrong_shape_is_refused(tmp_path, digits_model):
    data = tmp_path / "shape.npz"
    np.savez(data, pixels=np.zeros((4, 8, 8), np.float32))
    result = fogline("optimize", digits_model, "-c", data, "-o", tmp_path / "out")
    assert_clean_error(result, "shape.npz", "[4, 8, 8]", "[batch, 1, 8, 8]")


def test_a_missing_data_file_is_named(tmp_path, digits_model):
    result = fogline("optimize", digits_model, "-c", tmp_path / "nope.npz", "-o", tmp_path / "o")
    assert_clean_error(result, "nope.npz", "no such file")


@pytest.mark.parametrize(
    "option",
    [
        ["--objective", "fastest"],
        ["--batch", "1,x"],
        ["--calibrate", "minmax,magic"],
        ["--threads", "0"],
    ],
)
def test_unknown_option_values_exit_2(tmp_path, digits_model, calibration_npz, option):
    out = tmp_path / "out"
    result = fogline("optimize", digits_model, "-c", calibration_npz, "-o", out, *option)
    assert_clean_error(result)
    assert option[0] in result.stderr
    assert not out.exists()


def test_bench_on_a_tampered_model_folder_is_refused(tmp_path, digits_model, calibration_npz):
    out = tmp_path / "out"
    assert (
        fogline(
            "optimize",
            digits_model,
            "-c",
            calibration_npz,
            "-o",
            out,
            "--variants",
            "none",
            "--no-sensitivity",
            *FAST,
        ).returncode
        == 0
    )
    with open(out / "model.onnx", "ab") as fh:
        fh.write(b"x")
    assert_clean_error(fogline("bench", out), "model.onnx", "the manifest says")


def test_optimize_from_torch_adds_pruned_variants(tmp_path):
    out = tmp_path / "out"
    result = fogline(
        "optimize",
        "--from-torch",
        "fogline.examples.digits_torch:teacher",
        "--calibration",
        "fogline.examples:digits_calibration",
        "--eval",
        "fogline.examples:digits_eval",
        "--train",
        "fogline.examples:digits_train",
        "--input-names",
        "pixels",
        "--output-names",
        "logits",
        "--prune",
        "structured:0.5",
        "--epochs",
        "1",
        "--variants",
        "torch-prune-*",
        "--no-sensitivity",
        "--out",
        out,
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    names = {v["name"]: v for v in report["variants"]}
    assert names["torch-prune-structured-50"]["status"] == "ok"
    assert names["torch-prune-structured-50"]["accuracy"] > 90


def test_distill_command_reports_teacher_and_student(tmp_path):
    out = tmp_path / "out"
    result = fogline(
        "distill",
        "--teacher",
        "fogline.examples.digits_torch:teacher",
        "--student",
        "fogline.examples.digits_torch:student",
        "--train",
        "fogline.examples:digits_train",
        "--eval",
        "fogline.examples:digits_eval",
        "--input-names",
        "pixels",
        "--output-names",
        "logits",
        "--epochs",
        "3",
        "--out",
        out,
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert [v["name"] for v in report["variants"]] == ["ort-fp32", "torch-distilled-student"]
    assert "torch-distilled-student" in result.stdout


def test_from_torch_with_a_bad_factory_is_refused(tmp_path):
    result = fogline(
        "optimize",
        "--from-torch",
        "fogline.examples:nothing_here",
        "-c",
        "fogline.examples:digits_calibration",
        "-o",
        tmp_path / "out",
    )
    assert_clean_error(result, "nothing_here")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, message",
    [
        (["--graph-optimization", "fast"], "graph_optimization must be one of"),
        (["--provider", "NoSuchExecutionProvider"], "not available in this onnxruntime build"),
        (["--backend", "tensorflow"], "unknown backend"),
        (["--batch", "0"], "--batch"),
    ],
)
def test_bench_refuses_unknown_values(digits_model, option, message):
    assert_clean_error(fogline("bench", digits_model, "--duration", "0.05", *option), message)
