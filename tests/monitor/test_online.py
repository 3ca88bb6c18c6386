"""The online engine: River estimators behind ``Engine.run``, checked against River itself.

Every claim is checked against a plain River loop on the same stream: the
engine must give River's own scores and predictions, item for item, in
stream order, however the items are batched; learn from late labels as
``learn_one`` would; and save and resume its state so that a resumed model
goes on exactly as the uninterrupted one does.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from river import anomaly, linear_model, naive_bayes, preprocessing

from fogline._files import atomic_write
from fogline.errors import ConfigError, SignatureMismatch
from fogline.model import Engine, TensorSpec
from fogline.monitor import (
    FeatureMemory,
    OnlineEngine,
    OnlineSpec,
    build_estimator,
    read_header,
)

HST = "river.anomaly.HalfSpaceTrees"
HST_PARAMS = {"n_trees": 5, "height": 6, "window_size": 50, "seed": 7}


def stream(n: int = 400, width: int = 3, seed: int = 0) -> np.ndarray:
    """Readings in [0, 1] with a few outliers at the end, float32 like a CSV source's."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.4, size=(n, width)).astype(np.float32)
    outliers = min(10, n // 10)
    x[n - outliers :] = rng.uniform(0.8, 1.0, size=(outliers, width))
    return x


def river_scores(x: np.ndarray, model: anomaly.HalfSpaceTrees) -> list[float]:
    """What River alone gives: score_one, then learn_one, item by item."""
    scores = []
    for row in x.tolist():
        features = dict(enumerate(row))
        scores.append(model.score_one(features))
        model.learn_one(features)
    return scores


def engine_for(spec: OnlineSpec, width: int = 3) -> OnlineEngine:
    return OnlineEngine(spec, TensorSpec("features", "float32", (width,)))


def run_in_batches(engine: OnlineEngine, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, start, i = [], 0, 0
    while start < len(x):
        size = sizes[i % len(sizes)]
        out.append(engine.run({"features": x[start : start + size]})[engine_output(engine)])
        start, i = start + size, i + 1
    return np.concatenate(out)


def engine_output(engine: OnlineEngine) -> str:
    return engine.signature.output_names[0]


# --- anomaly detectors: score, then learn, every item ---------------------------------------


def test_anomaly_scores_are_rivers_own_item_for_item_however_batched():
    # Prepare
    x = stream()
    expected = river_scores(x, anomaly.HalfSpaceTrees(**HST_PARAMS))
    engine = engine_for(OnlineSpec(HST, HST_PARAMS))

    # Execute: uneven batches, as the micro-batcher cuts them
    got = run_in_batches(engine, x, [1, 7, 64, 3])

    # Assert
    assert isinstance(engine, Engine)
    assert got.tolist() == expected
    assert engine.learned == len(x)
    assert got[-10:].mean() > got[100:-10].mean()  # the outliers stand out once it has learned


def test_a_compose_pipeline_from_a_factory_is_run_like_a_class():
    x = stream(200) * 50  # unscaled: the pipeline's scaler takes care of it
    factory = "fogline.examples.online:shuttle_detector"
    engine = engine_for(OnlineSpec(factory, {"seed": 3, "window_size": 50}))
    reference = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=3, window_size=50)

    got = run_in_batches(engine, x, [16])

    assert engine.kind == "anomaly" and engine.name == "HalfSpaceTrees"
    assert got.tolist() == river_scores(x, reference)  # type: ignore[arg-type]


def test_an_item_that_is_not_finite_is_neither_scored_nor_learned():
    x = stream(100)
    x[40, 1] = np.nan
    x[41, 0] = np.inf
    engine = engine_for(OnlineSpec(HST, HST_PARAMS))
    clean = np.delete(x, [40, 41], axis=0)
    expected = river_scores(clean, anomaly.HalfSpaceTrees(**HST_PARAMS))

    got = run_in_batches(engine, x, [32])

    assert math.isnan(got[40]) and math.isnan(got[41])
    assert np.delete(got, [40, 41]).tolist() == expected
    assert engine.learned == 98 and engine.failed == 2


# --- classifiers and regressors: predict every item, learn from late labels -------------------


def test_a_binary_classifier_gives_probabilities_over_its_classes_and_learns_labels():
    # Prepare: River's LogisticRegression is binary: classes[1] is its True
    x = stream(60)
    labels = ["fault" if row[0] > 0.3 else "normal" for row in x.tolist()]
    engine = engine_for(
        OnlineSpec("river.linear_model.LogisticRegression", {}, ("normal", "fault"))
    )
    reference = linear_model.LogisticRegression()

    # Execute: predict each item, then its label arrives
    probabilities = []
    for row, label in zip(x, labels, strict=True):
        probabilities.append(engine.run({"features": row[None]})["probabilities"][0])
        assert engine.learn(row, label)

    # Assert: the same as River predicting, then learning y = (label == "fault")
    for row, label, got in zip(x.tolist(), labels, probabilities, strict=True):
        features = dict(enumerate(row))
        p = reference.predict_proba_one(features)
        assert got.tolist() == pytest.approx([p[False], p[True]])
        reference.learn_one(features, label == "fault")
    assert engine.learned == 60


def test_a_multiclass_classifier_orders_its_output_by_the_declared_classes():
    x = stream(90)
    labels = ["a", "b", "c"] * 30
    engine = engine_for(OnlineSpec("river.naive_bayes.GaussianNB", {}, ("c", "a", "b")))
    reference = naive_bayes.GaussianNB()
    before = engine.run({"features": x[:1]})["probabilities"][0]
    for row, label in zip(x.tolist(), labels, strict=True):
        reference.learn_one(dict(enumerate(row)), label)
    for row, label in zip(x, labels, strict=True):
        engine.learn(row, label)

    got = engine.run({"features": x[:5]})["probabilities"]

    assert before.tolist() == pytest.approx([1 / 3] * 3)  # nothing learned: all equally likely
    for row, vector in zip(x[:5].tolist(), got, strict=True):
        p = reference.predict_proba_one(dict(enumerate(row)))
        assert vector.tolist() == pytest.approx([p["c"], p["a"], p["b"]])


def test_labels_a_model_cannot_use_are_refused_not_learned():
    row = stream(1)[0]
    classifier = engine_for(OnlineSpec("river.naive_bayes.GaussianNB", {}, ("a", "b")))
    regressor = engine_for(OnlineSpec("river.linear_model.LinearRegression"))
    detector = engine_for(OnlineSpec(HST, HST_PARAMS))

    assert not classifier.learn(row, "z")  # not one of its classes
    assert not regressor.learn(row, "heavy")  # not a number
    assert not regressor.learn(row, float("nan"))
    assert not detector.learn(row, "anything")  # it learns from every item, not from labels
    assert not classifier.learn(np.zeros(4, np.float32), "a")  # not this model's input
    assert classifier.learned == regressor.learned == detector.learned == 0
    assert (classifier.refused, regressor.refused) == (2, 2)


def test_a_regressor_predicts_and_learns_numbers_as_river_does():
    x = stream(50)
    targets = (x.sum(axis=1) * 2.0).tolist()
    engine = engine_for(OnlineSpec("river.linear_model.LinearRegression", {"intercept_lr": 0.1}))
    reference = linear_model.LinearRegression(intercept_lr=0.1)
    for row, y in zip(x, targets, strict=True):
        engine.learn(row, str(y))  # labels arrive as text as often as not
        reference.learn_one(dict(enumerate(row.tolist())), y)

    got = engine.run({"features": x[:3]})["prediction"]

    expected = [reference.predict_one(dict(enumerate(row))) for row in x[:3].tolist()]
    assert got.tolist() == pytest.approx(expected)


def test_named_features_are_the_keys_river_sees():
    engine = OnlineEngine(
        OnlineSpec("river.linear_model.LinearRegression"),
        TensorSpec("features", "float32", (2,)),
        features=["temp", "rpm"],
    )
    engine.learn(np.array([1.0, 2.0], np.float32), 3.0)

    weights = engine._estimator.weights  # what River learned, by feature name

    assert set(weights) == {"temp", "rpm"}


# --- what is refused, and where --------------------------------------------------------------


@pytest.mark.parametrize(
    ("estimator", "params", "message"),
    [
        (HST, {"trees": 3}, "params.trees: HalfSpaceTrees takes no parameter 'trees'; it takes "),
        (
            HST,
            {"n_trees": "many"},
            "params.n_trees: HalfSpaceTrees takes int here (its default is 10), got 'many'",
        ),
        (
            "river.linear_model.LogisticRegression",
            {"l1": 0.1, "l2": 0.1},
            "params: LogisticRegression refused them: NotImplementedError",
        ),
        ("river.anomaly.NoSuchThing", {}, "online: river.anomaly has no 'NoSuchThing'"),
        ("nosuchpackage.Model", {}, "online: cannot import 'nosuchpackage'"),
        ("HalfSpaceTrees", {}, "online: 'HalfSpaceTrees' names no estimator"),
        ("collections.OrderedDict", {}, "online: collections.OrderedDict is not a River estimator"),
        (
            "river.preprocessing.StandardScaler",
            {},
            "online: river.preprocessing.StandardScaler "
            "is a StandardScaler; an online model must be an anomaly detector",
        ),
        ("river.anomaly.ThresholdFilter", {}, "params: ThresholdFilter needs anomaly_detector"),
    ],
)
def test_bad_estimators_and_params_are_refused_with_the_key_at_fault(estimator, params, message):
    with pytest.raises(ConfigError) as caught:
        build_estimator(estimator, params)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_value_river_takes_but_cannot_run_is_refused_before_the_first_item():
    with pytest.raises(ConfigError, match=r"^params: HalfSpaceTrees fails on a first item: "):
        engine_for(OnlineSpec(HST, {"limits": {0: [0.0]}}))


def test_a_classifier_without_classes_and_classes_on_a_detector_are_refused():
    with pytest.raises(ConfigError, match=r"^classes: an online classifier needs its classes"):
        engine_for(OnlineSpec("river.naive_bayes.GaussianNB"))
    with pytest.raises(ConfigError, match=r"^classes: .*binary classifier; give it two classes"):
        engine_for(OnlineSpec("river.linear_model.LogisticRegression", {}, ("a", "b", "c")))
    with pytest.raises(ConfigError, match=r"^classes: only a classifier has classes"):
        engine_for(OnlineSpec(HST, HST_PARAMS, ("a", "b")))


# --- checkpoints -----------------------------------------------------------------------------


def test_a_resumed_model_goes_on_exactly_as_the_uninterrupted_one(tmp_path: Path):
    # Prepare: the reference learns the whole stream without a break
    x = stream(300)
    expected = river_scores(x, anomaly.HalfSpaceTrees(**HST_PARAMS))
    spec = OnlineSpec(HST, HST_PARAMS, checkpoint=tmp_path / "state.pkl")

    # Execute: learn the first part, close (which saves), resume in a new engine
    first = engine_for(spec)
    head = run_in_batches(first, x[:170], [8])
    first.close()
    second = engine_for(spec)
    tail = run_in_batches(second, x[170:], [8])
    second.close()

    # Assert
    assert second.resumed == 170 and second.learned == 300
    assert np.concatenate([head, tail]).tolist() == expected
    header = read_header(tmp_path / "state.pkl")
    assert (header.estimator, header.learned, header.features) == (HST, 300, ["0", "1", "2"])


def test_checkpoints_are_written_while_learning_and_not_when_nothing_changed(tmp_path: Path):
    path = tmp_path / "state.pkl"
    engine = engine_for(OnlineSpec(HST, HST_PARAMS, checkpoint=path, checkpoint_every_s=0.05))
    engine.run({"features": stream(10)})
    assert not path.exists()  # not due yet

    engine._next_save = 0.0  # as if checkpoint_every_s had passed
    engine.run({"features": stream(10)})
    saved = path.stat().st_mtime_ns
    engine.close()
    engine.close()

    assert engine.checkpoints == 1  # close found nothing new to save
    assert path.stat().st_mtime_ns == saved
    assert read_header(path).learned == 20
    idle = engine_for(OnlineSpec(HST, HST_PARAMS, checkpoint=tmp_path / "idle.pkl"))
    idle.close()  # `fogline check` opens and closes: it must not write state
    assert not (tmp_path / "idle.pkl").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"params": {**HST_PARAMS, "n_trees": 6}}, "holds the state of river.anomaly.HalfSpace"),
        ({"estimator": "river.anomaly.LODA", "params": {}}, "but the pipeline asks for river."),
        ({"width": 4}, r"learned from features \[0, 1, 2\] \(3\) but the pipeline now feeds"),
    ],
)
def test_a_checkpoint_of_another_spec_is_refused_not_loaded(tmp_path: Path, change, message):
    path = tmp_path / "state.pkl"
    saved = engine_for(OnlineSpec(HST, HST_PARAMS, checkpoint=path))
    saved.run({"features": stream(5)})
    saved.close()
    spec = OnlineSpec(
        change.get("estimator", HST), change.get("params", HST_PARAMS), checkpoint=path
    )

    with pytest.raises(ConfigError, match=rf"^checkpoint: .*{message}.*move state.pkl away"):
        engine_for(spec, change.get("width", 3))


