"""The variant search end to end on the real digits model, and its selection rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fogline.model import Manifest, load_engine
from fogline.optimize import Dataset, OptimizeOptions, VariantResult, optimize
from fogline.optimize._measure import Agreement, Budget
from fogline.optimize._search import MIN_SPEEDUP, _select

FAST = {"duration_s": 0.05, "threads": 1}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, digits_model, digits_calibration, digits_eval):
    out = tmp_path_factory.mktemp("opt") / "digits"
    options = OptimizeOptions(
        variants=("ort-int8-static-minmax", "ort-int8-dynamic", "openvino-fp32"),
        sensitivity=False,
        **FAST,
    )
    report = optimize(digits_model, digits_calibration, digits_eval, out, options)
    return out, report


def test_report_json_has_every_field_a_tool_reads(digits_run):
    out, report = digits_run
    data = json.loads((out / "report.json").read_text())
    assert data["selected"] == report.selected
    names = [v["name"] for v in data["variants"]]
    assert names[0] == "ort-fp32" and "ort-int8-static-minmax" in names
    for v in data["variants"]:
        assert v["status"] == "ok", v
        assert v["engine"] in ("onnxruntime", "openvino")
        assert v["precision"] in ("fp32", "int8")
        assert (out / v["file"]).is_file()
        assert v["size_bytes"] == (out / v["file"]).stat().st_size or v["engine"] == "openvino"
        assert 0 < v["latency_ms"]["p50"] <= v["latency_ms"]["p99"]
        assert set(v["latency_ms"]) >= {"p50", "p99", "batch1", "batch8"}
        assert v["throughput"] > 0
        assert 90.0 < v["accuracy"] <= 100.0
        assert set(v["agreement"]) == {"top1", "max_abs", "mean_abs", "max_rel"}
    assert "not selected by --variants" in data["skipped"]["ort-int8-static-entropy"]
    assert "<svg" in (out / "report.html").read_text()


def test_selected_model_and_manifest_are_written(digits_run, digits_model):
    out, report = digits_run
    chosen = report.variant(report.selected)
    manifest = Manifest.read(out)
    assert manifest.verify(out) == out / "model.onnx"
    assert manifest.engine.backend == chosen.engine == "onnxruntime" or chosen.engine == "openvino"
    assert manifest.engine.precision == chosen.precision
    assert manifest.metrics["variant"] == chosen.name
    # what the source manifest says about the model travels with it
    source = Manifest.read(digits_model.parent)
    assert manifest.labels == source.labels and manifest.preprocessing == source.preprocessing
    assert manifest.name == "digits"
    engine = load_engine(out / "model.onnx")
    assert engine.signature.input_names == ("pixels",)


def test_int8_keeps_digits_accuracy_within_one_point(digits_run):
    _, report = digits_run
    base = report.variant("ort-fp32").accuracy
    static = report.variant("ort-int8-static-minmax").accuracy
    assert base is not None and static is not None
    assert base - static <= 1.0


def test_selection_never_picks_slower_or_out_of_budget_variants(digits_run):
    _, report = digits_run
    base = report.variant(report.baseline)
    chosen = report.variant(report.selected)
    assert chosen.within_budget
    assert chosen is base or chosen.p50 * MIN_SPEEDUP <= base.p50


def _result(name: str, p50: float, within: bool, throughput: float = 1.0) -> VariantResult:
    r = VariantResult(name, "onnxruntime", "int8")
    r.timings = {
        "latency_ms": {"batch1": {"p50": p50, "p99": p50 * 2}},
        "throughput": {"batch8": throughput},
    }
    r.within_budget = within
    return r


def test_select_rules_on_constructed_results():
    base = _result("ort-fp32", 10.0, True, 100.0)
    slower = _result("slow", 11.0, True, 90.0)
    noise = _result("noise", 9.8, True, 101.0)  # 2 % faster: within noise, not taken
    out_of_budget = _result("wrong", 2.0, False, 900.0)
    good = _result("good", 6.0, True, 150.0)
    best = _result("best", 5.0, True, 140.0)
    options = OptimizeOptions()
    assert _select([base, slower, noise, out_of_budget, good, best], base, options) is best
    assert _select([base, slower, noise, out_of_budget], base, OptimizeOptions()) is base
    by_throughput = OptimizeOptions(objective="throughput")
    for r in (base, good, best):
        r.selected = False
    assert _select([base, good, best], base, by_throughput) is good


def test_budget_criterion_follows_the_outputs():
    classes = {"logits": np.zeros((4, 10), np.float32)}
    detections = {"scores": np.zeros((4, 100, 80), np.float32)}
    assert Budget.decide(1.0, None, True, classes).criterion == "accuracy"
    assert Budget.decide(1.0, None, False, classes).criterion == "top1"
    abs_budget = Budget.decide(1.0, None, False, detections)
    assert abs_budget.criterion == "abs" and abs_budget.max_rel_error == pytest.approx(0.02)
    assert abs_budget.max_abs_error is None


def test_judge_reports_why_a_variant_is_out():
    base = VariantResult("ort-fp32", "onnxruntime", "fp32", accuracy=98.0)
    base.judge(None, Budget("accuracy", 1.0, None))
    worse = VariantResult(
        "x", "onnxruntime", "int8", accuracy=96.5, agreement=Agreement(97.0, 0.2, 0.01)
    )
    worse.judge(base, Budget("accuracy", 1.0, 0.1))
    assert not worse.within_budget
    assert "accuracy drop 1.50 pt > 1 pt" in worse.budget_reason
    assert "max abs error 0.2 > 0.1" in worse.budget_reason


def _cancelling_model(path: Path) -> Path:
    """y = (x @ W + 1000) - 1000: 8-bit activations around 1000 lose all of x's detail."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
        helper.make_node("Add", ["h", "big"], ["shifted"], name="shift_up"),
        helper.make_node("Sub", ["shifted", "big"], ["y"], name="shift_down"),
    ]
    graph = helper.make_graph(
        nodes,
        "cancel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [
            numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
            numpy_helper.from_array(np.full((8,), 1000, np.float32), "big"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_sensitivity_check_keeps_the_damaging_nodes_in_fp32(tmp_path):
    model = _cancelling_model(tmp_path / "cancel.onnx")
    x = np.random.default_rng(1).standard_normal((256, 8)).astype(np.float32)
    cal = Dataset("cal", tuple({"x": x[i : i + 32]} for i in range(0, 128, 32)))
    ev = Dataset("eval", tuple({"x": x[i : i + 32]} for i in range(128, 256, 32)))
    report = optimize(
        model,
        cal,
        ev,
        tmp_path / "out",
        OptimizeOptions(variants=("ort-int8-static-minmax",), **FAST),
    )
    full = report.variant("ort-int8-static-minmax")
    assert not full.within_budget and full.agreement and full.agreement.top1 < 90
    mixed = report.variant("ort-int8-mixed-minmax")
    assert mixed.within_budget
    assert "shift_down" in mixed.excluded_nodes
    assert report.selected != "ort-int8-static-minmax"


def test_a_failure_mid_search_leaves_nothing_behind(tmp_path, digits_model, digits_calibration):
    def explode(step: str, done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("stopped on purpose")

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="on purpose"):
        optimize(
            digits_model, digits_calibration, None, out, OptimizeOptions(**FAST), progress=explode
        )
    assert list(tmp_path.iterdir()) == []


def test_results_replace_earlier_ones_and_keep_other_files(
    tmp_path, digits_model, digits_calibration
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "report.json").write_text("old")
    optimize(
        digits_model,
        digits_calibration,
        None,
        out,
        OptimizeOptions(
            variants=("ort-int8-dynamic",), sensitivity=False, keep_variants=False, **FAST
        ),
    )
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["selected"]
    assert not (out / "variants").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_output_folder_has_the_usual_permissions(tmp_path, digits_model, digits_calibration):
    import os

    out = tmp_path / "out"
    optimize(
        digits_model,
        digits_calibration,
        None,
        out,
        OptimizeOptions(variants=("none",), sensitivity=False, **FAST),
    )
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask
    assert ((out / "model.onnx").stat().st_mode & 0o777) == 0o666 & ~umask


def test_a_front_runner_that_is_not_faster_when_re_timed_is_passed_over():
    base = _result("ort-fp32", 10.0, True, 100.0)
    lucky = _result("lucky", 4.0, True)  # flattered by its one timing
    real = _result("real", 6.0, True)
    re_timed = {"lucky": 1.01, "real": 1.6}

    chosen = _select([base, lucky, real], base, OptimizeOptions(), lambda r: re_timed[r.name])

    assert chosen is real
    assert lucky.confirmed_speedup == pytest.approx(1.01) and not lucky.faster_than_baseline
    assert real.confirmed_speedup == pytest.approx(1.6)


def test_the_baseline_stays_when_no_front_runner_holds_up():
    base = _result("ort-fp32", 10.0, True, 100.0)
    fast = _result("fast", 5.0, True)
    assert _select([base, fast], base, OptimizeOptions(), lambda r: 0.9) is base
    assert base.selected and not fast.selected


def test_the_selected_variant_was_re_timed_in_a_real_search(digits_run):
    _, report = digits_run
    chosen = report.variant(report.selected)
    if chosen.name != report.baseline:
        assert chosen.confirmed_speedup is not None and chosen.confirmed_speedup >= MIN_SPEEDUP
    data = report.to_dict()
    assert all("confirmed_speedup" in v for v in data["variants"])


def test_every_variant_carries_its_energy_per_inference_and_how_it_was_obtained(digits_run):
    out, report = digits_run
    data = json.loads((out / "report.json").read_text())
    html = (out / "report.html").read_text()

    for v in data["variants"]:
        energy = v["energy"]
        assert set(energy["joules_per_item"]) == {"batch1", "batch8"}
        assert v["joules_per_item"] == energy["joules_per_item"]["batch1"] > 0
        kind = "measured" if energy["measured"] else "estimated"
        assert energy["label"].startswith(f"{kind} (")
        assert energy["label"] in report.energy_text()
    first = data["settings"]["batches"][0]
    assert f"<th>mJ/item (b{first})</th>" in html
    assert f"Energy per inference: {report.energy_text()}" in html
    for v in report.variants:  # each row says how its own figure was obtained
        row = html.split(f"<td>{v.name}", 1)[1].split("</tr>", 1)[0]
        assert f"{1000 * v.joules_per_item:.3f} ({v.energy_kind})" in row
