"""The ``drift`` step: refused at load time when it cannot work, alarms on real items, rules on it.

Real things throughout: the bundled digits model on ONNX Runtime, River's
ADWIN, SQLite, the bundled drifting digits stream; the CLI as a process.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fogline.errors import ConfigError
from fogline.examples import DRIFT_AT, digits_drifting_stream, digits_model_path
from fogline.model import Signature, TensorSpec
from fogline.pipeline import Metrics, Pipeline, load_spec, plan
from fogline.pipeline._item import Item
from fogline.pipeline.stages import DriftSpec
from support.digits_pipeline import LABELS, write_spec

EXAMPLE = digits_model_path().parent.parent / "digits_monitor" / "pipeline.yaml"
PIXELS = Signature((TensorSpec("pixels", "float32", ("batch", 1, 8, 8)),), ())


def _spec(*drift: dict[str, Any], rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": "watched",
        "sources": [
            {
                "type": "dataset",
                "name": "scanner",
                "function": "fogline.examples:digits_drifting_stream",
            }
        ],
        "preprocess": [
            {"type": "normalize", "scale": 0.0625},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
        "model": {"path": str(digits_model_path().parent), "max_batch": 32, "max_wait_ms": 2},
        "postprocess": [{"type": "classify", "labels": LABELS}, *drift],
        "rules": rules or [],
        "sinks": [{"type": "jsonl", "name": "alarmed", "path": "alarmed.jsonl"}],
        "store": False,
    }


def _refusal(tmp_path: Path, spec: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        checked = plan(load_spec(write_spec(tmp_path, spec)))
        checked.model.engine.close()
    return str(caught.value)


# --- refused before anything runs --------------------------------------------------------------


def test_an_unknown_detector_is_refused_with_its_key_path(tmp_path: Path) -> None:
    message = _refusal(tmp_path, _spec({"type": "drift", "detector": "cusum"}))
    assert "postprocess[1].detector: no drift detector 'cusum'" in message
    assert "adwin, page-hinkley, ks or psi" in message


def test_on_naming_nothing_is_refused_with_what_exists(tmp_path: Path) -> None:
    message = _refusal(tmp_path, _spec({"type": "drift", "on": "confidence"}))
    assert "postprocess[1] (drift): on: 'confidence'" in message
    assert "input, logits, confident, label, score" in message


def test_a_reference_file_that_does_not_fit_the_input_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "ref.npz", pixels=np.zeros((100, 1, 8, 7), np.float32))
    message = _refusal(tmp_path, _spec({"type": "drift", "detector": "ks", "reference": "ref.npz"}))
    assert "postprocess[1] (drift): reference:" in message
    assert "[32, 1, 8, 7], the model expects [batch, 1, 8, 8]" in message


def test_a_missing_reference_file_a_short_reference_and_a_bad_parameter_are_refused(
    tmp_path: Path,
) -> None:
    missing = _refusal(tmp_path, _spec({"type": "drift", "reference": "nowhere.npz"}))
    assert "postprocess[1].reference: no such reference file" in missing
    short = _refusal(tmp_path, _spec({"type": "drift", "reference": {"items": 5}}))
    assert "reference: adwin needs at least 20 items, got 5" in short
    bad = _refusal(tmp_path, _spec({"type": "drift", "detector": "ks", "params": {"windw": 9}}))
    assert "postprocess[1] (drift): params:" in bad and "windw" in bad


def test_rules_may_read_the_drift_keys_and_nothing_else(tmp_path: Path) -> None:
    drift = {"type": "drift", "on": "score", "key": "score_drift"}
    typo = {"name": "x", "when": "score_drift.alrm", "then": ["alarmed"]}
    message = _refusal(tmp_path, _spec(drift, rules=[typo]))
    assert "rules[0].when:" in message and "score_drift has alarm, detector, score" in message
    twice = _refusal(tmp_path, _spec({"type": "drift"}, {"type": "drift", "on": "score"}))
    assert "postprocess[2] (drift): key: result['drift'] is already written" in twice


def test_fogline_check_refuses_it_in_one_line_with_exit_status_2(tmp_path: Path) -> None:
    path = write_spec(tmp_path, _spec({"type": "drift", "on": "input", "detector": "kss"}))
    done = subprocess.run(
        [sys.executable, "-m", "fogline", "check", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "postprocess[1].detector: no drift detector 'kss'" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


# --- the step on real items --------------------------------------------------------------------


def _items(start: int, stop: int) -> list[Item]:
    pixels, _ = digits_drifting_stream()
    data = (pixels[start:stop] / 16.0).astype(np.float32)[:, None]
    return [
        Item("scanner", i, 0.0, x, {"position": f"scan#{i}"})
        for i, x in zip(range(start, stop), data, strict=True)
    ]


def test_the_step_alarms_after_the_change_and_reports_it(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: KS on the 64 pixels, the first 200 items as the reference, metrics bound
    spec = DriftSpec(type="drift", detector="ks", reference={"items": 200}, budget=None)
    stage: Any = spec.build(PIXELS)
    metrics = Metrics()
    stage.bind_metrics(metrics)
    # Execute
    with caplog.at_level(logging.WARNING, logger="fogline.pipeline"):
        verdicts = [stage(item).result["drift"] for item in _items(0, 900)]
    # Assert
    alarmed = [i for i, v in enumerate(verdicts) if v["alarm"]]
    assert alarmed and DRIFT_AT < alarmed[0] < DRIFT_AT + 200
    assert all(v["alarm"] for v in verdicts[alarmed[0] :])
    assert {v["detector"] for v in verdicts} == {"ks"}
    events = [r.getMessage() for r in caplog.records if "alarm on" in r.getMessage()]
    assert events == [
        f"drift drift: alarm on input (ks): score {verdicts[alarmed[0]]['score']:.4g} "
        f"at scan#{alarmed[0]}"
    ]
    reading = metrics.snapshot().extra["drift"]["drift"]
    assert reading.alarm and reading.alarms == 1 and reading.detector == "ks"


def test_a_subsample_of_features_and_a_warmup_still_find_the_change() -> None:
    spec = DriftSpec(
        type="drift",
        detector="psi",
        reference={"items": 200},
        warmup=50,
        features=16,
        every=8,
        budget=None,
    )
    stage: Any = spec.build(PIXELS)
    verdicts = [stage(item).result["drift"] for item in _items(0, 800)]
    alarmed = [i for i, v in enumerate(verdicts) if v["alarm"]]
    assert alarmed and DRIFT_AT < alarmed[0] < DRIFT_AT + 150
    assert stage._watches["scanner"].detector.features == 16


def test_bad_items_are_item_errors_and_non_finite_ones_are_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from fogline.errors import ItemError

    spec = DriftSpec(type="drift", detector="adwin", reference={"items": 20}, every=16, budget=None)
    stage: Any = spec.build(PIXELS)
    for item in _items(0, 20):
        stage(item)
    with pytest.raises(ItemError, match="scan#99"):
        stage(Item("scanner", 99, 0.0, np.zeros(5, np.float32), {"position": "scan#99"}))
    items = _items(20, 36)
    items[3].data = np.full((1, 8, 8), np.nan, np.float32)
    with caplog.at_level(logging.WARNING, logger="fogline.pipeline"):
        for item in items:
            stage(item)
    assert stage.skipped == 1 and "hold NaN or infinity" in caplog.text


def test_a_non_finite_item_while_learning_the_reference_is_left_out_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spec = DriftSpec(type="drift", detector="ks", reference={"items": 200}, budget=None)
    stage: Any = spec.build(PIXELS)
    items = _items(0, 900)
    items[49].data = np.full((1, 8, 8), np.nan, np.float32)

    with caplog.at_level(logging.WARNING, logger="fogline.pipeline"):
        verdicts = [stage(item).result["drift"] for item in items]  # no ItemError

    assert stage.skipped == 1 and "scan#49 holds NaN or infinity" in caplog.text
    # The reference is the first 200 finite items, learned once, and the change is still found.
    assert stage._watches["scanner"].detector is not None
    alarmed = [i for i, v in enumerate(verdicts) if v["alarm"]]
    assert alarmed and DRIFT_AT < alarmed[0] < DRIFT_AT + 200


def test_over_its_budget_the_step_feeds_fewer_items_and_every_item_keeps_a_verdict() -> None:
    # Prepare: a tight loop, where the step is all the time there is
    spec = DriftSpec(type="drift", detector="ks", reference={"items": 100}, budget=0.02)
    stage: Any = spec.build(PIXELS)
    items = _items(0, 500)
    verdicts = []
    # Execute: long enough to be judged (every fifth of a second)
    started = time.perf_counter()
    while time.perf_counter() - started < 0.6:
        verdicts += [stage(item).result["drift"] for item in items]
    # Assert: slowed down to its budget, yet nothing lost its verdict
    assert stage.stride > 1
    assert all(set(v) == {"score", "alarm", "detector"} for v in verdicts)


# --- in a running pipeline ---------------------------------------------------------------------


def test_the_bundled_example_alarms_after_the_change_and_not_before(tmp_path: Path) -> None:
    # Prepare: the example as shipped, its outputs in tmp_path, bounded by max_items
    checked = plan(load_spec(EXAMPLE, outputs=tmp_path))
    pipeline = Pipeline(checked)
    registry = CollectorRegistry()
    registry.register(pipeline.metrics.prometheus_collector("digits-monitor"))
    # Execute
    try:
        snapshot = pipeline.run(max_items=1100)
    finally:
        pipeline.close()
        checked.model.engine.close()
    # Assert: every item routed by the rule came after the change; some did
    assert snapshot.total("processed") == 1100
    routed = [json.loads(line) for line in (tmp_path / "alarmed.jsonl").read_text().splitlines()]
    sequences = [r["sequence"] for r in routed]
    assert sequences and min(sequences) >= DRIFT_AT and min(sequences) < DRIFT_AT + 150
    assert sequences == list(range(min(sequences), 1100))
    assert all(
        r["outputs"]["drift"]["alarm"] or r["outputs"]["score_drift"]["alarm"] for r in routed
    )
    text = generate_latest(registry).decode()
    assert 'fogline_drift_alarm{detector="ks",pipeline="digits-monitor",stage="drift"} 1.0' in text
    assert (
        'fogline_drift_alarms_total{detector="ks",pipeline="digits-monitor",stage="drift"} 1.0'
        in text
    )
    assert (
        'fogline_drift_score{detector="adwin",pipeline="digits-monitor",stage="score_drift"}'
        in text
    )