def test_a_checkpoint_from_another_river_version_or_damaged_is_refused(tmp_path: Path):
    path = tmp_path / "state.pkl"
    saved = engine_for(OnlineSpec(HST, HST_PARAMS, checkpoint=path))
    saved.run({"features": stream(5)})
    saved.close()
    data = path.read_bytes()
    spec = OnlineSpec(HST, HST_PARAMS, checkpoint=path)

    atomic_write(path, data.replace(b'"river":"', b'"river":"0.1.0-', 1))
    with pytest.raises(ConfigError, match=r"saved by River 0\.1\.0-.*not portable"):
        engine_for(spec)
    atomic_write(path, data[:-10])
    with pytest.raises(ConfigError, match="does not match its header's sha256"):
        engine_for(spec)
    atomic_write(path, pickle.dumps(anomaly.HalfSpaceTrees()))
    with pytest.raises(ConfigError, match="is not a fogline online-model checkpoint"):
        engine_for(spec)


def test_an_estimator_that_cannot_be_pickled_is_refused_when_it_should_be_checkpointed(
    tmp_path: Path,
):
    factory = "support.online_models:unpicklable_detector"
    engine_for(OnlineSpec(factory)).close()  # without a checkpoint it runs

    with pytest.raises(ConfigError, match=r"^checkpoint: the online model cannot be pickled"):
        engine_for(OnlineSpec(factory, checkpoint=tmp_path / "s.pkl"))


def test_a_batch_of_the_wrong_width_is_refused_not_truncated():
    engine = engine_for(OnlineSpec(HST, HST_PARAMS))

    with pytest.raises(SignatureMismatch, match="4 values per item, the online model takes 3"):
        engine.run({"features": stream(5, width=4)})
    assert engine.learned == 0


def test_feature_memory_keeps_the_newest_item_per_id_and_counts_what_it_drops():
    memory = FeatureMemory(max_items=3, max_age_s=60.0)
    memory.remember(None, [0.0])  # no id: nothing a label could name
    for i in range(5):
        memory.remember(f"id-{i}", [float(i)])
    memory.remember("id-4", [40.0])  # the same id again: the newer item wins

    assert len(memory) == 3 and memory.forgotten == 2
    assert memory.recall("id-4") == [40.0]
    assert memory.recall("id-4") is None  # learned once
    assert memory.recall("id-0") is None  # pushed out
    assert (memory.recalled, memory.missed) == (1, 2)
