"""Whether work that can wait may run now: a :class:`DeferPolicy` checked against the device.

:meth:`Deferral.check` reads the power supply (:func:`read_power_supply`),
the clock and the carbon-intensity value, and answers a :class:`Verdict`
whose ``reason`` is a sentence a person reads in a log line or a telemetry
event: ``waiting: on battery (38 % < 40 %)``, ``waiting: carbon intensity
312 g/kWh > 200 (from grid.json, 4 min old)``, ``allowed: on mains power``.

A carbon value that is missing, unreadable, of no known age (a retained
MQTT message without ``at``) or older than ``stale_after_s`` is unknown: the work waits (the safe side: nothing is lost by waiting, and
the user asked for it to run on clean power) unless ``if_unknown: run``.

Concurrency: a :class:`Deferral` holds no lock of its own; its
:class:`CarbonFeed` may be fed from another thread while it checks.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from fogline.errors import DataError
from fogline.power._carbon import CarbonFeed, CarbonReading, read_carbon_file
from fogline.power._deferral_policy import CarbonRule, DeferPolicy, window_minutes
from fogline.power._power_supply import PowerState, read_power_supply

__all__ = ["Deferral", "Verdict", "describe_age"]

_NUMBER = re.compile(r"\d+(?:[.:]\d+)*")


@dataclass(frozen=True)
class Verdict:
    """Whether the work may run now, and why, in words (``"waiting: ..."`` or ``"allowed: ..."``).

    >>> Verdict(False, "waiting: on battery (38 % < 40 %)").allowed
    False
    >>> Verdict(False, "waiting: on battery (37 % < 40 %)").gist
    'waiting: on battery (# % < # %)'
    """

    allowed: bool
    reason: str

    @property
    def gist(self) -> str:
        """The reason without its numbers: what a log says again only when it changes."""
        return _NUMBER.sub("#", self.reason)


def describe_age(seconds: float) -> str:
    """An age as a person says it.

    >>> describe_age(12), describe_age(240), describe_age(5400), describe_age(3 * 86400)
    ('12 s', '4 min', '1.5 h', '3 days')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 3570:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h".replace(".0 h", " h")
    return f"{seconds / 86400:.0f} days"


def _percent(value: float) -> str:
    return f"{value:.0f} %"


