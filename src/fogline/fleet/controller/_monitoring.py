"""What the devices say about their models' health, as the controller keeps and hands it out.

Each telemetry report may carry, per release, a
:class:`~fogline.protocol.Monitoring`: drift per stage, live accuracy from
late labels per model version and window, an accuracy estimate, labels and
captures in the period. :func:`store_monitoring` writes it into the
registry's ``monitoring`` table (one row per reading, in the transaction
that stores the report) and records each drift alarm raised in the period
as an event of the device, naming the release, the stage and the score.
:func:`monitoring_rows` reads the rows back for the API, the dashboard and
the rollout's gates; :func:`monitoring_series` buckets them per release.

>>> from fogline.protocol import DriftReading, Monitoring
>>> rows = readings(Monitoring(drift=[DriftReading(stage="drift", detector="ks", score=0.9,
...                                                alarm=True, alarms=1)]))
>>> rows[0]["kind"], rows[0]["value"], rows[0]["count"], rows[0]["alarm"]
('drift', 0.9, 1, True)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from fogline.protocol import Monitoring, Telemetry

#: The registry's migration step that adds the table (appended to ``MIGRATIONS`` in ``_schema``).
MONITORING_SCHEMA = """
CREATE TABLE monitoring (
    device_id  TEXT NOT NULL,
    time       REAL NOT NULL,
    received   REAL NOT NULL,
    release    TEXT NOT NULL,
    version    TEXT,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL DEFAULT '',
    detector   TEXT NOT NULL DEFAULT '',
    window     TEXT NOT NULL DEFAULT '',
    metric     TEXT NOT NULL DEFAULT '',
    value      REAL,
    count      INTEGER,
    alarm      INTEGER
);
CREATE INDEX monitoring_device ON monitoring (device_id, time);
CREATE INDEX monitoring_release ON monitoring (release, time)
"""
# ``time`` is the device's stamp, ``received`` the controller's clock when the report came in
# (what a rollout's bake goes by). What the other columns hold, by kind (drift, live, estimate, labels, captures): ``key`` is the
# drift stage, the model version of a live figure or an estimate, or the outcome of labels and
# captures, or a model variant's name; ``detector`` a drift stage's detector; ``window`` and ``metric`` a live figure's
# (or an estimate's) window (items) and metric (accuracy or mae); ``value`` the score, figure, estimate or count;
# ``count`` the drift alarms raised in the period or the labelled items behind a live figure
# (a variant's items, the period's switches between variants);
# ``alarm`` 1 when a drift stage's alarm was up as the agent read it (a variant: it was running).

_COLUMNS = (
    "device_id", "time", "received", "release", "version", "kind", "key", "detector", "window", "metric",
    "value", "count", "alarm",
)  # fmt: skip
#: How readings are read: :meth:`Registry.query` (SQL and its arguments → rows).
Query = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]
#: Kinds of reading, as stored and as the API names them.
KINDS = ("drift", "live", "estimate", "labels", "captures", "variant", "switches")


def readings(monitoring: Monitoring) -> list[dict[str, Any]]:
    """One row per reading of ``monitoring`` (without device, time and release)."""
    rows: list[dict[str, Any]] = []

    def add(kind: str, **values: Any) -> None:
        row: dict[str, Any] = {"kind": kind, "key": "", "detector": "", "window": "", "metric": ""}
        row.update({"value": None, "count": None, "alarm": None}, **values)
        rows.append(row)

    for d in monitoring.drift:
        add("drift", key=d.stage, detector=d.detector, value=d.score, count=d.alarms, alarm=d.alarm)
    for live in monitoring.live:
        add(
            "live", key=live.model_version, window=live.window, metric=live.metric,
            value=live.value, count=live.labelled,
        )  # fmt: skip
    for estimate in monitoring.estimates:
        add("estimate", key=estimate.model_version, window=estimate.window, value=estimate.value)
    for outcome, count in monitoring.labels.items():
        add("labels", key=outcome, value=float(count), count=count)
    for outcome, count in monitoring.captures.items():
        add("captures", key=outcome, value=float(count), count=count)
    for name in sorted({*monitoring.variants, *filter(None, [monitoring.variant])}):
        count = monitoring.variants.get(name, 0)
        add("variant", key=name, value=float(count), count=count, alarm=name == monitoring.variant)
    if monitoring.variants or monitoring.variant:
        add("switches", value=float(monitoring.switches), count=monitoring.switches)
    return rows


def store_monitoring(
    conn: sqlite3.Connection, report: Telemetry, now: float
) -> list[tuple[str, str, str | None]]:
    """Store the monitoring of every release in ``report``; ``(kind, message, deployment)`` events.

    Called inside :meth:`Registry.ingest`'s transaction for a report not seen
    before (a redelivered report is not stored, nor its alarms counted, twice).
    """
    events: list[tuple[str, str, str | None]] = []
    rows: list[tuple[Any, ...]] = []
    for release, metrics in report.metrics.items():
        if metrics.monitoring is None or metrics.monitoring.is_empty:
            continue
        version = report.versions.get(release)
        for row in readings(metrics.monitoring):
            values = tuple(row[c] for c in _COLUMNS[5:])
            rows.append((report.device_id, report.time, now, release, version, *values))
        for d in metrics.monitoring.drift:
            if d.alarms <= 0:
                continue
            score = "no score" if d.score is None else f"score {d.score:.3g}"
            times = "" if d.alarms == 1 else f" ({d.alarms} alarms in the period)"
            where = f"{release} {version or ''}".rstrip()
            message = (
                f"drift alarm on {where}, stage {d.stage} ({d.detector or 'detector'}): {score}"
            )
            events.append(("drift", message + times, _deployment(conn, report, release, version)))
    if rows:
        conn.executemany(
            f"INSERT INTO monitoring ({', '.join(_COLUMNS)}) "
            f"VALUES ({','.join('?' * len(_COLUMNS))})",
            rows,
        )
    return events


def _deployment(
    conn: sqlite3.Connection, report: Telemetry, release: str, version: str | None
) -> str | None:
    """The newest deployment that sent this device this version of the release, if any."""
    row = conn.execute(
        "SELECT d.id FROM deployments d JOIN deployment_devices x ON x.deployment = d.id "
        "WHERE x.device_id = ? AND d.release = ? AND d.version = ? AND x.status != 'waiting' "
        "ORDER BY d.created DESC LIMIT 1",
        (report.device_id, release, version),
    ).fetchone()
    return None if row is None else str(row[0])


def monitoring_rows(
    query: Query,
    *,
    devices: Sequence[str] | None = None,
    release: str | None = None,
    version: str | None = None,
    kinds: Sequence[str] | None = None,
    since: float = 0.0,
    received_since: float | None = None,
    limit: int = 20000,
) -> list[dict[str, Any]]:
    """Stored readings, oldest first; ``query`` is :meth:`Registry.query`.

    ``since`` goes by the devices' stamps (charts); ``received_since`` by when
    the controller received them (a bake).
    """
    sql = f"SELECT {', '.join(_COLUMNS)} FROM monitoring WHERE time >= ?"
    args: list[object] = [since]
    if received_since is not None:
        sql += " AND received >= ?"
        args.append(received_since)
    if release is not None:
        sql += " AND release = ?"
        args.append(release)
    if version is not None:
        sql += " AND version = ?"
        args.append(version)
    if devices is not None:
        sql += f" AND device_id IN ({','.join('?' * len(devices))})"
        args.extend(devices)
    if kinds is not None:
        sql += f" AND kind IN ({','.join('?' * len(kinds))})"
        args.extend(kinds)
    rows = query(sql + " ORDER BY time DESC, rowid DESC LIMIT ?", [*args, limit])
    out = []
    for row in reversed(rows):
        found = dict(zip(_COLUMNS, row, strict=True))
        if found["alarm"] is not None:
            found["alarm"] = bool(found["alarm"])
        out.append(found)
    return out


def monitoring_series(rows: Sequence[dict[str, Any]], step: float) -> dict[str, Any]:
    """Per ``release version``, in buckets of ``step`` seconds: what the devices on it reported.

    Each series holds the worst drift score, the drift alarms raised, the
    live accuracy weighted by the labelled items behind each device's figure
    (its largest window), the mean estimate (kept apart: it is not
    measured), labels joined and hard examples stored.

    >>> rows = [
    ...     {"device_id": "a", "time": 100.0, "release": "p", "version": "1", "kind": "live",
    ...      "key": "m1", "window": "500", "metric": "accuracy", "value": 0.9, "count": 300},
    ...     {"device_id": "b", "time": 104.0, "release": "p", "version": "1", "kind": "live",
    ...      "key": "m1", "window": "500", "metric": "accuracy", "value": 0.6, "count": 100},
    ...     {"device_id": "b", "time": 104.0, "release": "p", "version": "1", "kind": "drift",
    ...      "key": "drift", "value": 0.7, "count": 1, "alarm": True},
    ... ]
    >>> s = monitoring_series(rows, 10.0)["p 1"]
    >>> s["time"], s["live_accuracy"], s["labelled"], s["drift_score"], s["alarms"]
    ([100.0], [0.825], [400], [0.7], [1])
    """
    by_release: dict[str, dict[float, list[dict[str, Any]]]] = {}
    for row in rows:
        name = f"{row['release']} {row['version'] or ''}".rstrip()
        bucket = step * (row["time"] // step)
        by_release.setdefault(name, {}).setdefault(bucket, []).append(row)
    out: dict[str, Any] = {}
    for name, buckets in sorted(by_release.items()):
        series: dict[str, list[Any]] = {
            key: []
            for key in (
                "time", "drift_score", "alarms", "live_accuracy", "labelled", "estimate",
                "labels", "captures", "devices",
            )
        }  # fmt: skip
        for start in sorted(buckets):
            group = buckets[start]
            scores = [r["value"] for r in group if r["kind"] == "drift" and r["value"] is not None]
            live = _largest_windows(group)
            labelled = sum(count for _, count in live.values())
            estimates = [r["value"] for r in group if r["kind"] == "estimate"]
            series["time"].append(start)
            series["drift_score"].append(max(scores) if scores else None)
            series["alarms"].append(
                sum(int(r["count"] or 0) for r in group if r["kind"] == "drift")
            )
            series["live_accuracy"].append(
                round(sum(v * c for v, c in live.values()) / labelled, 6) if labelled else None
            )
            series["labelled"].append(labelled)
            series["estimate"].append(
                round(sum(estimates) / len(estimates), 6) if estimates else None
            )
            series["labels"].append(_total(group, "labels", "joined"))
            series["captures"].append(_total(group, "captures", "stored"))
            series["devices"].append(len({r["device_id"] for r in group}))
        out[name] = series
    return out


def _total(rows: Sequence[dict[str, Any]], kind: str, key: str) -> int:
    return sum(int(r["count"] or 0) for r in rows if r["kind"] == kind and r["key"] == key)


def _largest_windows(rows: Sequence[dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Each device's newest accuracy figure with the most labelled items: ``(value, labelled)``."""
    best: dict[str, tuple[float, int, float]] = {}
    for row in rows:
        if row["kind"] != "live" or row.get("metric", "accuracy") != "accuracy":
            continue
        count = int(row["count"] or 0)
        seen = best.get(row["device_id"])
        if seen is None or (row["time"], count) >= (seen[2], seen[1]):
            best[row["device_id"]] = (float(row["value"]), count, float(row["time"]))
    return {device: (value, count) for device, (value, count, _) in best.items()}


