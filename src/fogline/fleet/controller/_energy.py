"""Energy per inference of each release and version, from the devices' telemetry rows.

A device's report carries, per release, the joules its process used in the
period and how they were obtained (``measured (RAPL package-0)`` or
``estimated (CPU time x 10 W per core)``); the fleet's figure for a release
version is the sum of joules over the sum of items of the reports that
carried energy, so a busy device weighs more than an idle one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def energy_by_release(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (release, version) whose reports carried energy, sorted by both.

    ``kind`` is ``measured`` or ``estimated`` when every report agrees, else
    ``mixed``; ``labels`` lists how the figures were obtained.

    >>> rows = [
    ...     {"release": "digits", "version": "1.0", "device_id": "a", "items": 100, "joules": 2.0,
    ...      "energy": "estimated (CPU time x 10 W per core)", "energy_measured": False},
    ...     {"release": "digits", "version": "1.0", "device_id": "b", "items": 300, "joules": 4.0,
    ...      "energy": "estimated (CPU time x 10 W per core)", "energy_measured": False},
    ... ]
    >>> [(e["joules_per_item"], e["kind"], e["devices"]) for e in energy_by_release(rows)]
    [(0.015, 'estimated', 2)]
    """
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("joules") is not None:
            groups.setdefault((str(row["release"]), str(row["version"])), []).append(row)
    found = []
    for (release, version), group in sorted(groups.items()):
        joules = sum(float(r["joules"]) for r in group)
        items = sum(int(r["items"]) for r in group)
        kinds = {bool(r.get("energy_measured")) for r in group}
        found.append(
            {
                "release": release,
                "version": version,
                "joules": round(joules, 6),
                "items": items,
                "joules_per_item": float(f"{joules / items:.6g}") if items else None,
                "kind": "mixed"
                if len(kinds) > 1
                else ("measured" if True in kinds else "estimated"),
                "labels": sorted({str(r["energy"]) for r in group if r.get("energy")}),
                "devices": len({r["device_id"] for r in group}),
                "reports": len(group),
            }
        )
    return found