class Deferral:
    """A policy, applied: :meth:`check` says whether deferred work may run now.

    A ``carbon.topic`` policy is fed through :attr:`feed` (the pipeline's or
    the agent's subscription offers each payload to it).

    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> (folder / "grid.txt").write_text("312")
    3
    >>> policy = DeferPolicy(carbon={"file": folder / "grid.txt", "max_g_per_kwh": 200},
    ...                      power_supply=folder / "none")
    >>> verdict = Deferral(policy).check()
    >>> verdict.allowed, verdict.reason.startswith("waiting: carbon intensity 312 g/kWh > 200")
    (False, True)
    """

    def __init__(self, policy: DeferPolicy, *, feed: CarbonFeed | None = None) -> None:
        self.policy = policy
        carbon = policy.carbon
        if feed is None and carbon is not None and carbon.topic is not None:
            feed = CarbonFeed(f"mqtt topic {carbon.topic}")
        #: Where a subscription hands the topic's payloads (None unless ``carbon.topic``).
        self.feed = feed

    def check(self, now: float | None = None) -> Verdict:
        """The verdict at Unix time ``now`` (default: the clock)."""
        now = time.time() if now is None else now
        policy = self.policy
        names = policy.conditions()
        if not names:
            return Verdict(True, "allowed: no condition set")
        power = (
            read_power_supply(policy.power_supply) if {"mains", "battery"} & set(names) else None
        )
        checked: list[tuple[bool, str]] = []
        for name in names:
            if name == "mains":
                assert power is not None
                checked.append(self._mains(power))
            elif name == "battery":
                assert power is not None
                checked.append(self._battery(power))
            elif name == "window":
                checked.append(self._window(now))
            else:
                assert policy.carbon is not None
                checked.append(self._carbon(policy.carbon, now))
        held = [text for ok, text in checked if ok]
        failed = [text for ok, text in checked if not ok]
        if policy.combine == "all":
            if failed:
                return Verdict(False, "waiting: " + "; ".join(failed))
            return Verdict(True, "allowed: " + "; ".join(held))
        if held:
            return Verdict(True, "allowed: " + "; ".join(held))
        return Verdict(False, "waiting: none of the conditions holds: " + "; ".join(failed))

    def wait(
        self,
        *,
        stop: threading.Event | None = None,
        timeout: float | None = None,
        say: Callable[[Verdict], None] = lambda verdict: None,
    ) -> Verdict:
        """Wait until the policy allows (looking every ``check_every_s``); the last verdict.

        Returns early, with a verdict that does not allow, when ``stop`` is set or
        ``timeout`` seconds have passed. ``say`` hears the first verdict and each
        one whose reason changed (beyond its numbers).
        """
        stop = stop or threading.Event()
        end = None if timeout is None else time.monotonic() + timeout
        told: str | None = None
        while True:
            verdict = self.check()
            if verdict.gist != told:
                told = verdict.gist
                say(verdict)
            if verdict.allowed:
                return verdict
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                return verdict
            wait = (
                self.policy.check_every_s if left is None else min(left, self.policy.check_every_s)
            )
            if stop.wait(wait):
                return verdict

    def window_opens(self, now: float | None = None) -> float | None:
        """When a window is next open (``now`` if one is); None when the policy has no windows.

        A round or a job with a deadline before that time cannot run in a window: the
        caller may say no at once instead of waiting (under ``combine: all``).

        >>> import datetime as dt
        >>> d = Deferral(DeferPolicy(windows=["22:00-06:00"], tz="UTC"))
        >>> noon = dt.datetime(2026, 12, 5, 12, tzinfo=dt.timezone.utc).timestamp()
        >>> (d.window_opens(noon) - noon) / 3600
        10.0
        """
        now = time.time() if now is None else now
        windows = self.policy.windows
        if not windows:
            return None
        if self._window(now)[0]:
            return now
        zone = ZoneInfo(self.policy.tz) if self.policy.tz else None
        today = datetime.fromtimestamp(now, zone).date()
        starts = []
        for text in windows:
            start = window_minutes(text)[0]
            for days in (0, 1, 2):  # 2: a day that DST shortens cannot skip the next start
                when = datetime.combine(
                    today + timedelta(days=days), dtime(start // 60, start % 60), tzinfo=zone
                ).timestamp()
                if when > now:
                    starts.append(when)
                    break
        return min(starts)

    # --- the conditions -------------------------------------------------------------------

    @staticmethod
    def _mains(power: PowerState) -> tuple[bool, str]:
        if power.on_mains:
            return True, power.describe()
        return False, f"{power.describe()}, and mains power is required"

    def _battery(self, power: PowerState) -> tuple[bool, str]:
        need = self.policy.min_battery_percent
        assert need is not None
        if power.on_mains:
            return True, power.describe()
        level = power.battery_percent
        if level is None:
            return False, f"on battery (level unknown, {_percent(need)} needed)"
        if level < need:
            return False, f"on battery ({_percent(level)} < {_percent(need)})"
        return True, f"on battery ({_percent(level)} >= {_percent(need)})"

    def _window(self, now: float) -> tuple[bool, str]:
        tz = self.policy.tz
        local = datetime.fromtimestamp(now, ZoneInfo(tz)) if tz else datetime.fromtimestamp(now)
        minute = local.hour * 60 + local.minute
        clock = f"now {local:%H:%M} {tz or 'local time'}"
        for text in self.policy.windows:
            start, end = window_minutes(text)
            inside = start <= minute < end if start < end else minute >= start or minute < end
            if inside:
                return True, f"inside the window {text} ({clock})"
        which = "the window" if len(self.policy.windows) == 1 else "the windows"
        return False, f"outside {which} {', '.join(self.policy.windows)} ({clock})"

    def _carbon(self, rule: CarbonRule, now: float) -> tuple[bool, str]:
        reading: CarbonReading | None = None
        unknown = ""
        if rule.file is not None:
            try:
                reading = read_carbon_file(rule.file)
            except DataError as exc:
                unknown = f"no carbon intensity: {exc}"
        else:
            feed = self.feed
            reading = None if feed is None else feed.latest()
            if reading is None:
                unknown = f"no carbon intensity yet from mqtt topic {rule.topic}"
                if feed is not None and feed.error:
                    unknown += f" ({feed.error})"
        if reading is not None:
            age = reading.age(now)
            where = (
                f"from {reading.origin}, {describe_age(age)} old"
                if age is not None
                else f"from {reading.origin}"
            )
            if age is None:
                unknown = (
                    f"the carbon intensity {reading.g_per_kwh:g} g/kWh has no known age ({where}: "
                    "a retained message without `at`, which the broker replays on every "
                    "subscribe; publish it with `at` or a message expiry)"
                )
            elif age > rule.stale_after_s:
                unknown = (
                    f"the carbon intensity {reading.g_per_kwh:g} g/kWh is stale ({where}; "
                    f"stale after {describe_age(rule.stale_after_s)})"
                )
            elif reading.g_per_kwh > rule.max_g_per_kwh:
                return False, (
                    f"carbon intensity {reading.g_per_kwh:g} g/kWh > {rule.max_g_per_kwh:g} ({where})"
                )
            else:
                return True, (
                    f"carbon intensity {reading.g_per_kwh:g} g/kWh <= {rule.max_g_per_kwh:g} ({where})"
                )
        if rule.if_unknown == "run":
            return True, f"{unknown}; runs anyway (if_unknown: run)"
        return False, unknown
