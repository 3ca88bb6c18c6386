"""Live accuracy windows and the confidence-based estimate, against counts made independently."""

from __future__ import annotations

import numpy as np
import pytest

from fogline.errors import ConfigError
from fogline.examples import digits_model_path, digits_split
from fogline.model import open_model
from fogline.monitor import AccuracyEstimator, AccuracyWindows, ConfidenceCalibration


def test_each_window_reads_the_last_n_outcomes_of_each_model_version() -> None:
    # Prepare: 3000 outcomes, interleaved between two versions that are right at different rates
    rng = np.random.default_rng(7)
    versions = rng.choice(["1.0", "2.0"], size=3000)
    right = np.where(versions == "1.0", rng.random(3000) < 0.9, rng.random(3000) < 0.6)
    windows = AccuracyWindows((100, 1000))

    # Execute
    for version, outcome in zip(versions, right, strict=True):
        windows.add(str(version), bool(outcome))
    figures = {(f.model_version, f.window): f for f in windows.figures()}

    # Assert: each figure is the mean of that version's last N outcomes, counted here by hand
    for version in ("1.0", "2.0"):
        mine = right[versions == version]
        for window in (100, 1000):
            figure = figures[(version, window)]
            assert figure.count == window and not figure.estimate
            assert figure.value == pytest.approx(mine[-window:].mean())
    assert windows.count("1.0") == int((versions == "1.0").sum())


def test_a_window_that_is_not_full_yet_rests_on_what_it_has_and_says_so() -> None:
    errors = AccuracyWindows((4, 10), metric="mae")
    for error in (3.0, 1.0, 0.5):
        errors.add("1", error)

    assert [(f.window, f.count, f.value) for f in errors.figures()] == [(4, 3, 1.5), (10, 3, 1.5)]
    assert errors.figures()[0].describe() == "mean absolute error 1.5 over the last 3 of 4 (v1)"


@pytest.mark.parametrize("windows", [[], [0], [100, -5], [2.5]])
def test_bad_windows_are_refused(windows: list[int]) -> None:
    with pytest.raises(ConfigError, match="window"):
        AccuracyWindows(windows)


def test_calibration_needs_matching_finite_scores() -> None:
    with pytest.raises(ConfigError, match="one length"):
        ConfidenceCalibration.fit([0.5, 0.6], [True])
    with pytest.raises(ConfigError, match="finite"):
        ConfidenceCalibration.fit([0.5, float("nan")], [True, False])


def _confidence(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    opened = open_model(digits_model_path())
    try:
        (logits,) = opened.engine.run({"pixels": pixels}).values()
    finally:
        opened.engine.close()
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    return probabilities.max(axis=1), probabilities.argmax(axis=1)


def test_the_estimate_follows_the_real_digits_models_accuracy_without_its_labels() -> None:
    # Prepare: the real model on the evaluation split; the first 300 are the labelled reference
    pixels, labels = digits_split("eval")
    noisy = pixels[300:] + np.random.default_rng(3).normal(0, 0.3, pixels[300:].shape)
    score, predicted = _confidence(np.concatenate([pixels, noisy.astype(np.float32)]))
    right = predicted == np.concatenate([labels, labels[300:]])
    n = len(labels)
    estimator = AccuracyEstimator(reference=300, windows=(len(labels) - 300,))

    # Execute: calibrate on the reference, then estimate the clean rest and its noisy copy
    for s, r in zip(score[:300], right[:300], strict=True):
        estimator.learn(float(s), bool(r))
    for s in score[300:n]:
        estimator.observe("clean", float(s))
    for s in score[n:]:
        estimator.observe("noisy", float(s))
    estimate = {f.model_version: f for f in estimator.figures()}

    # Assert: within 2 points on traffic like the reference; lower (as the truth is) on noise,
    # though CBPE cannot see all of a shift the model is confidently wrong about
    clean, shifted = right[300:n].mean(), right[n:].mean()
    assert estimate["clean"].estimate and estimate["clean"].count == n - 300
    assert estimate["clean"].value == pytest.approx(clean, abs=0.02)
    assert shifted < clean - 0.1
    assert estimate["noisy"].value < estimate["clean"].value - 0.02
    assert estimate["noisy"].value > shifted  # the known limit: over-confident under shift
