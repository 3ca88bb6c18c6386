"""What a running pipeline counts and times, read by the live table, the summary and Prometheus.

Counting is cheap on purpose: at thousands of items a second the metrics
must not be what slows the pipeline. Each hot thread counts into its own
:class:`Tally` (written by that thread alone, so no lock per item); a
snapshot sums the tallies. Prometheus reads the same numbers at scrape time through a custom
collector, so there is no second bookkeeping per item.

Outcomes per source (each produced item ends in exactly one)::

    produced == processed + held + dropped + expired + failed + errors + in_flight

``held`` items were absorbed by a stage (a sliding window not full yet);
``errors`` are items a stage refused (:class:`~fogline.errors.ItemError`);
``corrupt`` counts frames or rows a source could not read at all, which were
never produced.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fogline.metrics import (
    CAPTURES,
    DRIFT_ALARM,
    DRIFT_ALARMS,
    DRIFT_SCORE,
    END_TO_END,
    PIPELINE_ITEMS,
    PIPELINE_QUEUE_DEPTH,
    PIPELINE_SINK_RESULTS,
    PIPELINE_STAGE_SECONDS,
    PIPELINE_THROUGHPUT,
    Histogram,
)

#: Item outcomes, in the order the live table and summary show them.
OUTCOMES = ("produced", "processed", "held", "dropped", "expired", "failed", "errors", "corrupt")
#: Stages timed per item, in pipeline order; "end_to_end" is capture → stored.
STAGES = ("preprocess", "inference", "postprocess", "store", END_TO_END)
#: What :meth:`Metrics.watch` takes to export a watched value: ``(value, pipeline)`` → families.
Families = Callable[[Any, str], Iterable[Any]]


class _Latency:
    """The Prometheus histogram of one stage, plus a ring of recent values for percentiles."""

    def __init__(self, ring: int) -> None:
        self.count = 0
        self.histogram = Histogram()
        self.ring = np.zeros(ring)

    def add(self, seconds: float) -> None:
        self.ring[self.count % len(self.ring)] = seconds
        self.count += 1
        self.histogram.observe(seconds)

    def recent(self) -> np.ndarray:
        return self.ring[: min(self.count, len(self.ring))]


@dataclass(frozen=True)
class StageTiming:
    """Percentiles of one stage's latency (seconds) over its most recent items."""

    count: int
    p50: float
    p99: float
    mean: float


@dataclass(frozen=True)
class Snapshot:
    """A consistent read of the metrics at one moment."""

    elapsed: float
    counts: Mapping[str, Mapping[str, int]]  # source -> outcome -> n
    stages: Mapping[str, StageTiming]
    queues: Mapping[str, int]
    sinks: Mapping[str, Mapping[str, int]]  # sink -> written/failed/dropped
    accuracy: tuple[int, int] | None  # (correct, labelled) when items carried labels
    extra: Mapping[str, Any] = field(default_factory=dict)
    captures: Mapping[str, int] = field(default_factory=dict)  # outcome -> n (capture:)

    def total(self, outcome: str) -> int:
        return sum(per.get(outcome, 0) for per in self.counts.values())

    @property
    def throughput(self) -> float:
        """Processed items per second since the start."""
        return self.total("processed") / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class DriftReading:
    """A drift step's latest test: its detector, score, whether the alarm is up, alarms so far."""

    detector: str
    score: float
    alarm: bool
    alarms: int


class Tally:
    """Counts and latencies written by one thread only; :meth:`Metrics.snapshot` sums them."""

    def __init__(self, ring: int) -> None:
        self._ring = ring
        self.counts: dict[str, Counter[str]] = {}
        self.stages: dict[str, _Latency] = {}
        self.correct = 0
        self.labelled = 0

    def label(self, correct: bool) -> None:
        """Count one labelled item, and whether the result's label matched it."""
        self.labelled += 1
        self.correct += bool(correct)

    def count(self, source: str, outcome: str, n: int = 1) -> None:
        counter = self.counts.get(source)
        if counter is None:
            counter = self.counts[source] = Counter()
        counter[outcome] += n

    def observe(self, stage: str, seconds: float) -> None:
        latency = self.stages.get(stage)
        if latency is None:
            latency = self.stages[stage] = _Latency(self._ring)
        latency.add(seconds)


