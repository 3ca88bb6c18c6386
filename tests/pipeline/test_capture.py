"""The ``capture:`` section: the digits model on ONNX Runtime keeps the items it is unsure of.

Real sources, the real model, a real SQLite store: what is captured is checked
against what the model answered (the stored results) and, for entropy,
against the model run directly on the same images.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fogline.errors import ConfigError
from fogline.examples import PIXEL_SCALE, digits_model_path, digits_stream
from fogline.pipeline import Pipeline, Snapshot, load_spec, plan
from fogline.pipeline._capture import entropy
from fogline.store import ResultStore
from support.digits_pipeline import LABELS, write_spec


def spec(capture: dict[str, Any] | None, **overrides: Any) -> dict[str, Any]:
    """The bundled example's shape: raw uint8 digits, normalized and reshaped for the model."""
    data: dict[str, Any] = {
        "name": "digits",
        "sources": [
            {"type": "dataset", "name": "scanner", "function": "fogline.examples:digits_stream"}
        ],
        "preprocess": [
            {"type": "normalize", "scale": PIXEL_SCALE},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
        "model": {"path": str(digits_model_path().parent), "max_batch": 16, "max_wait_ms": 2},
        "postprocess": [{"type": "classify", "labels": LABELS, "min_score": 0.9}],
        "capture": capture,
    }
    data.update(overrides)
    return data


def run(folder: Path, data: dict[str, Any], **kwargs: Any) -> tuple[Snapshot, Pipeline]:
    checked = plan(load_spec(write_spec(folder, data)))
    pipeline = Pipeline(checked)
    try:
        snapshot = pipeline.run(**kwargs)
    finally:
        pipeline.close()
        checked.model.engine.close()
    return snapshot, pipeline


def index(position: str | None) -> int:
    assert position is not None
    return int(position.rsplit("#", 1)[1])


def test_low_confidence_items_are_captured_with_the_input_the_model_saw(tmp_path: Path):
    snapshot, _ = run(tmp_path, spec({"when": "score < 0.9"}), max_items=300)

    raw, _ = digits_stream()
    with ResultStore(tmp_path / "results.db") as store:
        unsure = [r for r in store.query() if r.result.outputs["score"] < 0.9]
        captures = store.captures()
    assert 3 <= len(unsure) < 300  # the model is unsure of a few digits, not of all
    assert [c.capture.result_id for c in captures] == [r.id for r in unsure]
    for record, result in zip(captures, unsure, strict=True):
        kept = record.capture
        assert kept.answer == result.result.outputs  # the model's answer, as stored
        assert kept.reason == "score < 0.9" and kept.input_name == "pixels"
        assert kept.position == result.result.position
        assert kept.model == "digits" and kept.model_version == result.result.model_version
        assert kept.item_id  # the source's id, or source#sequence until sources set one
        seen = kept.array()  # normalized and reshaped: what reached the model, not the raw bytes
        assert seen.dtype == np.float32 and seen.shape == (1, 8, 8)
        expected = raw[index(kept.position)].astype(np.float32) * np.float32(PIXEL_SCALE)
        np.testing.assert_allclose(seen[0], expected, rtol=1e-6)
    assert snapshot.captures == {"stored": len(unsure), "capped": 0}


def test_entropy_selects_what_the_model_itself_finds_ambiguous(tmp_path: Path):
    raw, _ = digits_stream()
    pixels = (raw[:200].astype(np.float32) * np.float32(PIXEL_SCALE))[:, None]
    session = ort.InferenceSession(str(digits_model_path()), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"pixels": pixels})
    expected = {i for i, row in enumerate(logits) if entropy(row, softmax=True) > 0.3}

    run(tmp_path, spec({"when": "entropy > 0.3"}), max_items=200)

    with ResultStore(tmp_path / "results.db") as store:
        captured = {index(r.capture.position) for r in store.captures()}
    assert expected and captured == expected


def test_entropy_is_zero_for_a_certain_answer_and_ln_k_for_none():
    assert entropy(np.array([0.0, 0.0, 1.0]), softmax=False) == 0.0
    assert entropy(np.zeros(10), softmax=True) == pytest.approx(math.log(10))
    with pytest.raises(ValueError):
        entropy(np.zeros(3), softmax=False)


