"""Pacing a replay on its recorded clock: sleep until each item is due, wake on ``stop``."""

from __future__ import annotations

import threading
import time


class Pacer:
    """Waits until a recorded time is due on the wall clock, ``speed`` times as fast.

    The first recorded time anchors the replay to "now"; a time earlier than
    the anchor (the recording starts over, or its clock jumped back) anchors
    it again instead of sleeping a negative time. ``speed`` 0 never waits.
    Waiting uses ``stop.wait`` so that a replay ends as soon as it is asked to.

    >>> stop = threading.Event()
    >>> pacer = Pacer(stop, speed=0)
    >>> pacer.wait(0.0), pacer.wait(1e6)
    (True, True)
    """

    def __init__(self, stop: threading.Event, speed: float = 1.0) -> None:
        self._stop = stop
        self._speed = speed
        self._anchor: tuple[float, float] | None = None  # (recorded time, monotonic time)

    def wait(self, recorded: float) -> bool:
        """Sleep until ``recorded`` is due; False when ``stop`` was set (end the replay)."""
        if self._speed <= 0:
            return not self._stop.is_set()
        now = time.monotonic()
        if self._anchor is None or recorded < self._anchor[0]:
            self._anchor = (recorded, now)
            return not self._stop.is_set()
        delay = self._anchor[1] + (recorded - self._anchor[0]) / self._speed - now
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()
