"""A carbon-intensity value the user provides: grams of CO2 per kWh, from a file or an MQTT topic.

fogline fetches no grid data itself; the user (a cron job calling their
grid operator's or Electricity Maps' API, a home-energy system) writes the
value where the device can read it. Both ways take the same text:

* a bare number, ``180``;
* a small JSON object, ``{"g_per_kwh": 180, "at": "2026-12-05T06:00:00Z"}``
  (``at`` is ISO 8601 or Unix seconds; Electricity Maps' own names,
  ``carbonIntensity`` and ``datetime``, are read too).

The value's age counts from ``at`` when given, else from the file's
modification time or the message's arrival. A *retained* MQTT message
without ``at`` has no known age: the broker hands it out again on every
subscribe and reconnect, so its arrival says nothing (a week-old value
would look new after each restart); publish it with ``at``, or with an MQTT 5
message expiry, which makes the broker drop it once it is too old. An MQTT topic is subscribed
where the transport may be imported (the pipeline, the agent); this
package only keeps the latest reading (:class:`CarbonFeed`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fogline.errors import DataError

__all__ = ["CarbonFeed", "CarbonReading", "parse_carbon", "read_carbon_file"]

_VALUE_KEYS = ("g_per_kwh", "carbonIntensity")
_TIME_KEYS = ("at", "datetime")


@dataclass(frozen=True)
class CarbonReading:
    """A carbon intensity (g CO2/kWh), the Unix time it is for (None: unknown), and its origin.

    >>> r = parse_carbon(b'{"g_per_kwh": 180, "at": 1700000000}', received_at=0.0, origin="f")
    >>> r.g_per_kwh, r.at, r.age(1700000240.0)
    (180.0, 1700000000.0, 240.0)
    >>> parse_carbon(b"180", received_at=None, origin="f").age(1700000240.0) is None
    True
    """

    g_per_kwh: float
    #: None when nothing tells the value's time (a retained message without ``at``).
    at: float | None
    #: Where it came from, as a person reads it: ``grid.json``, ``mqtt topic grid/carbon``.
    origin: str

    def age(self, now: float) -> float | None:
        """Seconds since the value was for (0 if stamped in the future: clock skew); None: unknown."""
        return None if self.at is None else max(0.0, now - self.at)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DataError(f"{what}: not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise DataError(f"{what}: not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise DataError(f"{what}: must be a finite number, at least 0, got {value!r}")
    return number


def _time(value: Any, origin: str) -> float:
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise DataError(f"{origin}: `at` is not an ISO 8601 time: {value!r}") from None
        if stamp.tzinfo is None:  # a naive time is local time, as datetime takes it
            stamp = stamp.astimezone()
        return stamp.timestamp()
    return _number(value, f"{origin}: `at`")


def parse_carbon(data: bytes, *, received_at: float | None, origin: str) -> CarbonReading:
    """Read a carbon-intensity value (a number, or JSON) that arrived at ``received_at``.

    ``received_at`` None: the arrival says nothing of the value's time, so
    without ``at`` in it its age is unknown.

    Raises :class:`~fogline.errors.DataError` with ``origin`` for anything else.
    """
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise DataError(f"{origin}: not text") from None
    if not text:
        raise DataError(f"{origin}: empty")
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        raise DataError(
            f'{origin}: neither a number nor JSON such as {{"g_per_kwh": 180}}: {text[:60]!r}'
        ) from None
    at = received_at
    if isinstance(body, dict):
        key = next((k for k in _VALUE_KEYS if k in body), None)
        if key is None:
            raise DataError(f"{origin}: the JSON has no `g_per_kwh`: {text[:60]!r}")
        value = _number(body[key], f"{origin}: `{key}`")
        stamp = next((body[k] for k in _TIME_KEYS if body.get(k) is not None), None)
        if stamp is not None:
            at = _time(stamp, origin)
    else:
        value = _number(body, origin)
    return CarbonReading(value, at, origin)


def read_carbon_file(path: Path) -> CarbonReading:
    """The value in ``path``; its age counts from the file's modification time unless it has ``at``."""
    try:
        data = path.read_bytes()
        modified = path.stat().st_mtime
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it: {exc.strerror or exc}") from exc
    return parse_carbon(data[:4096], received_at=modified, origin=str(path))


class CarbonFeed:
    """The latest carbon-intensity value from a topic; the subscriber :meth:`offer` s each payload.

    Thread-safe: the subscriber's thread offers, whoever checks the policy reads.
    A payload that cannot be read is kept as :attr:`error` (the previous
    value stays, and ages).

    >>> feed = CarbonFeed("mqtt topic grid/carbon")
    >>> feed.latest() is None
    True
    >>> feed.offer(b"212", received_at=1700000000.0)
    >>> feed.latest().g_per_kwh
    212.0
    >>> feed.offer(b"lots", received_at=1700000060.0)
    >>> feed.latest().g_per_kwh, feed.error.startswith("mqtt topic grid/carbon: neither a number")
    (212.0, True)
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.error: str | None = None
        self._lock = threading.Lock()
        self._latest: CarbonReading | None = None

    def offer(
        self,
        payload: bytes,
        *,
        received_at: float | None = None,
        retained: bool = False,
    ) -> None:
        """Take one payload; an empty one (a cleared retained message) forgets the value.

        ``retained``: a retained message replayed by the broker, whose arrival
        says nothing of its age (unknown unless it carries ``at``).
        """
        at = None if retained else time.time() if received_at is None else received_at
        with self._lock:
            if not payload:
                self._latest, self.error = None, None
                return
            try:
                self._latest = parse_carbon(payload, received_at=at, origin=self.origin)
                self.error = None
            except DataError as exc:
                self.error = str(exc)

    def refused(self, error: str) -> None:
        """Why no value can come (the broker refused the subscription: an ACL); kept as :attr:`error`."""
        with self._lock:
            self.error = error

    def latest(self) -> CarbonReading | None:
        with self._lock:
            return self._latest
