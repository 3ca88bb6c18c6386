"""Pipelines whose model is an online learner (``model: {online: ...}``), run for real.

Real River, real pipeline runs with ``max_items``, results read back from
the real SQLite store and checked against River alone on the same rows; a
real ``fogline run`` process killed with SIGKILL after a checkpoint, and a
restarted one that must go on from that checkpoint; bad specs refused at
``fogline check`` with the key at fault.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from river import anomaly, naive_bayes

from fogline.errors import ConfigError
from fogline.monitor import read_header
from fogline.pipeline import Pipeline, load_spec, parse_spec, plan

COLUMNS = ["temp", "rpm", "vib"]
HST_PARAMS = {"n_trees": 5, "height": 6, "window_size": 50, "seed": 7}


def write_csv(path: Path, rows: int, seed: int = 0) -> np.ndarray:
    """A sensor log with named columns, values in [0, 1], a burst of odd rows near the end."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.4, size=(rows, len(COLUMNS))).astype(np.float32)
    x[rows - rows // 20 :] = rng.uniform(0.8, 1.0, size=(rows // 20, len(COLUMNS)))
    lines = [",".join(["t", *COLUMNS])]
    lines += [
        ",".join([f"{i * 0.01:.2f}", *(repr(float(v)) for v in row)]) for i, row in enumerate(x)
    ]
    path.write_text("\n".join(lines) + "\n")
    return x.astype(np.float32)


def write_pipeline(folder: Path, model: dict[str, Any], **more: Any) -> Path:
    spec = {
        "name": "online",
        "sources": [
            {"type": "csv", "name": "pump", "path": "log.csv", "time_column": "t", "speed": 0}
        ],
        "model": model,
        **more,
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def stored(db: Path) -> list[tuple[str, str, dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT model, model_version, outputs FROM results ORDER BY id")
        return [(model, version, json.loads(outputs)) for model, version, outputs in rows]


def river_scores(x: np.ndarray, model: Any, names: list[Any] = COLUMNS) -> list[float]:
    scores = []
    for row in x.tolist():
        features = dict(zip(names, row, strict=True))
        scores.append(model.score_one(features))
        model.learn_one(features)
    return scores


def run_pipeline(path: Path, max_items: int | None = None) -> Any:
    checked = plan(load_spec(path))
    pipeline = Pipeline(checked)
    try:
        snapshot = pipeline.run(max_items=max_items)
    finally:
        pipeline.close()
        checked.model.engine.close()
    return checked, snapshot


def test_an_online_detector_in_a_pipeline_stores_rivers_scores_and_flags_the_odd_rows(
    tmp_path: Path,
):
    # Prepare
    x = write_csv(tmp_path / "log.csv", 600)
    path = write_pipeline(
        tmp_path,
        {"online": "river.anomaly.HalfSpaceTrees", "params": HST_PARAMS, "max_batch": 32},
        postprocess=[{"type": "anomaly", "threshold": 0.9}],
        rules=[{"name": "odd", "when": "anomaly", "then": ["alerts"]}],
        sinks=[{"type": "jsonl", "name": "alerts", "path": "alerts.jsonl"}],
    )

    # Execute
    checked, snapshot = run_pipeline(path, max_items=580)

    # Assert: River's own scores, keyed by the CSV's column names, in stream order
    assert snapshot.counts["pump"]["processed"] == 580
    results = stored(tmp_path / "results.db")
    expected = river_scores(x[:580], anomaly.HalfSpaceTrees(**HST_PARAMS))
    assert [r["score"] for _, _, r in results] == [round(s, 6) for s in expected]
    model, version, _ = results[0]
    assert (model, version) == ("HalfSpaceTrees", checked.model.version)
    assert version.startswith("online-")
    flagged = [i for i, (_, _, r) in enumerate(results) if r["anomaly"]]
    assert flagged == list(range(570, 580))  # the odd rows, and only they
    alerts = (tmp_path / "alerts.jsonl").read_text().splitlines()
    assert len(alerts) == len(flagged)


def test_an_online_classifier_feeds_classify_probabilities_under_its_class_names(
    tmp_path: Path,
):
    write_csv(tmp_path / "log.csv", 50)
    path = write_pipeline(
        tmp_path,
        {"online": "river.naive_bayes.GaussianNB", "classes": ["ok", "worn", 3]},
        postprocess=[{"type": "classify", "top_k": 3}],
    )

    checked, snapshot = run_pipeline(path)

    assert snapshot.counts["pump"]["processed"] == 50
    results = stored(tmp_path / "results.db")
    first = results[0][2]
    # Nothing learned yet: the three classes equally likely, not softmax-squashed again
    assert [c["label"] for c in first["top_k"]] == ["ok", "worn", "3"]
    assert [c["score"] for c in first["top_k"]] == [pytest.approx(1 / 3, abs=1e-6)] * 3
    assert checked.spec.postprocess[0].softmax is False  # type: ignore[attr-defined]


# --- kill -9 after a checkpoint, then restart --------------------------------------------------


def test_a_killed_run_restarts_from_its_last_checkpoint(tmp_path: Path):
    # Prepare: a slow replay, checkpointed often
    x = write_csv(tmp_path / "log.csv", 4000)
    model = {
        "online": "river.anomaly.HalfSpaceTrees",
        "params": HST_PARAMS,
        "checkpoint": "state/hst.pkl",
        "checkpoint_every_s": 0.2,
        "max_batch": 4,
    }
    spec_path = write_pipeline(tmp_path, model)
    spec = yaml.safe_load(spec_path.read_text())
    spec["sources"][0]["rate"] = 400
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    state = tmp_path / "state" / "hst.pkl"
    command = [sys.executable, "-m", "fogline", "run", str(spec_path), "--no-live"]
    env = {**os.environ, "COLUMNS": "200"}

    # Execute: run until a checkpoint has 300+ items learned, then SIGKILL
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not state.exists() or read_header(state).learned < 300:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint with 300 items learned in 60 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    learned = read_header(state).learned
    killed_at = len(stored(tmp_path / "results.db"))
    spec["sources"][0].pop("rate")
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    restart = subprocess.run(
        [*command, "--max-items", "40"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    # Assert: the restarted model is the checkpointed one, going on from where it was saved
    assert restart.returncode == 0, restart.stderr
    assert 300 <= learned < len(x) and killed_at < len(x)  # it was killed mid-stream
    resumed = anomaly.HalfSpaceTrees(**HST_PARAMS)
    river_scores(x[:learned], resumed)
    expected = river_scores(x[:40], resumed)
    got = [r["score"] for _, _, r in stored(tmp_path / "results.db")[-40:]]
    assert got == expected
    fresh = river_scores(x[:40], anomaly.HalfSpaceTrees(**HST_PARAMS))
    assert got != fresh
    assert read_header(state).learned == learned + 40  # saved again when the run ended


# --- bad specs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"online": "river.anomaly.HalfSpaceTrees", "params": {"trees": 3}},
            "model.params.trees: HalfSpaceTrees takes no parameter 'trees'",
        ),
        (
            {"online": "river.anomaly.HalfSpaceTrees", "params": {"height": "tall"}},
            "model.params.height: HalfSpaceTrees takes int here",
        ),
        (
            {"online": "river.anomaly.HalfSpaceTreez"},
            "model.online: river.anomaly has no 'HalfSpaceTreez'",
        ),
        (
            {"online": "river.preprocessing.StandardScaler"},
            "model.online: river.preprocessing.StandardScaler is a StandardScaler; an online model",
        ),
        (
            {"online": "river.naive_bayes.GaussianNB"},
            "model.classes: an online classifier needs its classes",
        ),
        (
            {"online": "river.anomaly.HalfSpaceTrees", "workers": 2},
            "model.workers: an online learner learns from items in stream order",
        ),
        (
            {"online": "river.anomaly.HalfSpaceTrees", "path": "."},
            "model: give either `path` (a model file or folder) or `online`",
        ),
        ({"max_batch": 4}, "model: needs `path` (a model file or folder) or `online`"),
        (
            {"path": ".", "params": {"seed": 1}},
            "model: `params` is for an online model (`online:`), not a model file",
        ),
    ],
)
def test_bad_online_models_are_refused_with_the_key_path(tmp_path: Path, model, message):
    write_csv(tmp_path / "log.csv", 5)
    path = write_pipeline(tmp_path, model)

    with pytest.raises(ConfigError) as caught:
        plan(load_spec(path))

    assert message in str(caught.value)


def test_softmax_written_out_after_an_online_classifier_is_refused(tmp_path: Path):
    write_csv(tmp_path / "log.csv", 5)
    path = write_pipeline(
        tmp_path,
        {"online": "river.linear_model.LogisticRegression", "classes": ["ok", "worn"]},
        postprocess=[{"type": "classify", "softmax": True}],
    )

    with pytest.raises(ConfigError, match=r"postprocess\[0\]\.softmax: an online classifier"):
        plan(load_spec(path))


def test_without_river_check_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    write_csv(tmp_path / "log.csv", 5)
    path = write_pipeline(tmp_path, {"online": "river.anomaly.HalfSpaceTrees"})
    monkeypatch.setitem(sys.modules, "river", None)  # what find_spec sees when it is missing

    with pytest.raises(
        ConfigError,
        match=r"model\.online: River is not installed; .*"
        r"pip install 'fogline\[monitor\]'",
    ):
        plan(load_spec(path))


def test_fogline_check_refuses_a_bad_online_model_with_exit_2_and_no_traceback(tmp_path: Path):
    write_csv(tmp_path / "log.csv", 5)
    path = write_pipeline(
        tmp_path, {"online": "river.anomaly.HalfSpaceTrees", "params": {"window": 10}}
    )

    checked = subprocess.run(
        [sys.executable, "-m", "fogline", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )

    assert checked.returncode == 2
    assert "model.params.window: HalfSpaceTrees takes no parameter 'window'" in checked.stderr
    assert "Traceback" not in checked.stderr


def test_the_bundled_online_example_checks_runs_and_checkpoints(tmp_path: Path):
    # Prepare: the example as shipped, its outputs in a scratch folder
    from fogline.examples.online import ONLINE_ANOMALY, shuttle_detector, shuttle_stream

    checked = plan(load_spec(ONLINE_ANOMALY / "pipeline.yaml", outputs=tmp_path))
    pipeline = Pipeline(checked)

    # Execute
    try:
        snapshot = pipeline.run(max_items=3000)
    finally:
        pipeline.close()
        checked.model.engine.close()

    # Assert: River's pipeline on the same rows flags the same ones
    assert snapshot.counts["shuttle"]["processed"] == 3000
    x, _ = shuttle_stream()
    reference = river_scores(x[:3000], shuttle_detector(seed=42), names=list(range(9)))
    flagged = [r["anomaly"] for _, _, r in stored(tmp_path / "results.db")]
    assert flagged == [score > 0.6 for score in reference]
    assert sum(flagged) > 0
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == sum(flagged)
    assert read_header(tmp_path / "state.pkl").learned == 3000


# --- learning from late labels ------------------------------------------------------------------


def two_classes(path: Path, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """A labelled .npz: class "low" near 0.2, class "high" near 0.8, in turn."""
    rng = np.random.default_rng(1)
    y = np.array(["low", "high"] * (n // 2))
    x = np.where(y[:, None] == "low", 0.2, 0.8) + rng.normal(0, 0.05, size=(n, 3))
    np.savez(path, x=x.astype(np.float32), y=y)
    return x.astype(np.float32), y


def labelled_pipeline(folder: Path, **model: Any) -> Path:
    spec = {
        "name": "online-labels",
        "sources": [{"type": "dataset", "name": "line", "path": "data.npz"}],
        "model": {
            "online": "river.naive_bayes.GaussianNB",
            "classes": ["low", "high"],
            "checkpoint": "nb.pkl",
            **model,
        },
        "postprocess": [{"type": "classify"}],
        "labels": {
            "source": {"type": "delayed", "path": "data.npz", "delay_s": 1.0},
            "wait_s": 30,  # until the delayed source has given every label
            "estimate": False,
        },
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_an_online_classifier_learns_its_late_labels_with_the_features_of_their_items(
    tmp_path: Path,
):
    # Prepare: every label arrives after its item has been answered (and stored)
    x, y = two_classes(tmp_path / "data.npz")
    path = labelled_pipeline(tmp_path)

    # Execute: one run that learns the labels late, then a run resumed from its checkpoint
    first, _ = run_pipeline(path)
    run_pipeline(path)

    # Assert: the first run answered before learning anything, then learned every label
    results = stored(tmp_path / "results.db")
    before, after = results[: len(x)], results[len(x) :]
    assert {r["label"] for _, _, r in before} == {"low"}  # untrained: a tie, the first class
    assert first.model.engine.learned == len(x)  # type: ignore[attr-defined]
    reference = naive_bayes.GaussianNB()
    for row, label in zip(x.tolist(), y.tolist(), strict=True):
        reference.learn_one(dict(enumerate(row)), label)
    for row, (_, _, result) in zip(x[:5].tolist(), after[:5], strict=True):
        p = reference.predict_proba_one(dict(enumerate(row)))
        assert result["top_k"][0]["score"] == pytest.approx(max(p.values()), abs=1e-6)
    assert [r["label"] for _, _, r in after] == y.tolist()  # resumed, it knows the classes
    assert read_header(tmp_path / "nb.pkl").learned == 2 * len(x)  # and learns them again


def test_labels_for_items_no_longer_remembered_are_counted_not_learned(tmp_path: Path):
    two_classes(tmp_path / "data.npz", n=50)
    path = labelled_pipeline(tmp_path, remember=10)

    checked, _ = run_pipeline(path)

    engine: Any = checked.model.engine
    assert engine.learned == 10
    assert (engine.memory.forgotten, engine.memory.missed) == (40, 40)
    assert "40 labels came for items no longer remembered" in engine.summary()


def test_an_online_regressor_with_classification_labels_is_refused(tmp_path: Path):
    two_classes(tmp_path / "data.npz", n=4)
    path = labelled_pipeline(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["model"] = {"online": "river.linear_model.LinearRegression"}
    spec["postprocess"] = []
    spec["labels"]["compare"] = "prediction"
    path.write_text(yaml.safe_dump(spec))

    with pytest.raises(
        ConfigError,
        match=r"labels\.task: the online model is a regressor, which "
        r"learns from regression labels; set `task: regression`",
    ):
        plan(load_spec(path))


def test_the_bundled_late_labels_example_learns_every_label(tmp_path: Path):
    # Prepare: the example as shipped, but replayed (and labelled) as fast as it goes
    from fogline.examples.online import ONLINE_LABELS

    data = yaml.safe_load((ONLINE_LABELS / "pipeline.yaml").read_text())
    data["sources"][0].pop("rate")
    data["labels"]["source"].pop("rate")
    data["labels"]["source"]["delay_s"] = 0.5
    checked = plan(parse_spec(data, base=ONLINE_LABELS, outputs=tmp_path))
    pipeline = Pipeline(checked)

    # Execute
    try:
        snapshot = pipeline.run()
    finally:
        pipeline.close()
        checked.model.engine.close()

    # Assert
    engine: Any = checked.model.engine
    assert snapshot.counts["pages"]["processed"] == 1250
    assert engine.learned == 1250 and engine.refused == 0
    assert read_header(tmp_path / "state.pkl").learned == 1250


def test_an_online_regressor_learns_numeric_late_labels(tmp_path: Path):
    # Prepare: y = 2 * (sum of the features) + 1, labels replayed late
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, size=(60, 3)).astype(np.float32)
    y = 2.0 * x.sum(axis=1) + 1.0
    np.savez(tmp_path / "data.npz", x=x, y=y)
    path = labelled_pipeline(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["model"] = {"online": "river.linear_model.LinearRegression", "checkpoint": "lr.pkl"}
    spec["postprocess"] = []
    spec["labels"].update({"task": "regression", "compare": "prediction"})
    path.write_text(yaml.safe_dump(spec))

    # Execute
    checked, _ = run_pipeline(path)

    # Assert: answered untrained (River's 0.0), then learned every label, and is closer now
    engine: Any = checked.model.engine
    assert [r["prediction"] for _, _, r in stored(tmp_path / "results.db")] == [0.0] * 60
    assert engine.learned == 60 and engine.refused == 0
    after = engine.run({"features": x})["prediction"]
    assert np.abs(after - y).mean() < 0.25 * np.abs(y).mean()  # River alone: 0.12
    assert read_header(tmp_path / "lr.pkl").learned == 60
