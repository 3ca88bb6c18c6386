"""Scores to decisions: classify, anomaly (fixed and learned), smooth, debounce."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fogline.errors import ConfigError, ItemError
from fogline.model import Signature, TensorSpec
from fogline.pipeline._item import Item
from fogline.pipeline.stages import AnomalySpec, ClassifySpec, DebounceSpec, SmoothSpec

LOGITS = Signature((), (TensorSpec("logits", "float32", ("batch", 4)),))
NONE = Signature((), ())


def _classified(spec: ClassifySpec, scores: list[float]) -> dict[str, object]:
    item = Item("cam", 0, 0.0, None, outputs={"logits": np.array(scores, np.float32)})
    return spec.build(LOGITS)(item).result


def test_classify_top_k_with_labels_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("cat\ndog\nowl\nemu\n\n")
    spec = ClassifySpec.model_validate(
        {
            "type": "classify",
            "labels": "labels.txt",
            "top_k": 3,
            "softmax": False,
            "min_score": 0.5,
        },
        context={"base": tmp_path},
    )
    assert spec.labels == ("cat", "dog", "owl", "emu")
    assert spec.check(LOGITS, frozenset({"x"})) == {"x", "label", "score", "top_k", "confident"}
    result = _classified(spec, [0.1, 0.2, 0.4, 0.3])
    assert result == {
        "label": "owl",
        "score": 0.4,
        "top_k": [
            {"label": "owl", "score": 0.4},
            {"label": "emu", "score": 0.3},
            {"label": "dog", "score": 0.2},
        ],
        "confident": False,
    }


def test_classify_softmax_and_default_labels() -> None:
    result = _classified(ClassifySpec(type="classify"), [1.0, 1.0, 1.0, 1.0])
    assert result["score"] == 0.25 and result["label"] == "0" and result["confident"] is True
    assert type(result["confident"]) is bool


def test_classify_check_refuses_mismatches() -> None:
    with pytest.raises(ConfigError, match="3 labels"):
        ClassifySpec(type="classify", labels=["a", "b", "c"]).check(LOGITS, frozenset())
    with pytest.raises(ConfigError, match="top_k 5"):
        ClassifySpec(type="classify", top_k=5).check(LOGITS, frozenset())
    two = Signature((), LOGITS.outputs * 1 + (TensorSpec("aux", "float32", (1, 2)),))
    with pytest.raises(ConfigError, match="say which one"):
        ClassifySpec(type="classify").check(two, frozenset())
    image = Signature((), (TensorSpec("mask", "float32", (1, 8, 8)),))
    with pytest.raises(ConfigError, match="one vector"):
        ClassifySpec(type="classify").check(image, frozenset())
    with pytest.raises(ValidationError, match="number"):
        ClassifySpec.model_validate({"type": "classify", "min_score": "high"})
    with pytest.raises(ItemError, match="not finite"):
        _classified(ClassifySpec(type="classify", softmax=False), [np.nan] * 4)


def test_classify_costs_microseconds() -> None:
    spec = ClassifySpec(type="classify", labels=[str(i) for i in range(10)])
    stage = spec.build(Signature((), (TensorSpec("logits", "float32", (1, 10)),)))
    item = Item("cam", 0, 0.0, None, outputs={"logits": np.arange(10, dtype=np.float32)})
    stage(item)
    start = time.perf_counter()
    for _ in range(2000):
        stage(item)
    per_call = (time.perf_counter() - start) / 2000
    assert per_call < 100e-6, f"{per_call * 1e6:.1f} us per call"  # ~10 us on a shared core


def _scored(stage: object, source: str, value: float) -> dict[str, object]:
    item = Item(source, 0, 0.0, None, outputs={"err": np.array([value, value])})
    return stage(item).result  # type: ignore[operator, no-any-return]


ERR = Signature((), (TensorSpec("err", "float32", ("batch", 2)),))


def test_anomaly_learns_a_baseline_per_source() -> None:
    spec = AnomalySpec.model_validate(
        {"type": "anomaly", "reduce": "max", "baseline": {"items": 4, "k": 2.0}}
    )
    stage = spec.build(ERR)
    learning = [_scored(stage, "a", v) for v in (1.0, 2.0, 3.0, 2.0)]  # mean 2, std 0.816
    assert all(r["anomaly"] is False and r["baseline"] == "learning" for r in learning)
    assert _scored(stage, "b", 100.0)["baseline"] == "learning"  # b has its own baseline
    normal, odd = _scored(stage, "a", 3.5), _scored(stage, "a", 3.7)
    assert normal == {"score": 3.5, "anomaly": False, "threshold": 3.632993, "baseline": "ready"}
    assert odd["anomaly"] is True


def test_anomaly_needs_one_value_or_a_reduce() -> None:
    with pytest.raises(ConfigError, match="reduce"):
        AnomalySpec(type="anomaly", threshold=1.0).check(ERR, frozenset())
    with pytest.raises(ValidationError, match="either"):
        AnomalySpec(type="anomaly")
    stage = AnomalySpec(type="anomaly", threshold=1.0, reduce="mean").build(ERR)
    assert _scored(stage, "a", 1.5) == {"score": 1.5, "anomaly": True, "threshold": 1.0}


def test_smooth_is_a_moving_mean_that_skips_nulls() -> None:
    stage = SmoothSpec(type="smooth", window=3).build(NONE)
    values = [1.0, 2.0, None, 6.0, 10.0]
    got = [
        stage(Item("s", i, 0.0, None, result={"score": v})).result["score_smooth"]
        for i, v in enumerate(values)
    ]
    assert got == [1.0, 1.5, None, 3.0, 6.0]
    with pytest.raises(ItemError, match="not a number"):
        stage(Item("s", 9, 0.0, None, result={"score": "high"}))


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 6), st.integers(0, 5))
def test_debounce_is_k_of_the_last_n(votes: list[bool], n: int, less: int) -> None:
    # Prepare
    k = max(1, n - less)
    stage = DebounceSpec.model_validate({"type": "debounce", "k": k, "n": n, "as": "alarm"})
    run = stage.build(NONE)
    # Execute
    alarms = [
        run(Item("s", i, 0.0, None, result={"anomaly": v})).result["alarm"]
        for i, v in enumerate(votes)
    ]
    # Assert
    assert alarms == [sum(votes[max(0, i - n + 1) : i + 1]) >= k for i in range(len(votes))]


def test_debounce_options() -> None:
    spec = DebounceSpec.model_validate({"type": "debounce", "field": "confident", "as": "sure"})
    assert spec.check(NONE, frozenset({"confident"})) == {"confident", "sure"}
    with pytest.raises(ValidationError, match="k <= n"):
        DebounceSpec(type="debounce", k=4, n=3)
