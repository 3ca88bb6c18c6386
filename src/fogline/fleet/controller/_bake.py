"""Whether a wave has baked: telemetry on the new version from every device, with no silence.

A wave's bake starts when its last device converges and lasts
``bake_seconds``. It passes only on evidence the controller received: each
device's telemetry on the new version, arriving with no silence longer than
:func:`silence_allowed` for that device's reporting period, up to a report
received at or after the bake's end. A model release with no workload
still reports (its metrics are an empty heartbeat), so every kind of
release can bake.

Times are the controller's clock when it *received* a report, not the
device's stamp: a device that was cut off keeps its telemetry in its outbox
and sends it late, in one burst, and those reports prove what it ran but
not that the controller could have stopped it. So a silence restarts the
bake from the report that ended it; a wave whose devices stay silent does
not pass, and the rollout rolls it back at its deadline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: The reporting period assumed for a report that does not say its own.
DEFAULT_PERIOD = 10.0


def silence_allowed(period: float) -> float:
    """How long a device reporting every ``period`` seconds may be quiet before it counts as silent.

    Two periods and a second: one late report is not a silence, two are.

    >>> silence_allowed(1.0), silence_allowed(10.0)
    (3.0, 21.0)
    """
    return 2.0 * period + 1.0


@dataclass(frozen=True)
class Report:
    """One telemetry report on the new version: when the controller received it, and its period."""

    received: float
    period: float = DEFAULT_PERIOD


@dataclass(frozen=True)
class BakeProgress:
    """Where a wave's bake stands at ``now``.

    ``start`` is when the bake (re)started: the wave's convergence, or the
    report that ended the latest silence of any device. ``waiting`` lists the
    devices with no report received since ``end``; ``last_heard`` maps each
    device to its latest report on the new version (None if it sent none).

    >>> p = bake_progress(["a", "b"], {"a": [Report(101.0, 1.0), Report(104.0, 1.0)]},
    ...                   converged_at=100.0, bake_seconds=3.0, now=104.5)
    >>> p.start, p.end, p.waiting, p.passed
    (100.0, 103.0, ('b',), False)
    """

    start: float
    end: float
    waiting: tuple[str, ...]
    last_heard: Mapping[str, float | None] = field(default_factory=dict)
    silent: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.waiting

    def to_dict(self) -> dict[str, object]:
        return {
            "start": self.start,
            "end": self.end,
            "waiting": list(self.waiting),
            "silent": list(self.silent),
            "last_heard": dict(self.last_heard),
        }


def bake_progress(
    devices: Sequence[str],
    reports: Mapping[str, Sequence[Report]],
    *,
    converged_at: float,
    bake_seconds: float,
    now: float,
    periods: Mapping[str, float] | None = None,
) -> BakeProgress:
    """How far the bake of ``devices`` has come, from the reports received on the new version.

    A device that goes quiet for longer than it may moves the bake's start to
    the report that ends its silence, so every device must then report
    through a whole bake again. ``periods`` gives a device's reporting period
    when it has sent nothing on the new version yet (from its other reports).

    >>> steady = [Report(t, 1.0) for t in (101.0, 102.0, 103.0)]
    >>> bake_progress(["a"], {"a": steady}, converged_at=100.0, bake_seconds=3.0, now=103.0).passed
    True
    >>> gap = [Report(101.0, 1.0), Report(110.0, 1.0), Report(111.0, 1.0)]
    >>> p = bake_progress(["a"], {"a": gap}, converged_at=100.0, bake_seconds=3.0, now=111.0)
    >>> p.start, p.passed
    (110.0, False)
    """
    start = converged_at
    last_heard: dict[str, float | None] = {}
    silent: list[str] = []
    for device in devices:
        mine = sorted(reports.get(device, ()), key=lambda r: r.received)
        previous = converged_at
        resumed = converged_at
        heard: float | None = None
        period = (periods or {}).get(device, DEFAULT_PERIOD)
        for report in mine:
            heard = report.received
            period = report.period
            if report.received <= converged_at:
                continue
            if report.received - previous > silence_allowed(report.period):
                resumed = report.received
            previous = report.received
        start = max(start, resumed)
        last_heard[device] = heard
        if now - max(previous, converged_at) > silence_allowed(period):
            silent.append(device)
    end = start + bake_seconds
    waiting = tuple(device for device in devices if (last_heard[device] or -1.0) < end)
    return BakeProgress(start, end, waiting, last_heard, tuple(silent))
