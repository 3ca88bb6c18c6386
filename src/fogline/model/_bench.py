"""Measuring an engine: latency percentiles, throughput, energy per item and peak memory.

``fogline bench`` and the optimizer both measure through here, so a
figure in a report and a figure from ``bench`` mean the same thing.
Energy comes from :func:`fogline.power.open_meter` (RAPL or NVML where the
device exposes them, else an estimate from CPU time) over the timed calls,
warm-up excluded, and is labelled measured or estimated.
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
from fogline.power import Energy, EnergyMeter, open_meter


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
    """Latency of one batch size, in milliseconds, items per second, and the energy spent.

    ``energy`` covers the timed calls (None when nothing was metered, e.g. a
    remote model whose work runs elsewhere).
    """

    batch: int
    runs: int
    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float
    energy: Energy | None = None

    @property
    def joules_per_item(self) -> float | None:
        """Joules per inference (per item, not per batch), or None when not metered."""
        return None if self.energy is None else self.energy.per(self.batch * self.runs)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values.pop("energy")
        if self.energy is not None:
            values["joules_per_item"] = float(f"{self.joules_per_item:.6g}")
            values["energy"] = self.energy.to_dict()
        return values


def time_calls(
    call: Callable[[], object],
    *,
    batch: int = 1,
    warmup: int = 5,
    duration_s: float = 2.0,
    min_runs: int = 20,
    max_runs: int = 100_000,
    meter: EnergyMeter | None = None,
) -> LatencyStats:
    """Call ``call`` for ``duration_s`` (at least ``min_runs`` times) and time each call.

    With a ``meter``, the energy of the timed calls (after the warm-up) is measured too.
    """
    for _ in range(warmup):
        call()
    span = meter.start() if meter is not None else None
    times: list[float] = []
    clock = time.perf_counter
    deadline = clock() + duration_s
    while (len(times) < min_runs or clock() < deadline) and len(times) < max_runs:
        start = clock()
        call()
        times.append(clock() - start)
    energy = span.stop() if span is not None else None
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
        energy=energy,
    )


def measure(
    engine: Engine,
    feeds: Mapping[str, np.ndarray] | None = None,
    *,
    batch: int = 1,
    warmup: int = 5,
    duration_s: float = 2.0,
    min_runs: int = 20,
    meter: EnergyMeter | None = None,
) -> LatencyStats:
    """Latency, throughput and energy of ``engine.run`` on ``feeds`` (random inputs if none).

    ``meter`` defaults to the best one for the engine's device
    (:func:`fogline.power.open_meter`); a remote model (``oip-*``) is not
    metered: its work runs on another machine.
    """
    inputs = dict(feeds) if feeds is not None else engine.signature.sample_feeds(batch)
    own = meter is None and not engine.backend.startswith("oip")
    if own:
        meter = open_meter(engine.device)
    try:
        return time_calls(
            lambda: engine.run(inputs),
            batch=batch,
            warmup=warmup,
            duration_s=duration_s,
            min_runs=min_runs,
            meter=meter,
        )
    finally:
        if own and meter is not None:
            meter.close()
