"""Measuring an engine: latency percentiles, throughput and peak memory.

``fogline bench`` and the optimizer both measure through here, so a
figure in a report and a figure from ``bench`` mean the same thing.
Concurrency: one measuring thread calls ``Engine.run`` back to back; a
sampler thread reads the process's resident memory every few milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import numpy as np
import psutil

from fogline.model._engine import Engine


class PeakMemory:
    """Peak resident memory of this process while the block runs.

    >>> with PeakMemory() as mem:
    ...     block = bytearray(64 << 20)
    >>> mem.peak_mb >= mem.start_mb
    True
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_mb = 0.0
        self.peak_mb = 0.0

    def _rss_mb(self) -> float:
        return float(self._process.memory_info().rss) / (1 << 20)

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak_mb = max(self.peak_mb, self._rss_mb())

    def __enter__(self) -> PeakMemory:
        self.start_mb = self.peak_mb = self._rss_mb()
        self._thread = threading.Thread(target=self._sample, name="fogline-mem", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, self._rss_mb())

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch size, in milliseconds, and items per second."""

    batch: int
    runs: int
    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_calls(
    call: Callable[[], object],
    *,
    batch: int = 1,
    warmup: int = 5,
    duration_s: float = 2.0,
    min_runs: int = 20,
    max_runs: int = 100_000,
) -> LatencyStats:
    """Call ``call`` for ``duration_s`` (at least ``min_runs`` times) and time each call."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    clock = time.perf_counter
    deadline = clock() + duration_s
    while (len(times) < min_runs or clock() < deadline) and len(times) < max_runs:
        start = clock()
        call()
        times.append(clock() - start)
    ms = np.asarray(times) * 1000.0
    total_s = float(np.sum(times))
    return LatencyStats(
        batch=batch,
        runs=len(times),
        p50=float(np.percentile(ms, 50)),
        p90=float(np.percentile(ms, 90)),
        p99=float(np.percentile(ms, 99)),
        mean=float(np.mean(ms)),
        throughput=batch * len(times) / total_s if total_s > 0 else float("inf"),
    )


def measure(
    engine: Engine,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    batch: int = 1,
    warmup: int = 5,
    duration_s: float = 2.0,
    min_runs: int = 20,
) -> LatencyStats:
    """Latency and throughput of ``engine.run`` on ``feeds`` (random inputs if none)."""
    inputs = dict(feeds) if feeds is not None else engine.signature.sample_feeds(batch)
    return time_calls(
        lambda: engine.run(inputs),
        batch=batch,
        warmup=warmup,
        duration_s=duration_s,
        min_runs=min_runs,
    )
