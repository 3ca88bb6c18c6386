"""Energy per inference of each release and version, added up from the devices' telemetry in SQL.

A device's report carries, per release, the joules its process used in the
period and how they were obtained (``measured (RAPL package-0, this process's
CPU-time share)`` or ``estimated (CPU time x 10 W per core)``); the fleet's
figure for a release version is the sum of joules over the sum of items of the
reports that carried energy, so a busy device weighs more than an idle one.
The sums are SQLite's (``GROUP BY release, version`` over the window): every
report in the window counts, however many, and none is loaded into Python.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: ``(sql, args) -> rows``: the registry's read-only query.
Query = Callable[[str, Sequence[object]], list[tuple[Any, ...]]]


def energy_by_release(
    query: Query, *, since: float = 0.0, release: str | None = None
) -> list[dict[str, Any]]:
    """One entry per (release, version) whose reports since ``since`` carried energy, sorted.

    ``kind`` is ``measured`` or ``estimated`` when every report agrees, else
    ``mixed``; ``labels`` lists how the figures were obtained.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:")
    >>> _ = db.execute("CREATE TABLE metrics (time REAL, device_id TEXT, release TEXT,"
    ...     " version TEXT, items INTEGER, joules REAL, energy TEXT, energy_measured INTEGER)")
    >>> est = "estimated (CPU time x 10 W per core)"
    >>> _ = db.executemany("INSERT INTO metrics VALUES (?, ?, 'digits', '1.0', ?, ?, ?, 0)",
    ...     [(1.0, "a", 100, 2.0, est), (2.0, "b", 300, 4.0, est), (3.0, "b", 5, None, None)])
    >>> found = energy_by_release(lambda sql, args: list(db.execute(sql, args)))
    >>> [(e["joules_per_item"], e["kind"], e["devices"], e["reports"]) for e in found]
    [(0.015, 'estimated', 2, 2)]
    """
    where = "time >= ? AND joules IS NOT NULL"
    args: list[object] = [since]
    if release is not None:
        where += " AND release = ?"
        args.append(release)
    sums = query(
        "SELECT release, version, SUM(joules), SUM(items), COUNT(DISTINCT device_id),"
        " COUNT(*), MIN(COALESCE(energy_measured, 0)), MAX(COALESCE(energy_measured, 0))"
        f" FROM metrics WHERE {where} GROUP BY release, version ORDER BY release, version",
        args,
    )
    labels: dict[tuple[str, str], list[str]] = {}
    for name, version, label in query(
        "SELECT DISTINCT release, version, energy FROM metrics"
        f" WHERE {where} AND energy IS NOT NULL ORDER BY energy",
        args,
    ):
        labels.setdefault((str(name), str(version)), []).append(str(label))
    found = []
    for name, version, joules, items, devices, reports, low, high in sums:
        joules, items = float(joules or 0.0), int(items or 0)
        found.append(
            {
                "release": str(name),
                "version": str(version),
                "joules": round(joules, 6),
                "items": items,
                "joules_per_item": float(f"{joules / items:.6g}") if items else None,
                "kind": "mixed" if low != high else ("measured" if high else "estimated"),
                "labels": labels.get((str(name), str(version)), []),
                "devices": int(devices),
                "reports": int(reports),
            }
        )
    return found
