"""Drift detectors: is the stream still like its reference?

One small interface, :class:`Detector`: build it from a reference (the data
the model is known to do well on), then :meth:`Detector.update` it with one
item or a batch of items; it answers a :class:`DriftState` (a score, whether
the alarm is raised, and where in the batch an alarm was raised). Items are
vectors of ``features`` numbers (a scalar stream has one feature).

=================  ==============================================================  ===========
detector           what it does                                                    score
=================  ==============================================================  ===========
``adwin``          River's ``ADWIN`` on each item's standardized summary            sd shift
``page-hinkley``   River's ``PageHinkley`` on the same summary                      sd shift
``ks``             two-sample Kolmogorov-Smirnov: sliding window vs reference       KS D
``psi``            population stability index over the reference's quantile bins  PSI
=================  ==============================================================  ===========

Why these are written as they are:

* River's detectors are univariate, so a vector item is summarized by one
  number: the mean over features of its squared z-scores against the
  reference (a diagonal Mahalanobis distance, clipped so one feature cannot
  dominate), standardized by that number's own mean and spread over the
  reference. A change of any feature's mean or spread raises it, and it is in
  standard deviations whatever the data's scale, so River's thresholds mean the same on
  every input. A scalar stream is standardized as is (signed). River's
  detectors fire once per change and then adapt, so their alarm is held for
  ``hold`` items after each detection. A change of one feature among ``d`` moves the
  summary by about ``shift / sqrt(2 d)`` of its sd: ADWIN still finds a 1 sd
  shift of one feature in 16, Page-Hinkley (``delta`` 0.25 sd) does not;
  ``ks`` and ``psi`` test every feature.
* No light library does windowed KS or PSI incrementally. Here each feature's
  values are binned once, on arrival, against edges taken from the reference
  (its distinct values, or its quantiles when it has many), with a single
  ``searchsorted`` per batch; a sliding window keeps bin counts, so a test is
  a cumulative sum over ``features * bins`` numbers, whatever the window.
  KS is evaluated at the edges, exact for data with few distinct values
  (pixels, counts) and within about ``1/bins`` otherwise.
* Many features means many tests: both correct ``alpha`` for the number of
  features (Bonferroni) and report the largest per-feature statistic as the
  one score. KS alarms above the asymptotic critical D at ``alpha /
  features``; PSI above ``threshold`` or the χ² bound of PSI at ``alpha /
  features`` for the window and reference sizes, whichever is larger.

River is imported when an ``adwin`` or ``page-hinkley`` detector is built
(``import river.drift`` takes over a second), never on import of this module.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from fogline.errors import ConfigError, DataError

#: Squared z-scores above this are clipped in the vector summary.
_CLIP = 25.0
#: The span (items) of the moving average that River detectors report as their score.
_SPAN = 100


@dataclass(frozen=True, slots=True)
class DriftState:
    """A detector's answer after an update.

    ``score`` is the latest statistic (see the module's table), ``alarm``
    whether the alarm is raised now, ``raised`` the index in the update's
    batch where an alarm was raised (``None`` when none was).
    """

    score: float
    alarm: bool
    raised: int | None = None


def as_items(values: Any, features: int) -> np.ndarray:
    """``values`` as an ``(n, features)`` float64 array of finite numbers, or :class:`DataError`.

    >>> as_items([1.0, 2.0, 3.0], 1).shape, as_items(np.zeros((2, 8, 8)), 64).shape
    ((3, 1), (2, 64))
    """
    array = np.asarray(values, dtype=np.float64)
    if array.size % features or array.size == 0:
        raise DataError(
            f"drift: expected items of {features} value(s), got {array.size} value(s) "
            f"(shape {list(array.shape)})"
        )
    array = array.reshape(-1, features)
    if not np.isfinite(array).all():
        raise DataError("drift: the values hold NaN or infinity")
    return array


class Detector(ABC):
    """Builds from a reference of ``(n, features)`` values; :meth:`update` returns a :class:`DriftState`.

    >>> rng = np.random.default_rng(0)
    >>> ks = make_detector("ks", rng.normal(size=(1000, 3)), window=100)
    >>> ks.update(rng.normal(size=(300, 3))).alarm
    False
    >>> ks.update(rng.normal(1.0, size=(300, 3))).alarm
    True
    """

    #: The name ``make_detector`` and the pipeline's ``detector:`` know it by.
    name: ClassVar[str]
    #: The fewest reference items it takes.
    min_reference: ClassVar[int] = 20

    def __init__(self, reference: Any, features: int | None = None) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        if features is None:
            features = 1 if ref.ndim <= 1 else int(np.prod(ref.shape[1:]))
        ref = as_items(ref, features)
        if len(ref) < self.min_reference:
            raise DataError(
                f"drift: {self.name} needs a reference of at least {self.min_reference} items, "
                f"got {len(ref)}"
            )
        self.features = features
        self.items = 0
        self.state = DriftState(0.0, False)

    def update(self, values: Any) -> DriftState:
        """Take one item or a batch (any shape holding whole items); the state after it."""
        batch = as_items(values, self.features)
        self.state = self._update(batch)
        self.items += len(batch)
        return self.state

    @abstractmethod
    def _update(self, batch: np.ndarray) -> DriftState: ...


# --- River's detectors on a one-number summary ------------------------------------------------


class _Summary:
    """Each item → one number in standard deviations of the reference (see the module docstring)."""

    def __init__(self, ref: np.ndarray) -> None:
        self.mu = ref.mean(axis=0)
        sd = ref.std(axis=0)
        spread = sd[sd > 0]
        floor = 0.1 * float(np.median(spread)) if spread.size else 1.0
        self.inv = 1.0 / np.maximum(sd, max(floor, 1e-12))
        raw = self._raw(ref)
        self.m, self.s = float(raw.mean()), max(float(raw.std()), 1e-12)

    def _raw(self, x: np.ndarray) -> np.ndarray:
        z: np.ndarray = (x - self.mu) * self.inv
        if z.shape[1] == 1:
            signed: np.ndarray = z[:, 0]
            return signed
        squared: np.ndarray = np.minimum(z * z, _CLIP).mean(axis=1)
        return squared

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (self._raw(x) - self.m) / self.s


def _river_drift() -> Any:
    try:
        import river.drift
    except ImportError as exc:
        raise ConfigError(
            "the adwin and page-hinkley drift detectors need River: pip install 'fogline[monitor]'"
        ) from exc
    return river.drift


class _River(Detector):
    """A River drift detector fed the summary; the score is its moving average's |shift|."""

    river_class: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self, reference: Any, features: int | None = None, *, hold: int = 500, **params: Any
    ) -> None:
        super().__init__(reference, features)
        factory = getattr(_river_drift(), self.river_class)
        try:
            self._detector = factory(**{**self.defaults, **params})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name}: {exc}") from exc
        if hold < 1:
            raise ConfigError(f"{self.name}: hold must be at least 1 item, got {hold}")
        self.hold = hold
        ref = as_items(np.asarray(reference, dtype=np.float64), self.features)
        self._summary = _Summary(ref)
        update = self._detector.update
        for value in self._summary(ref).tolist():  # start from the reference, not from nothing
            update(value)
        self._mean = 0.0
        self._weights: np.ndarray = np.zeros(0)
        self._decay = 1.0
        self._alarm_left = 0

    def _update(self, batch: np.ndarray) -> DriftState:
        z = self._summary(batch)
        detector, raised, left = self._detector, None, self._alarm_left
        for i, value in enumerate(z.tolist()):
            detector.update(value)
            if detector.drift_detected:
                if left == 0 and raised is None:
                    raised = i
                left = self.hold
            elif left:
                left -= 1
        self._alarm_left = left
        n = len(z)
        if len(self._weights) != n:  # the moving average's weights for a batch of n, newest last
            a = 2.0 / (_SPAN + 1)
            self._weights = a * (1.0 - a) ** np.arange(n - 1, -1, -1)
            self._decay = (1.0 - a) ** n
        self._mean = self._decay * self._mean + float(self._weights @ z)
        return DriftState(abs(self._mean), left > 0, raised)


