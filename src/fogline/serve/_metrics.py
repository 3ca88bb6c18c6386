"""Prometheus metrics of the server, per model and version, read at scrape time.

Requests are counted by outcome with a latency histogram (what the client
waited: queue plus compute); batch sizes, queue depth and requests in flight
come from each loaded version's batcher and counters when Prometheus scrapes,
so serving a request costs one dictionary update.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fogline.metrics import (
    FAILURE,
    SERVE_BATCHES,
    SERVE_COMPUTE_SECONDS,
    SERVE_IN_FLIGHT,
    SERVE_QUEUE_DEPTH,
    SERVE_QUEUE_SECONDS,
    SERVE_REQUEST_SECONDS,
    SERVE_REQUESTS,
    SUCCESS,
    Histogram,
)

if TYPE_CHECKING:
    from fogline.serve._manager import ModelManager


@dataclass
class _Series:
    success: int = 0
    failure: int = 0
    latency: Histogram = field(default_factory=Histogram)  # of the successful requests


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
            series.latency.observe(seconds)
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
            SERVE_REQUESTS, "Inference requests by outcome.", labels=[*labels, "outcome"]
        )
        latency = HistogramMetricFamily(
            SERVE_REQUEST_SECONDS,
            "Time from a request's arrival at the model to its answer (queue + compute).",
            labels=labels,
        )
        for (model, version), series in sorted(self.manager.stats.series.items()):
            requests.add_metric([model, version, SUCCESS], series.success)
            requests.add_metric([model, version, FAILURE], series.failure)
            latency.add_metric([model, version], series.latency.cumulative(), series.latency.total)
        yield requests
        yield latency
        in_flight = GaugeMetricFamily(
            SERVE_IN_FLIGHT, "Requests inside a model version now.", labels=labels
        )
        queued = GaugeMetricFamily(
            SERVE_QUEUE_DEPTH, "Items waiting in a version's batcher.", labels=labels
        )
        queue_time = CounterMetricFamily(
            SERVE_QUEUE_SECONDS,
            "Time items waited in a version's batcher before their batch ran, summed.",
            labels=labels,
        )
        compute_time = CounterMetricFamily(
            SERVE_COMPUTE_SECONDS,
            "Time the engine spent running a version's batches, summed.",
            labels=labels,
        )
        batches = CounterMetricFamily(
            SERVE_BATCHES,
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
