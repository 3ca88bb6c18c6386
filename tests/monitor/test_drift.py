"""The drift detectors on seeded streams: quiet on a stationary stream, an alarm soon after a shift.

Real River (``adwin``, ``page-hinkley``) and the numpy windowed statistics
(``ks``, ``psi``); the bounds are loose enough for any seed, tight enough that
a detector which never fires, or fires on noise, fails.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from fogline.errors import ConfigError, DataError
from fogline.monitor import DETECTORS, make_detector

NAMES = sorted(DETECTORS)


def _alarms(detector: object, stream: np.ndarray, batch: int = 16) -> list[int]:
    """Indices in ``stream`` where an alarm was raised, fed ``batch`` items at a time."""
    raised = []
    for start in range(0, len(stream), batch):
        state = detector.update(stream[start : start + batch])  # type: ignore[attr-defined]
        if state.raised is not None:
            raised.append(start + state.raised)
    return raised


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("features", [1, 16])
def test_a_stationary_stream_raises_no_alarm(name: str, features: int) -> None:
    rng = np.random.default_rng(7)
    detector = make_detector(name, rng.normal(size=(500, features)))

    raised = _alarms(detector, rng.normal(size=(6000, features)))

    assert raised == []
    assert detector.state.alarm is False and detector.items == 6000


DILUTED = pytest.mark.xfail(
    strict=True,
    reason="a known limit: on a vector, one feature's 1 sd shift moves the one-number summary "
    "by about 1/sqrt(2 * 16) = 0.18 sd, below page-hinkley's delta (0.25 sd); ks and psi test "
    "each feature",
)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=DILUTED) if n == "page-hinkley" else n for n in NAMES]
)
def test_one_feature_of_sixteen_shifting_raises_the_alarm_soon_after(name: str) -> None:
    test_a_shift_raises_the_alarm_soon_after_it(name, 16)


@pytest.mark.parametrize("name", NAMES)
def test_a_shift_raises_the_alarm_soon_after_it(name: str, features: int = 1) -> None:
    # Prepare: 3000 clean items, then one feature's mean moves by one standard deviation
    rng = np.random.default_rng(11)
    detector = make_detector(name, rng.normal(size=(500, features)))
    clean = rng.normal(size=(3000, features))
    changed = rng.normal(size=(1000, features))
    changed[:, 0] += 1.0
    # Execute
    raised = _alarms(detector, np.concatenate([clean, changed]))
    # Assert
    assert raised, f"{name} missed a 1 sd shift"
    assert 3000 <= raised[0] < 3000 + 600, raised
    assert detector.state.score > 0


def test_scores_rise_with_the_shift() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(1000, 4))
    scores = []
    for shift in (0.0, 0.5, 2.0):
        ks = make_detector("ks", reference, window=200, every=200)
        scores.append(ks.update(rng.normal(shift, size=(200, 4))).score)
    assert scores[0] < scores[1] < scores[2]
    assert scores[0] < make_detector("ks", reference).threshold  # type: ignore[attr-defined]


def test_ks_d_matches_the_exact_two_sample_statistic_on_discrete_data() -> None:
    # Prepare: pixel-like values 0..16, where the reference's distinct values are the grid
    rng = np.random.default_rng(5)
    reference = rng.integers(0, 17, size=(700, 1)).astype(float)
    window = rng.binomial(16, 0.55, size=(200, 1)).astype(float)
    ks = make_detector("ks", reference, window=200, every=200)
    # Execute
    d = ks.update(window).score
    # Assert: the largest CDF gap over all values, computed directly
    grid = np.arange(17)
    exact = np.abs(
        (window[:, 0, None] <= grid).mean(0) - (reference[:, 0, None] <= grid).mean(0)
    ).max()
    assert d == pytest.approx(exact)


@pytest.mark.parametrize("name", NAMES)
def test_items_that_do_not_fit_the_reference_are_refused(name: str) -> None:
    detector = make_detector(
        name, np.zeros((50, 3)) + np.arange(3) + np.linspace(0, 1, 50)[:, None]
    )

    with pytest.raises(DataError, match="items of 3 value"):
        detector.update(np.zeros(4))
    with pytest.raises(DataError, match="NaN"):
        detector.update(np.array([0.0, np.nan, 1.0]))


def test_a_short_reference_and_an_unknown_detector_or_parameter_are_refused() -> None:
    with pytest.raises(DataError, match="at least 20 items"):
        make_detector("ks", np.zeros((5, 2)))
    with pytest.raises(ConfigError, match="no drift detector 'cusum'"):
        make_detector("cusum", np.zeros(50))
    with pytest.raises(ConfigError, match="windw"):
        make_detector("ks", np.zeros(50), windw=10)
    with pytest.raises(ConfigError, match="alpha must be between 0 and 1"):
        make_detector("psi", np.zeros(50), alpha=2.0)
    with pytest.raises(ConfigError, match="adwin"):
        make_detector("adwin", np.zeros(50), delt=0.1)


def test_without_river_the_river_detectors_say_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes the import fail as if River were not installed.
    monkeypatch.setitem(sys.modules, "river", None)
    monkeypatch.setitem(sys.modules, "river.drift", None)

    with pytest.raises(ConfigError, match=r"pip install 'fogline\[monitor\]'"):
        make_detector("adwin", np.zeros(50))
    assert make_detector("ks", np.random.default_rng(0).normal(size=50)).features == 1
