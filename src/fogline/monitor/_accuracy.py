"""How right a model is in the field: live accuracy from late labels, and an estimate without them.

:class:`AccuracyWindows` keeps, per model version, the most recent outcomes
of labelled results — correct or not (a classifier) or the absolute error (a
regressor) — and reads accuracy or mean absolute error over several sliding
windows at once (the last 100 labels, the last 1000).

Labels are slow and often never come. :class:`ConfidenceCalibration` and
:class:`AccuracyEstimator` estimate accuracy without them, the way
confidence-based performance estimation (CBPE, as NannyML does it for
classifiers) does: on reference results whose labels are known, fit a map
from the model's confidence (``score``) to the chance the result is right;
then the expected accuracy over a window of unlabelled results is the mean of
their calibrated confidences. A figure made so is an estimate and says so
(:attr:`WindowFigure.estimate`); it is only as good as the reference is like
the traffic (a shift that leaves confidence unchanged goes unseen).

Concurrency: none inside; the pipeline updates these from one thread and
reads them under its own lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fogline.errors import ConfigError

Metric = Literal["accuracy", "mae"]


@dataclass(frozen=True)
class WindowFigure:
    """One figure: ``metric`` of ``model_version`` over its last ``window`` items.

    ``count`` is how many items the window holds so far (fewer than
    ``window`` early on): the figure rests on that many. ``estimate`` is true
    for a figure estimated without labels.

    >>> WindowFigure("1.0", 100, "accuracy", 0.95, 100).describe()
    'accuracy 95.00% over the last 100 (v1.0)'
    >>> WindowFigure("1.0", 1000, "accuracy", 0.9, 250, estimate=True).describe()
    'estimated accuracy 90.00% over the last 250 of 1000 (v1.0, no labels: CBPE)'
    """

    model_version: str
    window: int
    metric: Metric
    value: float
    count: int
    estimate: bool = False

    def describe(self) -> str:
        shown = f"{self.value:.2%}" if self.metric == "accuracy" else f"{self.value:.4g}"
        span = f"{self.count}" if self.count >= self.window else f"{self.count} of {self.window}"
        name = "mean absolute error" if self.metric == "mae" else self.metric
        if self.estimate:
            return f"estimated {name} {shown} over the last {span} (v{self.model_version}, no labels: CBPE)"
        return f"{name} {shown} over the last {span} (v{self.model_version})"


def check_windows(windows: Sequence[int]) -> tuple[int, ...]:
    """The windows as a sorted tuple without repeats; :class:`ConfigError` unless each is ≥ 1.

    >>> check_windows([1000, 100, 100])
    (100, 1000)
    """
    if not windows:
        raise ConfigError("name at least one window (a number of labels)")
    for window in windows:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ConfigError(f"a window is a number of labels ≥ 1, got {window!r}")
    return tuple(sorted(set(windows)))


class _Ring:
    """The last ``size`` values of one model version."""

    def __init__(self, size: int) -> None:
        self.values = np.zeros(size)
        self.count = 0

    def add(self, value: float) -> None:
        self.values[self.count % len(self.values)] = value
        self.count += 1

    def last(self, n: int) -> np.ndarray:
        size = len(self.values)
        n = min(n, self.count, size)
        end = self.count % size
        if n <= end:
            return self.values[end - n : end]
        return np.concatenate([self.values[size - (n - end) :], self.values[:end]])


class AccuracyWindows:
    """Sliding windows of outcomes per model version: accuracy, or mean absolute error.

    For ``metric="accuracy"`` each outcome is whether a result was right
    (:meth:`add` takes a bool, or a probability of being right when
    estimating); for ``"mae"`` it is a result's absolute error. Adding is O(1);
    reading a figure costs O(window).

    >>> windows = AccuracyWindows((2, 4))
    >>> for right in (False, True, True, True):
    ...     windows.add("1.0", right)
    >>> [(f.window, f.value, f.count) for f in windows.figures()]
    [(2, 1.0, 2), (4, 0.75, 4)]
    >>> errors = AccuracyWindows((3,), metric="mae")
    >>> for e in (1.0, 0.5, 0.0, 2.5):
    ...     errors.add("2.0", e)
    >>> errors.figures()[0].value
    1.0
    """

    def __init__(
        self, windows: Sequence[int] = (100, 1000), *, metric: Metric = "accuracy"
    ) -> None:
        if metric not in ("accuracy", "mae"):
            raise ConfigError(f"metric is accuracy or mae, got {metric!r}")
        self.windows = check_windows(windows)
        self.metric: Metric = metric
        self._rings: dict[str, _Ring] = {}

    def add(self, model_version: str, outcome: float | bool) -> None:
        """One labelled result of ``model_version``: right or not, or its absolute error."""
        ring = self._rings.get(model_version)
        if ring is None:
            ring = self._rings[model_version] = _Ring(self.windows[-1])
        ring.add(float(outcome))

    def figures(self, *, estimate: bool = False) -> list[WindowFigure]:
        """Every model version's figure over each window (versions in name order)."""
        figures = []
        for version in sorted(self._rings):
            ring = self._rings[version]
            for window in self.windows:
                values = ring.last(window)
                if len(values):
                    figures.append(
                        WindowFigure(
                            version,
                            window,
                            self.metric,
                            float(values.mean()),
                            len(values),
                            estimate,
                        )
                    )
        return figures

    def count(self, model_version: str) -> int:
        """How many outcomes ``model_version`` has had in all."""
        ring = self._rings.get(model_version)
        return 0 if ring is None else ring.count


