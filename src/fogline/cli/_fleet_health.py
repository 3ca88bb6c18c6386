"""``fogline fleet health``: each device's model health, as its telemetry reported it.

One row per device and release version over the last ``--since`` seconds:
live accuracy from late labels and what it rests on, the estimate (marked
as one: it is not measured), the worst drift score, drift alarms raised,
labels joined and hard examples captured. The same figures the dashboard
draws, from the controller's ``/api/monitoring/summary``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from fogline.cli._app import console
from fogline.cli._fleet import _CONTROLLER, _DATA, _JSON, _TOKEN, Api, _print_json, fleet


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


@fleet.command("health")
def health(
    release: str | None = typer.Option(None, "--release", help="Only this release."),
    since: float = typer.Option(
        600.0, "--since", min=1.0, help="Seconds back: alarms, labels and captures counted."
    ),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
    as_json: bool = _JSON,
) -> None:
    """Live accuracy (or its estimate, marked), drift and captures of each device's model."""
    path = f"/api/monitoring/summary?since={time.time() - since:.3f}"
    if release:
        path += f"&release={release}"
    rows: list[dict[str, Any]] = Api(controller, token, data).call("GET", path)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print(
            f"no device reported its model's health in the last {since:g} s: a pipeline release "
            "reports it once it has a drift stage, a labels: section or a capture: section"
        )
        return
    table = Table(title=f"model health, last {since:g} s")
    for column in (
        "device", "release", "live accuracy", "estimate", "drift", "alarms", "labels", "captured",
    ):  # fmt: skip
        table.add_column(column)
    for row in rows:
        live = "-"
        if row["live"] is not None:
            live = f"{_percent(row['live'])} of {row['labelled']} (model {row['model_version']})"
        estimate = (
            "-" if row["estimate"] is None else f"[yellow]~{_percent(row['estimate'])} (est.)[/]"
        )
        drift = "-" if row["drift"] is None else f"{row['drift']:.3g}"
        if row["alarm_up"]:
            drift += " [red]alarm[/]"
        table.add_row(
            row["device_id"], f"{row['release']} {row['version']}", live, estimate, drift,
            str(row["alarms"]), str(row["labels"]), str(row["captures"]),
        )  # fmt: skip
    console.print(table)
    console.print(
        "estimates come from the model's calibrated confidence: not measured accuracy",
        style="dim",
    )