def monitoring_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per device and release version: the latest figures and the period's counts, for a table.

    ``live`` is the device's latest measured accuracy (its figure with the
    most labelled items) and ``labelled`` what it rests on; ``estimate`` the
    latest estimate (largest window), kept apart; ``drift`` the latest score
    of its worst stage, ``alarms`` those raised in the period and
    ``alarm_up`` whether one was up at its latest report; ``labels`` and
    ``captures`` what the period received and stored.

    >>> rows = [
    ...     {"device_id": "a", "time": 1.0, "release": "p", "version": "1", "kind": "drift",
    ...      "key": "drift", "detector": "ks", "window": "", "metric": "", "value": 0.7,
    ...      "count": 1, "alarm": True},
    ...     {"device_id": "a", "time": 2.0, "release": "p", "version": "1", "kind": "live",
    ...      "key": "1", "detector": "", "window": "100", "metric": "accuracy", "value": 0.9,
    ...      "count": 80, "alarm": None},
    ... ]
    >>> s = monitoring_summary(rows)[0]
    >>> s["live"], s["labelled"], s["model_version"], s["drift"], s["alarms"], s["alarm_up"]
    (0.9, 80, '1', 0.7, 1, True)
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["device_id"], row["release"], row["version"] or ""), []).append(row)
    out = []
    for (device, release, version), mine in sorted(groups.items()):
        live = [r for r in mine if r["kind"] == "live" and r["metric"] in ("accuracy", "")]
        best = max(live, key=lambda r: (r["time"], int(r["count"] or 0)), default=None)
        estimates = [r for r in mine if r["kind"] == "estimate"]
        estimate = max(
            estimates, key=lambda r: (r["time"], int(r["window"]) if r["window"].isdigit() else 0),
            default=None,
        )  # fmt: skip
        drift = [r for r in mine if r["kind"] == "drift"]
        last = max((r["time"] for r in drift), default=None)
        latest = [r for r in drift if r["time"] == last]
        scores = [r["value"] for r in latest if r["value"] is not None]

        def total(kind: str, key: str, of: list[dict[str, Any]] = mine) -> int:
            return sum(int(r["count"] or 0) for r in of if r["kind"] == kind and r["key"] == key)

        out.append(
            {
                "device_id": device,
                "release": release,
                "version": version,
                "live": None if best is None else best["value"],
                "labelled": None if best is None else int(best["count"] or 0),
                "model_version": None if best is None else best["key"],
                "estimate": None if estimate is None else estimate["value"],
                "drift": max(scores) if scores else None,
                "alarms": sum(int(r["count"] or 0) for r in drift),
                "alarm_up": any(bool(r["alarm"]) for r in latest),
                "labels": total("labels", "joined"),
                "captures": total("captures", "stored"),
                "since": min(r["time"] for r in mine),
            }
        )
    return out