def test_a_burst_is_cut_at_the_per_minute_cap_and_counted(tmp_path: Path):
    snapshot, pipeline = run(
        tmp_path, spec({"when": "score <= 1", "per_minute": 5, "per_day": 1000}), max_items=100
    )

    with ResultStore(tmp_path / "results.db") as store:
        assert store.capture_count() == 5
    assert snapshot.captures == {"stored": 5, "capped": 95}
    registry = CollectorRegistry()
    registry.register(pipeline.metrics.prometheus_collector("digits"))
    text = generate_latest(registry).decode()
    assert 'fogline_captures_total{outcome="stored",pipeline="digits"} 5.0' in text
    assert 'fogline_captures_total{outcome="capped",pipeline="digits"} 95.0' in text

    # A restart within the minute does not get a fresh allowance: the store remembers.
    again, _ = run(tmp_path, spec({"when": "score <= 1", "per_minute": 5}), max_items=20)
    assert again.captures == {"stored": 0, "capped": 20}


def test_max_bytes_refuses_new_captures_once_full(tmp_path: Path):
    snapshot, _ = run(tmp_path, spec({"when": "score <= 1", "max_bytes": 2000}), max_items=60)

    with ResultStore(tmp_path / "results.db") as store:
        held = store.capture_bytes()
        first = [r.capture.position for r in store.captures()]
    assert 0 < held <= 2000
    assert snapshot.captures["stored"] == len(first) >= 3
    assert snapshot.captures["stored"] + snapshot.captures["capped"] == 60
    assert [index(p) for p in first] == list(range(len(first)))  # the first ones, kept

    again, _ = run(tmp_path, spec({"when": "score <= 1", "max_bytes": 2000}), max_items=10)
    assert again.captures == {"stored": 0, "capped": 10}


def test_a_capture_condition_can_name_a_rule(tmp_path: Path):
    rules = [{"name": "unsure", "when": "not confident"}]
    snapshot, _ = run(tmp_path, spec({"when": "unsure"}, rules=rules), max_items=300)

    with ResultStore(tmp_path / "results.db") as store:
        unsure = [r.id for r in store.query() if "unsure" in r.result.outputs["rules"]]
        assert [c.capture.result_id for c in store.captures()] == unsure
    assert snapshot.captures["stored"] == len(unsure) > 0


@pytest.mark.parametrize(
    ("capture", "overrides", "message"),
    [
        ({"when": "scor < 0.6"}, {}, r"capture\.when: .*uses scor, which no result has"),
        ({"when": "score <"}, {}, r"capture\.when: cannot parse"),
        ({"when": "score < 0.6", "per_minute": 0}, {}, r"capture\.per_minute: .*greater than"),
        ({"when": "score < 0.6", "max_bytes": "lots"}, {}, r"capture\.max_bytes"),
        ({"when": "score < 0.6", "keep": "all"}, {}, r"capture\.keep: unknown key"),
        ({"when": "score < 0.6"}, {"store": False}, r"capture: captures are kept in the store"),
        (
            {"when": "entropy > 1"},
            {"postprocess": []},
            r"capture\.when: .*no `classify`",
        ),
    ],
)
def test_a_bad_capture_section_is_refused_before_anything_runs(
    tmp_path: Path, capture: dict[str, Any], overrides: dict[str, Any], message: str
):
    with pytest.raises(ConfigError, match=message):
        plan(load_spec(write_spec(tmp_path, spec(capture, **overrides)))).model.engine.close()


def test_the_bundled_monitoring_example_captures_what_drifted(tmp_path: Path):
    example = digits_model_path().parent.parent / "digits_monitor" / "pipeline.yaml"
    checked = plan(load_spec(example, outputs=tmp_path))
    pipeline = Pipeline(checked)
    try:
        snapshot = pipeline.run(max_items=900)  # the images shift from item 597 on
    finally:
        pipeline.close()
        checked.model.engine.close()

    with ResultStore(tmp_path / "results.db") as store:
        records = store.captures()
        captured = [index(r.capture.position) for r in records]
        drifted = [
            r.id for r in store.query(limit=10_000) if "drifted" in r.result.outputs["rules"]
        ]
    assert snapshot.captures["stored"] == len(captured) > 0
    assert sum(i >= 597 for i in captured) > 0.8 * len(captured)  # mostly after the shift
    assert set(drifted) <= {r.capture.result_id for r in records}  # every drifted item, kept