@dataclass(frozen=True)
class ConfidenceCalibration:
    """A map from a classifier's confidence to the chance it is right, fitted on labelled results.

    Histogram binning: the reference's scores are cut into ``bins`` bins of
    equal count (so the crowded top end of a confident model gets several), and
    each bin's chance of being right is its share of right answers, pulled
    slightly towards the reference's overall accuracy (one pseudo-answer) so a
    bin of three items does not claim 0 % or 100 %. Below the lowest score the
    reference holds, where it has no evidence, the score itself is used,
    scaled by how over- or under-confident the lowest bin was: binning alone
    would give every less confident item the lowest bin's rate, and so miss a
    drop in confidence that the reference never saw.

    >>> scores = np.array([0.3, 0.4, 0.5, 0.6, 0.9, 0.95, 0.97, 0.99])
    >>> right = np.array([0, 0, 1, 0, 1, 1, 1, 1], bool)
    >>> calibration = ConfidenceCalibration.fit(scores, right, bins=2)
    >>> calibration.reference_accuracy, [round(float(p), 3) for p in calibration([0.35, 0.98])]
    (0.625, [0.325, 0.925])
    >>> round(float(calibration(0.15)[0]), 3)  # below the reference: 0.15 x 0.325 / 0.45
    0.108
    """

    edges: tuple[float, ...]  # inner bin edges, ascending
    rates: tuple[float, ...]  # P(right) per bin, one more than edges
    reference_accuracy: float
    reference_size: int
    lowest: float = 0.0  # the reference's lowest score
    lowest_ratio: float = 1.0  # the lowest bin's rate over its mean score

    @classmethod
    def fit(
        cls,
        scores: Sequence[float] | np.ndarray,
        right: Sequence[bool] | np.ndarray,
        bins: int = 10,
    ) -> ConfidenceCalibration:
        s = np.asarray(scores, dtype=np.float64)
        r = np.asarray(right, dtype=np.float64)
        if s.ndim != 1 or s.shape != r.shape:
            raise ConfigError(
                f"scores and outcomes must be two lists of one length, got {s.shape} and {r.shape}"
            )
        if len(s) < 2:
            raise ConfigError(f"calibration needs at least 2 labelled results, got {len(s)}")
        if not np.isfinite(s).all():
            raise ConfigError("calibration scores must be finite numbers")
        if bins < 1:
            raise ConfigError(f"bins must be at least 1, got {bins}")
        overall = float(r.mean())
        inner = np.unique(np.quantile(s, np.linspace(0, 1, bins + 1)[1:-1]))
        which = np.searchsorted(inner, s, side="right")
        n = np.bincount(which, minlength=len(inner) + 1)
        k = np.bincount(which, weights=r, minlength=len(inner) + 1)
        rates = (k + overall) / (n + 1.0)
        first = s[which == 0]
        mean_score = float(first.mean()) if len(first) else 0.0
        ratio = float(rates[0]) / mean_score if mean_score > 0 else 1.0
        return cls(
            tuple(float(e) for e in inner),
            tuple(float(p) for p in rates),
            overall,
            len(s),
            float(s.min()),
            ratio,
        )

    def __call__(self, scores: Sequence[float] | np.ndarray | float) -> np.ndarray:
        """The calibrated chance of being right for each score."""
        s = np.atleast_1d(np.asarray(scores, dtype=np.float64))
        binned = np.asarray(self.rates)[np.searchsorted(np.asarray(self.edges), s, side="right")]
        below = np.clip(s * self.lowest_ratio, 0.0, 1.0)
        return np.where(s < self.lowest, below, binned)


