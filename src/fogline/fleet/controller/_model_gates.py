"""A wave's gates on its model's health: accuracy (live, canary set or estimate) and drift alarms.

``--min-accuracy`` judges each device of the wave on the best figure it has,
and says which one it used:

* **live** accuracy on the device's own traffic, from late labels, once at
  least ``min_labelled`` labelled items stand behind it (the figure with the
  most labels among the model versions the device runs under the new
  release; a model version it also ran under its previous release is left
  out unless it is the only one, since late labels may still be joining
  results of the old model);
* the release's **canary set**, measured by the device's health check;
* the **estimate** from calibrated confidence, only if the deployment says
  ``accept_estimate``: it is not a measurement, so without that it never
  passes (nor fails) a gate, and the wave waits for a measured figure.

Every measured figure a device has must meet the minimum. The drift gate
(``no_drift_alarm``) fails a wave as soon as any of its devices reports a
drift alarm on the new version after the wave started, bake or not.

>>> Figure("cam-1", "live", 0.931, 400).text()
'live accuracy 93.1% over 400 labelled items on cam-1'
>>> Figure("cam-2", "estimate", 0.82).text()
'estimated accuracy 82.0% on cam-2 (an estimate, not measured)'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fogline.fleet.controller._criteria import Criteria
from fogline.fleet.controller._monitoring import Query, monitoring_rows

Source = Literal["live", "canary-set", "estimate"]


@dataclass(frozen=True)
class Figure:
    """One accuracy figure of one device, and where it came from."""

    device: str
    source: Source
    value: float
    labelled: int | None = None

    def text(self) -> str:
        if self.source == "live":
            return f"live accuracy {self.value:.1%} over {self.labelled} labelled items on {self.device}"
        if self.source == "canary-set":
            return f"canary-set accuracy {self.value:.1%} on {self.device}"
        return f"estimated accuracy {self.value:.1%} on {self.device} (an estimate, not measured)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "source": self.source,
            "value": self.value,
            "labelled": self.labelled,
            "text": self.text(),
        }


@dataclass(frozen=True)
class AccuracyGate:
    """The figures each device is judged on, who is still waited for, and the verdict."""

    minimum: float
    used: tuple[Figure, ...] = ()
    waiting: tuple[str, ...] = ()  # why, per device still without a figure that counts
    failure: str | None = None

    def passed_text(self) -> str:
        return "; ".join(f"{f.text()} ≥ {self.minimum:.1%}" for f in self.used)

    def to_dict(self) -> dict[str, Any]:
        return {
            "minimum": self.minimum,
            "used": [f.to_dict() for f in self.used],
            "waiting": list(self.waiting),
            "failure": self.failure,
        }


@dataclass(frozen=True)
class Wave:
    """What the gates need of a deployment's current wave."""

    release: str
    version: str
    devices: Sequence[str]
    previous: dict[str, str | None] = field(default_factory=dict)  # device → version it ran
    started: float = 0.0  # when the wave was assigned (controller's clock)


def accuracy_gate(
    criteria: Criteria, wave: Wave, metric_rows: Sequence[dict[str, Any]], query: Query
) -> AccuracyGate | None:
    """Judge ``wave`` on ``criteria.min_accuracy``; None when the deployment sets none.

    ``metric_rows`` are the wave's telemetry rows on the new version (they hold
    the canary-set accuracy); live figures and estimates are read with ``query``.
    """
    minimum = criteria.min_accuracy
    if minimum is None:
        return None
    monitored = monitoring_rows(
        query,
        devices=list(wave.devices),
        release=wave.release,
        version=wave.version,
        kinds=("live", "estimate"),
        received_since=wave.started,
    )
    used: list[Figure] = []
    waiting: list[str] = []
    failures: list[str] = []
    for device in wave.devices:
        mine = [r for r in monitored if r["device_id"] == device]
        live = _live(mine, _old_models(query, wave, device))
        canary = [r["accuracy"] for r in metric_rows if r["device_id"] == device]
        canary = [a for a in canary if a is not None]
        estimates = _latest([r for r in mine if r["kind"] == "estimate"])
        measured: list[Figure] = []
        if live is not None and live[1] >= criteria.min_labelled:
            measured.append(Figure(device, "live", live[0], live[1]))
        if canary:
            measured.append(Figure(device, "canary-set", float(canary[-1])))
        figures = measured
        if not figures and estimates and criteria.accept_estimate:
            figures = [Figure(device, "estimate", float(estimates[-1]["value"]))]
        if not figures:
            have = []
            if live is not None:
                have.append(f"live accuracy {live[0]:.1%} over {live[1]} labelled items")
            if estimates:
                have.append(f"an estimate of {estimates[-1]['value']:.1%}, not measured")
            waiting.append(
                f"{device} (needs {criteria.min_labelled} labelled items or canary-set accuracy"
                + (f"; so far {', '.join(have)}" if have else "; nothing reported yet")
                + ")"
            )
            continue
        used += figures
        failures += [f"{f.text()} < {minimum:.1%}" for f in figures if f.value < minimum]
    return AccuracyGate(
        minimum, tuple(used), tuple(waiting), "; ".join(failures) if failures else None
    )


def _old_models(query: Query, wave: Wave, device: str) -> set[str]:
    """Model versions the device reported live accuracy for under its previous release."""
    previous = wave.previous.get(device)
    if previous is None or previous == wave.version:
        return set()
    # The hour before the wave is enough (the device ran it until then), and keeps the scan short.
    rows = query(
        "SELECT DISTINCT key FROM monitoring WHERE device_id = ? AND time >= ? AND release = ? "
        "AND version = ? AND kind = 'live'",
        (device, wave.started - 3600.0, wave.release, previous),
    )
    return {str(row[0]) for row in rows}


def _live(rows: Sequence[dict[str, Any]], old_models: set[str]) -> tuple[float, int] | None:
    """``(accuracy, labelled)`` from the device's latest report: its most-labelled figure."""
    live = [r for r in rows if r["kind"] == "live" and r["metric"] in ("accuracy", "")]
    if not live:
        return None
    latest = max(r["received"] for r in live)
    rows = [r for r in live if r["received"] == latest]
    own = [r for r in rows if r["key"] not in old_models] or rows
    best = max(own, key=lambda r: (int(r["count"] or 0), _size(r["window"])))
    return float(best["value"]), int(best["count"] or 0)


def _latest(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of the latest report, ordered so the largest window comes last."""
    if not rows:
        return []
    latest = max(r["received"] for r in rows)
    return sorted((r for r in rows if r["received"] == latest), key=lambda r: _size(r["window"]))


def _size(window: str) -> int:
    return int(window) if window.isdigit() else 0


def drift_alarm(wave: Wave, query: Query) -> str | None:
    """Why the wave fails ``no_drift_alarm`` (the first alarm on the new version), or None."""
    rows = monitoring_rows(
        query,
        devices=list(wave.devices),
        release=wave.release,
        version=wave.version,
        kinds=("drift",),
        received_since=wave.started,
    )
    for row in rows:
        if int(row["count"] or 0) > 0 or row["alarm"]:
            score = "" if row["value"] is None else f", score {row['value']:.3g}"
            detector = f" ({row['detector']})" if row["detector"] else ""
            return (
                f"drift alarm on {row['device_id']} on {wave.version}: "
                f"stage {row['key']}{detector}{score}"
            )
    return None