class Adwin(_River):
    """River's ``ADWIN`` at its defaults (``delta: 0.002``), on the standardized summary."""

    name = "adwin"
    river_class = "ADWIN"


class PageHinkley(_River):
    """River's ``PageHinkley`` on the standardized summary, ``delta: 0.25`` sd.

    ``delta`` is the change the test lets pass unnoticed, here in standard
    deviations of the summary. River's default (0.005) raised false alarms
    on stationary streams, most on skewed ones such as a classifier's
    confidence; 0.25 brings it near ADWIN's rate and still catches a 0.5 sd
    shift (``benchmarks/bench_monitor.py`` measures both).
    """

    name = "page-hinkley"
    river_class = "PageHinkley"
    defaults: ClassVar[dict[str, Any]] = {"delta": 0.25}


# --- windowed statistics over the reference's bins --------------------------------------------


class _Window:
    """Per-feature bin counts of the last ``window`` items; one ``searchsorted`` per batch.

    ``edges[j]`` holds feature ``j``'s edges (ascending, padded with +inf to a
    common length ``G``); an item's bin in a feature is the number of edges
    below its value (0..G). Features are laid side by side on one number line
    (each shifted past the previous one's range) so one ``searchsorted`` bins
    a whole batch.
    """

    def __init__(self, edges: list[np.ndarray], window: int) -> None:
        d, g = len(edges), max(len(e) for e in edges)
        finite = np.concatenate(edges)
        lo, hi = float(finite.min()), float(finite.max())
        self.lo, self.hi = lo - 1.0, hi + 1.0
        span = hi - lo + 4.0
        padded = np.full((d, g), hi + 2.0)
        for j, e in enumerate(edges):
            padded[j, : len(e)] = e
        self.shift = np.arange(d) * span
        self._flat = (padded + self.shift[:, None]).ravel()
        # Counts are laid out bin-major, (bins, features), so a test's cumulative sum over
        # bins adds whole rows. A value of feature j at flat edge index i is in bin i - j * g.
        self._first = np.arange(d) * g
        self._feature = np.arange(d)
        self._d = d
        self.bins = g + 1
        self.window = window
        self.counts = np.zeros(d * (g + 1), np.int64)
        self._ring = np.zeros((window, d), np.int64)
        self._pos = 0
        self.filled = 0

    def cells(self, batch: np.ndarray) -> np.ndarray:
        """Each value's count cell: ``(n, d)`` indices into :attr:`counts`."""
        x = np.clip(batch, self.lo, self.hi)
        x += self.shift
        idx: np.ndarray = np.searchsorted(self._flat, x, side="left")
        idx -= self._first
        idx *= self._d
        idx += self._feature
        return idx

    def push(self, batch: np.ndarray) -> None:
        cells = self.cells(batch[-self.window :] if len(batch) > self.window else batch)
        n, size, pos = len(cells), len(self.counts), self._pos
        if pos + n <= self.window:  # no wrap: slices, no index arrays
            old = self._ring[pos : min(pos + n, self.filled)]
            if len(old):
                self.counts -= np.bincount(old.ravel(), minlength=size)
            self._ring[pos : pos + n] = cells
        else:
            rows = (pos + np.arange(n)) % self.window
            old = self._ring[rows[rows < self.filled]]
            if len(old):
                self.counts -= np.bincount(old.ravel(), minlength=size)
            self._ring[rows] = cells
        self.counts += np.bincount(cells.ravel(), minlength=size)
        self._pos = (pos + n) % self.window
        self.filled = min(self.window, self.filled + n)

    def table(self) -> np.ndarray:
        """The counts as ``(bins, features)``."""
        return self.counts.reshape(self.bins, -1)