class AccuracyEstimator:
    """CBPE for a stream: calibrate on the first ``reference`` labelled results, then estimate.

    :meth:`learn` takes a labelled result's score and whether it was right,
    until ``reference`` of them fit the :class:`ConfidenceCalibration`;
    :meth:`observe` takes every result's score (labelled or not) into the
    model version's window. Once calibrated, :meth:`figures` are the mean
    calibrated confidence over each window (results seen before the
    calibration count too), marked as estimates.

    >>> estimator = AccuracyEstimator(reference=4, windows=(10,), bins=1)
    >>> for score, right in [(0.9, True), (0.8, True), (0.7, False), (0.95, True)]:
    ...     estimator.learn(score, right)
    >>> estimator.calibrated, round(estimator.calibration.reference_accuracy, 2)
    (True, 0.75)
    >>> estimator.observe("1.0", 0.99); estimator.figures()[0].describe()
    'estimated accuracy 75.00% over the last 1 of 10 (v1.0, no labels: CBPE)'
    """

    def __init__(
        self, *, reference: int = 500, windows: Sequence[int] = (100, 1000), bins: int = 10
    ) -> None:
        if reference < 2:
            raise ConfigError(f"the reference needs at least 2 labelled results, got {reference}")
        self.reference = reference
        self.bins = bins
        self.calibration: ConfidenceCalibration | None = None
        self.windows = check_windows(windows)
        self._seen: dict[str, _Ring] = {}
        self._scores: list[float] = []
        self._right: list[bool] = []

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def learn(self, score: float, right: bool) -> None:
        """One labelled result for the reference; fits the calibration when it is complete."""
        if self.calibration is not None or not np.isfinite(score):
            return
        self._scores.append(float(score))
        self._right.append(bool(right))
        if len(self._scores) >= self.reference:
            self.calibration = ConfidenceCalibration.fit(self._scores, self._right, self.bins)
            self._scores, self._right = [], []

    def observe(self, model_version: str, score: float) -> None:
        """One result's confidence (labelled or not)."""
        if not np.isfinite(score):
            return
        ring = self._seen.get(model_version)
        if ring is None:
            ring = self._seen[model_version] = _Ring(self.windows[-1])
        ring.add(float(score))

    def figures(self) -> list[WindowFigure]:
        """The estimates per model version and window; none before the calibration."""
        if self.calibration is None:
            return []
        figures = []
        for version in sorted(self._seen):
            for window in self.windows:
                scores = self._seen[version].last(window)
                if len(scores):
                    value = float(self.calibration(scores).mean())
                    figures.append(
                        WindowFigure(version, window, "accuracy", value, len(scores), True)
                    )
        return figures
