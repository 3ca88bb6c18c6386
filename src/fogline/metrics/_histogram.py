"""One latency histogram, shaped the way Prometheus exposes it.

The pipeline times its stages and the server its requests with it, and the
fleet's telemetry reads its buckets back from their scrapes, so the bounds
are one tuple, :data:`BUCKETS`, for all of them.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence

#: Upper bounds (seconds) of the latency buckets, from 0.5 ms to 10 s; ``+Inf`` is implied.
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Counts of observations per bucket and their sum: one Prometheus histogram series.

    Not locked: one writer per histogram (a thread's own, or the event loop),
    and :meth:`merged` to add several up at scrape time.

    >>> h = Histogram((0.1, 1.0))
    >>> for seconds in (0.05, 0.1, 0.5, 3.0):
    ...     h.observe(seconds)
    >>> h.count, h.total, h.cumulative()
    (4, 3.65, [('0.1', 2), ('1.0', 3), ('+Inf', 4)])
    >>> print("\\n".join(h.lines("job_seconds", {"stage": "all"})))
    job_seconds_bucket{stage="all",le="0.1"} 2
    job_seconds_bucket{stage="all",le="1.0"} 3
    job_seconds_bucket{stage="all",le="+Inf"} 4
    job_seconds_sum{stage="all"} 3.65
    job_seconds_count{stage="all"} 4
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = BUCKETS) -> None:
        bounds = tuple(float(b) for b in bounds)
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError(f"histogram bounds must be finite and at least one, got {bounds}")
        if any(low >= high for low, high in itertools.pairwise(bounds)):
            raise ValueError(f"histogram bounds must increase, got {bounds}")
        self.bounds = bounds
        #: Observations per bucket (not cumulative); the last is above every bound.
        self.counts = [0] * (len(bounds) + 1)
        #: The sum of the observed values.
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    @classmethod
    def merged(
        cls, histograms: Iterable[Histogram], bounds: Sequence[float] = BUCKETS
    ) -> Histogram:
        """One histogram with the counts and sums of ``histograms`` (all with ``bounds``).

        >>> a, b = Histogram(), Histogram()
        >>> a.observe(0.002); b.observe(0.003); b.observe(20.0)
        >>> both = Histogram.merged([a, b])
        >>> both.count, both.cumulative()[3], both.cumulative()[-1]
        (3, ('0.005', 2), ('+Inf', 3))
        """
        total = cls(bounds)
        for histogram in histograms:
            if histogram.bounds != total.bounds:
                raise ValueError("cannot merge histograms with different bounds")
            total.counts = [a + b for a, b in zip(total.counts, histogram.counts, strict=True)]
            total.total += histogram.total
        return total

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` per bucket as Prometheus exposes them: cumulative, ``+Inf`` last.

        This is what ``prometheus_client``'s ``HistogramMetricFamily.add_metric`` takes.
        """
        rows, running = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            rows.append((_le(bound), running))
        return rows

    def lines(self, name: str, labels: Mapping[str, str] | None = None) -> list[str]:
        """The series in Prometheus' text exposition format: buckets, ``_sum``, ``_count``."""
        pairs = [f'{key}="{_escape(value)}"' for key, value in (labels or {}).items()]
        plain = "{" + ",".join(pairs) + "}" if pairs else ""
        found = []
        for le, count in self.cumulative():
            bucket = ",".join([*pairs, f'le="{le}"'])
            found.append(f"{name}_bucket{{{bucket}}} {count}")
        return [*found, f"{name}_sum{plain} {self.total!r}", f"{name}_count{plain} {self.count}"]

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} sum={self.total!r}>"


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(bound)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