class Metrics:
    """Counters and latency rings for one pipeline run, safe to use from any thread.

    Hot paths take a :meth:`tally` of their own; :meth:`count` and
    :meth:`observe` take a lock and suit occasional events.

    >>> m = Metrics()
    >>> m.count("cam0", "produced", 2); m.count("cam0", "processed")
    >>> m.observe("end_to_end", 0.004)
    >>> snap = m.snapshot()
    >>> snap.total("produced"), snap.stages["end_to_end"].p50
    (2, 0.004)
    """

    def __init__(self, ring: int = 1 << 16) -> None:
        self._lock = threading.Lock()
        self._ring = ring
        self._shared = Tally(ring)
        self._tallies: list[Tally] = [self._shared]
        self._queues: dict[str, Callable[[], int]] = {}
        self._watched: dict[str, tuple[Callable[[], Any], Families | None]] = {}
        self._sinks: dict[str, Counter[str]] = {}
        self._captures: Counter[str] = Counter()
        self._drift: dict[str, DriftReading] = {}
        self._started = time.monotonic()
        self._stopped: float | None = None

    def tally(self) -> Tally:
        """A new :class:`Tally` for one thread to write without locking."""
        tally = Tally(self._ring)
        with self._lock:
            self._tallies.append(tally)
        return tally

    def restart_clock(self) -> None:
        self._started = time.monotonic()
        self._stopped = None

    def stop_clock(self) -> None:
        self._stopped = time.monotonic()

    def count(self, source: str, outcome: str, n: int = 1) -> None:
        with self._lock:
            self._shared.count(source, outcome, n)

    def observe(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._shared.observe(stage, seconds)

    def label(self, correct: bool) -> None:
        with self._lock:
            self._shared.label(correct)

    def sink(self, name: str, outcome: str, n: int = 1) -> None:
        with self._lock:
            counter = self._sinks.get(name)
            if counter is None:
                counter = self._sinks[name] = Counter()
            counter[outcome] += n

    def capture(self, outcome: str, n: int = 1) -> None:
        """Count ``n`` hard examples by ``outcome`` (stored, capped, failed)."""
        with self._lock:
            self._captures[outcome] += n

    def drift(self, stage: str, detector: str, score: float, alarm: bool, raised: bool) -> None:
        """Record a drift step's latest test; ``raised`` counts one alarm (see ``stages.DriftSpec``)."""
        with self._lock:
            before = self._drift.get(stage)
            alarms = (before.alarms if before else 0) + raised
            self._drift[stage] = DriftReading(detector, score, alarm, alarms)

    def watch_queue(self, name: str, depth: Callable[[], int]) -> None:
        """Report ``depth()`` as the current depth of queue ``name``."""
        self._queues[name] = depth

    def queue_depth(self, name: str) -> int | None:
        """The current depth of queue ``name`` (see :meth:`watch_queue`), or None if not watched."""
        depth = self._queues.get(name)
        return None if depth is None else depth()

    def watch(self, name: str, read: Callable[[], Any], families: Families | None = None) -> None:
        """Report ``read()`` in each snapshot's ``extra[name]``; ``families(value, pipeline)``
        adds its Prometheus metric families at scrape time (late labels' figures)."""
        self._watched[name] = (read, families)

    def snapshot(self) -> Snapshot:
        with self._lock:
            tallies = list(self._tallies)
            sinks = {name: dict(counter) for name, counter in self._sinks.items()}
            captures = dict(self._captures)
            drift = dict(self._drift)
        correct = sum(t.correct for t in tallies)
        labelled_n = sum(t.labelled for t in tallies)
        labelled = (correct, labelled_n) if labelled_n else None
        counts: dict[str, Counter[str]] = {}
        for tally in tallies:
            for source, counter in list(tally.counts.items()):
                counts.setdefault(source, Counter()).update(dict(counter))
        stages = {}
        for stage in STAGES:
            parts = [t.stages[stage] for t in tallies if stage in t.stages]
            count = sum(p.count for p in parts)
            if count:
                values = np.concatenate([p.recent() for p in parts])
                p50, p99 = np.percentile(values, [50, 99])
                total = sum(p.histogram.total for p in parts)
                stages[stage] = StageTiming(count, float(p50), float(p99), total / count)
        end = self._stopped if self._stopped is not None else time.monotonic()
        queues = {name: depth() for name, depth in self._queues.items()}
        return Snapshot(
            end - self._started,
            {source: dict(counter) for source, counter in counts.items()},
            stages,
            queues,
            sinks,
            labelled,
            extra={
                **({"drift": drift} if drift else {}),
                **{name: read() for name, (read, _) in list(self._watched.items())},
            },
            captures=captures,
        )

    # --- Prometheus -----------------------------------------------------------------------

    def prometheus_collector(self, pipeline: str) -> Any:
        """A ``prometheus_client`` collector that reads these metrics at scrape time."""
        return _Collector(self, pipeline)

    def _histograms(self) -> dict[str, Histogram]:
        with self._lock:
            tallies = list(self._tallies)
        return {
            stage: Histogram.merged(t.stages[stage].histogram for t in tallies if stage in t.stages)
            for stage in STAGES
        }


class _Collector:
    def __init__(self, metrics: Metrics, pipeline: str) -> None:
        self._metrics = metrics
        self._pipeline = pipeline

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = self._metrics.snapshot()
        labels = ["pipeline", "source", "outcome"]
        items = CounterMetricFamily(PIPELINE_ITEMS, "Items by source and outcome.", labels=labels)
        for source, per in sorted(snap.counts.items()):
            for outcome in OUTCOMES:
                items.add_metric([self._pipeline, source, outcome], per.get(outcome, 0))
        yield items
        latency = HistogramMetricFamily(
            PIPELINE_STAGE_SECONDS,
            "Per-item latency of each stage; end_to_end is capture to stored.",
            labels=["pipeline", "stage"],
        )
        for stage, histogram in self._metrics._histograms().items():
            latency.add_metric([self._pipeline, stage], histogram.cumulative(), histogram.total)
        yield latency
        depth = GaugeMetricFamily(
            PIPELINE_QUEUE_DEPTH,
            "Items waiting in each queue.",
            labels=["pipeline", "queue"],
        )
        for name, value in sorted(snap.queues.items()):
            depth.add_metric([self._pipeline, name], value)
        yield depth
        sinks = CounterMetricFamily(
            PIPELINE_SINK_RESULTS,
            "Results per sink and outcome (written, failed, dropped).",
            labels=["pipeline", "sink", "outcome"],
        )
        for name, per in sorted(snap.sinks.items()):
            for outcome, value in sorted(per.items()):
                sinks.add_metric([self._pipeline, name, outcome], value)
        yield sinks
        throughput = GaugeMetricFamily(
            PIPELINE_THROUGHPUT,
            "Processed items per second since the start.",
            labels=["pipeline"],
        )
        throughput.add_metric([self._pipeline], snap.throughput)
        yield throughput
        if snap.captures:
            captures = CounterMetricFamily(
                CAPTURES,
                "Hard examples that met capture.when, by outcome (stored, capped, failed).",
                labels=["pipeline", "outcome"],
            )
            for outcome, value in sorted(snap.captures.items()):
                captures.add_metric([self._pipeline, outcome], value)
            yield captures
        yield from _drift_families(self._pipeline, snap.extra.get("drift", {}))
        for name, (_, families) in list(self._metrics._watched.items()):
            if families is not None and name in snap.extra:
                yield from families(snap.extra[name], self._pipeline)


def _drift_families(pipeline: str, readings: Mapping[str, DriftReading]) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    if not readings:
        return
    labels = ["pipeline", "stage", "detector"]
    score = GaugeMetricFamily(DRIFT_SCORE, "Latest score of each drift step.", labels=labels)
    alarm = GaugeMetricFamily(DRIFT_ALARM, "1 while a drift step's alarm is raised.", labels=labels)
    alarms = CounterMetricFamily(DRIFT_ALARMS, "Alarms raised by each drift step.", labels=labels)
    for stage, reading in sorted(readings.items()):
        values = [pipeline, stage, reading.detector]
        score.add_metric(values, reading.score)
        alarm.add_metric(values, float(reading.alarm))
        alarms.add_metric(values, reading.alarms)
    yield from (score, alarm, alarms)
