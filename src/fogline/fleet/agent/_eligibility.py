"""When a device may train: eligibility (power, CPU) and a round that waits for it.

A learner release says when its device may take part (``eligibility`` in
``learner.yaml``): not on battery (``require_mains``, read by the rule of
:func:`fogline.power.read_power_supply`, as ``--defer`` reads it) and not while the CPU
is busier than ``max_cpu_percent`` over the last second. The device's own
deferral policy (:func:`deferred`, ``fogline agent --defer FILE``) adds its
conditions. All of them pass, so a round the device is not eligible for yet
waits (:class:`Waiting`) and is looked at again; it is declined only near
its deadline.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import psutil

from fogline.fleet.agent.kinds import Eligibility
from fogline.power import POWER_SUPPLY, Deferral, read_power_supply
from fogline.protocol import RoundTask

__all__ = ["CPU_WINDOW", "CpuMeter", "Waiting", "deferred", "ineligible"]

#: Over how many seconds the CPU load is measured for eligibility.
CPU_WINDOW = 1.0


@dataclass
class Waiting:
    """A round this device is not eligible for yet (a busy CPU, on battery)."""

    task: RoundTask
    body: bytes
    down: int
    first: float  # Unix time it was first found ineligible
    next_try: float = 0.0  # monotonic

    @property
    def key(self) -> tuple[str, int]:
        return self.task.run, self.task.round

    def give_up(self, now: float) -> bool:
        """Whether to decline now: in the last quarter of the time it had, or 2 s before the end."""
        left = self.task.deadline - now
        return left < max(2.0, 0.25 * (self.task.deadline - self.first))


class CpuMeter:
    """The system's CPU load over the last ``window`` seconds, from ``psutil.cpu_times``.

    >>> 0.0 <= CpuMeter(window=0.05).percent() <= 100.0
    True
    """

    def __init__(self, window: float = CPU_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=64)

    def sample(self) -> tuple[float, float, float]:
        times = psutil.cpu_times()._asdict()
        total = sum(times.values()) - times.get("guest", 0.0) - times.get("guest_nice", 0.0)
        idle = times.get("idle", 0.0) + times.get("iowait", 0.0)
        now = (time.monotonic(), total - idle, total)
        self._samples.append(now)
        return now

    def percent(self) -> float:
        """Busy share of the last ``window`` seconds (waits for one when no sample is recent)."""
        latest = self.sample()
        base = next((s for s in reversed(self._samples) if latest[0] - s[0] >= self.window), None)
        if base is None or latest[0] - base[0] > 2 * self.window:
            base = latest
            time.sleep(self.window)
            latest = self.sample()
        spent = latest[2] - base[2]
        return 0.0 if spent <= 0 else max(0.0, min(100.0, 100.0 * (latest[1] - base[1]) / spent))


def ineligible(rule: Eligibility, cpu: CpuMeter, power_supply: Path = POWER_SUPPLY) -> str | None:
    """Why the device may not train now under ``rule``, or None when it may.

    ``power_supply``: where Linux lists the power supplies (a stand-in folder in tests).
    """
    if rule.require_mains:  # the one rule of fogline.power, as `--defer` with `mains: true`
        power = read_power_supply(power_supply)
        if not power.on_mains:
            return power.describe()
    if rule.max_cpu_percent < 100:
        busy = cpu.percent()
        if busy > rule.max_cpu_percent:
            return f"cpu {round(busy, 1):g}% > {rule.max_cpu_percent:g}%"
    return None


def deferred(deferral: Deferral, deadline: float) -> tuple[str | None, bool]:
    """Why the device's deferral policy holds work back now (None: it does not), and whether
    waiting is no use: under ``combine: all``, no window opens before ``deadline``."""
    now = time.time()
    verdict = deferral.check(now)
    if verdict.allowed:
        return None, False
    reason = "deferred: " + verdict.reason.removeprefix("waiting: ")
    opens = deferral.window_opens(now) if deferral.policy.combine == "all" else None
    if opens is not None and opens > deadline:
        when = time.strftime("%H:%M", time.localtime(opens))
        return f"{reason}; no window opens before the deadline (next at {when} local time)", True
    return reason, False
