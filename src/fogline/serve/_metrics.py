"""Prometheus metrics of the server, per model and version, read at scrape time.

Requests are counted by outcome with a latency histogram (what the client
waited: queue plus compute); batch sizes, queue depth and requests in flight
come from each loaded version's batcher and counters when Prometheus scrapes,
so serving a request costs one dictionary update.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fogline.serve._manager import ModelManager

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class _Series:
    success: int = 0
    failure: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(_BUCKETS) + 1))


class RequestStats:
    """Request outcomes and latencies per (model, version); updated on the event loop only.

    >>> stats = RequestStats()
    >>> stats.record("digits", 1, 0.002, ok=True)
    >>> stats.series[("digits", "1")].success
    1
    """

    def __init__(self) -> None:
        self.series: dict[tuple[str, str], _Series] = {}

    def record(self, model: str, version: int | str, seconds: float, *, ok: bool) -> None:
        key = (model, str(version))
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series()
        if ok:
            series.success += 1
            series.seconds += seconds
            series.buckets[bisect.bisect_left(_BUCKETS, seconds)] += 1
        else:
            series.failure += 1


class ServerCollector:
    """A ``prometheus_client`` collector over a :class:`ModelManager`."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        labels = ["model", "version"]
        requests = CounterMetricFamily(
            "fogline_serve_requests", "Inference requests by outcome.", labels=[*labels, "outcome"]
        )
        latency = HistogramMetricFamily(
            "fogline_serve_request_seconds",
            "Time from a request's arrival at the model to its answer (queue + compute).",
            labels=labels,
        )
        for (model, version), series in sorted(self.manager.stats.series.items()):
            requests.add_metric([model, version, "success"], series.success)
            requests.add_metric([model, version, "failure"], series.failure)
            cumulative, running = [], 0
            for bound, count in zip((*_BUCKETS, float("inf")), series.buckets, strict=True):
                running += count
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
            latency.add_metric([model, version], cumulative, series.seconds)
        yield requests
        yield latency
        in_flight = GaugeMetricFamily(
            "fogline_serve_in_flight", "Requests inside a model version now.", labels=labels
        )
        queued = GaugeMetricFamily(
            "fogline_serve_queue_depth", "Items waiting in a version's batcher.", labels=labels
        )
        queue_time = CounterMetricFamily(
            "fogline_serve_queue_seconds",
            "Time items waited in a version's batcher before their batch ran, summed.",
            labels=labels,
        )
        compute_time = CounterMetricFamily(
            "fogline_serve_compute_seconds",
            "Time the engine spent running a version's batches, summed.",
            labels=labels,
        )
        batches = CounterMetricFamily(
            "fogline_serve_batches",
            "Batches the engine ran, by size.",
            labels=[*labels, "size"],
        )
        for name, versions in sorted(self.manager.loaded().items()):
            for number, loaded in sorted(versions.items()):
                key = [name, str(number)]
                in_flight.add_metric(key, loaded.in_flight)
                if loaded.batcher is not None:
                    stats = loaded.batcher.stats
                    queued.add_metric(key, stats.queued)
                    queue_time.add_metric(key, stats.queue_seconds)
                    compute_time.add_metric(key, stats.compute_seconds)
                    for size, count in stats.batch_sizes.items():
                        batches.add_metric([*key, str(size)], count)
        yield in_flight
        yield queued
        yield queue_time
        yield compute_time
        yield batches
