"""Pruning and distillation on the real digits network, measured like every variant."""

from __future__ import annotations

import pytest

from fogline.errors import ConfigError
from fogline.examples.digits_torch import student, teacher
from fogline.model import load_engine
from fogline.optimize import OptimizeOptions, load_dataset, optimize, quantized
from fogline.optimize._compress import (
    FitOptions,
    distill_plan,
    parse_prune,
    prune_magnitude,
    prune_plan,
    sparsity,
)

FAST = {"duration_s": 0.05, "threads": 1, "sensitivity": False}


@pytest.fixture(scope="module")
def digits_train(digits_model):
    return load_dataset("fogline.examples:digits_train", load_engine(digits_model).signature)


def test_pruned_variants_are_smaller_and_keep_accuracy(
    tmp_path, digits_model, digits_train, digits_calibration, digits_eval
):
    signature = load_engine(digits_model).signature
    net = teacher()
    fit = FitOptions(epochs=2)
    plans = [
        prune_plan(net, "magnitude", 0.5, digits_train, signature, fit),
        prune_plan(net, "structured", 0.5, digits_train, signature, fit),
    ]
    plans.append(quantized(plans[1]))
    report = optimize(
        digits_model,
        digits_calibration,
        digits_eval,
        tmp_path / "out",
        OptimizeOptions(variants=("torch-prune-*",), **FAST),
        extra_plans=plans,
    )
    base = report.variant("ort-fp32")
    magnitude = report.variant("torch-prune-magnitude-50")
    structured = report.variant("torch-prune-structured-50")
    for v in (magnitude, structured):
        assert v.status == "ok", v.error
        assert v.accuracy is not None and base.accuracy is not None
        assert v.accuracy >= base.accuracy - 3.0
    assert "zero weights" in magnitude.notes and "compressed" in magnitude.notes
    # channels really removed: about a quarter of the weights remain
    assert structured.size_bytes < 0.5 * base.size_bytes
    # pruning and quantization compound
    both = report.variant("torch-prune-structured-50-int8")
    assert both.status == "ok" and both.precision == "int8", both.error
    assert both.size_bytes < 0.4 * structured.size_bytes
    assert both.accuracy is not None and both.accuracy >= structured.accuracy - 1.0
    # the original network is untouched by the pruning of its copies
    assert sparsity(net) < 0.01


def test_magnitude_pruning_zeroes_the_requested_share():
    net = prune_magnitude(teacher(), 0.6)
    assert sparsity(net) == pytest.approx(0.6, abs=0.01)


def test_distilled_student_learns_from_the_teacher(
    tmp_path, digits_model, digits_train, digits_calibration, digits_eval
):
    signature = load_engine(digits_model).signature
    small = student()
    plan = distill_plan(teacher(), small, digits_train, signature, FitOptions(epochs=8))
    report = optimize(
        digits_model,
        digits_calibration,
        digits_eval,
        tmp_path / "out",
        OptimizeOptions(variants=("torch-distilled-student",), **FAST),
        extra_plans=[plan],
    )
    distilled = report.variant("torch-distilled-student")
    base = report.variant("ort-fp32")
    assert distilled.status == "ok", distilled.error
    assert distilled.accuracy is not None and distilled.accuracy > 85.0
    assert distilled.size_bytes < 0.2 * base.size_bytes
    assert "parameters" in distilled.notes


@pytest.mark.parametrize(
    "spec, message",
    [
        ("magnitude", "METHOD:AMOUNT"),
        ("random:0.5", "unknown method"),
        ("structured:1.5", "between 0 and 1"),
    ],
)
def test_bad_prune_specs_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_prune(spec)


def test_fit_options_are_checked():
    with pytest.raises(ConfigError, match="alpha"):
        FitOptions(alpha=2.0)
    with pytest.raises(ConfigError, match="temperature"):
        FitOptions(temperature=0.0)