def _edges(column: np.ndarray, bins: int) -> np.ndarray:
    """The distinct values when there are at most ``bins``, else inner quantiles."""
    distinct = np.unique(column)
    if len(distinct) <= bins:
        return distinct
    return np.unique(np.quantile(column, np.arange(1, bins) / bins))


class _Windowed(Detector):
    """A sliding window tested against the reference every ``every`` items."""

    def __init__(
        self,
        reference: Any,
        features: int | None,
        *,
        window: int,
        bins: int,
        alpha: float,
        every: int,
    ) -> None:
        super().__init__(reference, features)
        for key, value, least in (("window", window, 1), ("bins", bins, 2), ("every", every, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(
                    f"{self.name}: {key} must be an integer >= {least}, got {value!r}"
                )
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"{self.name}: alpha must be between 0 and 1, got {alpha!r}")
        ref = as_items(np.asarray(reference, dtype=np.float64), self.features)
        self.reference_items = len(ref)
        self.alpha, self.every = alpha, every
        edges = [self._edges_of(ref[:, j], bins) for j in range(self.features)]
        self._window = _Window(edges, window)
        cells = self._window.cells(ref).ravel()
        table = np.bincount(cells, minlength=len(self._window.counts))
        self._reference = table.reshape(self._window.bins, -1) / len(ref)  # (bins, features)
        self._since = 0
        self.threshold = self._threshold(window, len(ref))

    def _edges_of(self, column: np.ndarray, bins: int) -> np.ndarray:
        return _edges(column, bins)

    def _update(self, batch: np.ndarray) -> DriftState:
        window = self._window
        window.push(batch)
        self._since += len(batch)
        if window.filled < window.window or self._since < self.every:
            return DriftState(self.state.score, self.state.alarm)
        self._since = 0
        score = float(self._statistic(window.table()).max())
        alarm = score > self.threshold
        return DriftState(score, alarm, len(batch) - 1 if alarm and not self.state.alarm else None)

    @abstractmethod
    def _statistic(self, counts: np.ndarray) -> np.ndarray:
        """Per feature, from the window's count of items in each bin, ``(bins, features)``."""

    @abstractmethod
    def _threshold(self, window: int, reference: int) -> float: ...


class KolmogorovSmirnov(_Windowed):
    """Windowed two-sample KS, Bonferroni-corrected: alarm when the largest D passes the critical D."""

    name = "ks"

    def __init__(
        self,
        reference: Any,
        features: int | None = None,
        *,
        window: int = 200,
        bins: int = 64,
        alpha: float = 1e-4,
        every: int = 16,
    ) -> None:
        super().__init__(reference, features, window=window, bins=bins, alpha=alpha, every=every)
        self._reference_cdf = np.cumsum(self._reference, axis=0) * window

    def _statistic(self, counts: np.ndarray) -> np.ndarray:
        gap: np.ndarray = np.abs(np.cumsum(counts, axis=0) - self._reference_cdf).max(axis=0)
        return gap / self._window.window

    def _threshold(self, window: int, reference: int) -> float:
        # The asymptotic critical value of the two-sample statistic at alpha / features.
        level = self.alpha / self.features
        return math.sqrt(-0.5 * math.log(level / 2.0)) * math.sqrt(
            (window + reference) / (window * reference)
        )


class PopulationStability(_Windowed):
    """PSI of the window against the reference's quantile bins; the largest feature's PSI."""

    name = "psi"

    def __init__(
        self,
        reference: Any,
        features: int | None = None,
        *,
        window: int = 200,
        bins: int = 10,
        threshold: float = 0.25,
        alpha: float = 1e-5,
        every: int = 16,
    ) -> None:
        self._floor, self._bins = threshold, bins
        super().__init__(reference, features, window=window, bins=bins, alpha=alpha, every=every)
        self._ref_share = self._reference + 0.5 / self.reference_items
        self._eps = 0.5 / window

    def _edges_of(self, column: np.ndarray, bins: int) -> np.ndarray:
        distinct = np.unique(column)
        if len(distinct) <= bins:  # one bin per value: edges between them
            return distinct[:-1]
        return np.unique(np.quantile(column, np.arange(1, bins) / bins))

    def _statistic(self, counts: np.ndarray) -> np.ndarray:
        p, q = counts / self._window.window + self._eps, self._ref_share
        result: np.ndarray = ((p - q) * np.log(p / q)).sum(axis=0)
        return result

    def _threshold(self, window: int, reference: int) -> float:
        # n·PSI is about chi-square(bins - 1) on a stationary stream (both samples count).
        k = max(1, self._bins - 1)
        z = NormalDist().inv_cdf(1.0 - self.alpha / self.features)
        chi2 = k * (1.0 - 2.0 / (9 * k) + z * math.sqrt(2.0 / (9 * k))) ** 3  # Wilson-Hilferty
        return max(self._floor, chi2 * (1.0 / window + 1.0 / reference))


#: Detectors by the name ``detector:`` takes.
DETECTORS: dict[str, type[Detector]] = {
    "adwin": Adwin,
    "page-hinkley": PageHinkley,
    "ks": KolmogorovSmirnov,
    "psi": PopulationStability,
}


def make_detector(
    name: str, reference: Any, features: int | None = None, **params: Any
) -> Detector:
    """The detector ``name`` built on ``reference``; :class:`ConfigError` for an unknown one.

    >>> make_detector("cusum", [0.0] * 50)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: no drift detector 'cusum'; choose adwin, page-hinkley, ks or psi
    """
    try:
        cls = DETECTORS[name]
    except KeyError:
        names = list(DETECTORS)
        raise ConfigError(
            f"no drift detector {name!r}; choose {', '.join(names[:-1])} or {names[-1]}"
        ) from None
    try:
        return cls(reference, features, **params)
    except TypeError as exc:  # an unknown parameter
        raise ConfigError(f"{name}: {exc}") from exc
