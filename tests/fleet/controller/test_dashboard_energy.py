"""Energy per inference per release: the controller stores it, its API sums it, the dashboard shows it.

A real SQLite registry is fed as the MQTT worker feeds it (``Registry.ingest``):
two devices run ``digits 1.0.0`` and report an estimate (CPU time x a declared
power), one runs ``vad 2.0.0`` and reports a measured figure (RAPL), and
``digits 1.1.0`` reports nothing. The page is checked in the real headless
Chromium of ``test_dashboard`` (failing on a script error or stray ``NaN``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

import fleet.controller.test_dashboard as dashboard
from fogline.fleet.controller._registry import Inbox, Registry
from fogline.protocol import ReleaseMetrics, Telemetry

browser = dashboard.browser
page = dashboard.page
shots = dashboard.shots
TOKEN = dashboard.TOKEN
ESTIMATED = "estimated (CPU time x 10 W per core)"
MEASURED = "measured (RAPL package-0, this process's CPU-time share)"

#: (device, release, version, items, joules, label) of each report.
REPORTS = [
    ("cam-1", "digits", "1.0.0", 600, 7.2, ESTIMATED),
    ("cam-1", "digits", "1.0.0", 400, 5.1, ESTIMATED),
    ("cam-2", "digits", "1.0.0", 900, 11.4, ESTIMATED),
    ("cam-2", "vad", "2.0.0", 300, 0.9, MEASURED),
    ("cam-2", "vad", "2.0.0", 500, 1.6, MEASURED),
]


def report(device: str, at: float, sequence: int, row: tuple[str, str, int, float, str]) -> Any:
    """One device's telemetry carrying one release's energy at ``at``."""
    release, version, items, joules, label = row
    metrics = ReleaseMetrics(
        items=items,
        items_per_second=items / 10,
        joules=joules,
        joules_per_item=joules / items,
        energy=label,
        energy_measured=label.startswith("measured"),
    )
    body = Telemetry(
        device_id=device,
        time=at,
        sequence=sequence,
        versions={release: version},
        metrics={release: metrics},
    )
    return (f"{device}:{sequence}", body)


def fill(registry: Registry) -> None:
    registry.ingest(
        Inbox(
            states=[
                dashboard.state("cam-1", digits=dashboard.active("1.0.0")),
                dashboard.state(
                    "cam-2", digits=dashboard.active("1.0.0"), vad=dashboard.active("2.0.0")
                ),
            ]
        )
    )
    now = time.time()
    reports = [
        report(device, now - 600 + 10 * sequence, sequence, tuple(rest))
        for sequence, (device, *rest) in enumerate(REPORTS)
    ]
    registry.ingest(Inbox(telemetry=reports))


def per_item(release: str, version: str) -> float:
    rows = [r for r in REPORTS if r[1:3] == (release, version)]
    return sum(r[4] for r in rows) / sum(r[3] for r in rows)


def test_the_controller_keeps_each_reports_energy_and_sums_it_per_release(tmp_path: Path) -> None:
    with dashboard.serve_registry(tmp_path, dashboard.releases) as (url, registry):
        fill(registry)
        auth = {"Authorization": f"Bearer {TOKEN}"}

        rows = httpx.get(f"{url}/api/metrics", params={"release": "vad"}, headers=auth).json()
        energy = httpx.get(f"{url}/api/energy", headers=auth).json()

    assert [(r["joules"], r["energy"], r["energy_measured"]) for r in rows] == [
        (0.9, MEASURED, True),
        (1.6, MEASURED, True),
    ]
    by_release = {(e["release"], e["version"]): e for e in energy}
    assert set(by_release) == {("digits", "1.0.0"), ("vad", "2.0.0")}  # 1.1.0 reported none
    digits, vad = by_release["digits", "1.0.0"], by_release["vad", "2.0.0"]
    assert digits["joules_per_item"] == pytest.approx(per_item("digits", "1.0.0"), rel=1e-5)
    assert (digits["kind"], digits["labels"], digits["devices"]) == ("estimated", [ESTIMATED], 2)
    assert (vad["kind"], vad["labels"], vad["devices"]) == ("measured", [MEASURED], 1)


def test_the_energy_api_sums_every_report_of_its_window_and_only_those(tmp_path: Path) -> None:
    # Prepare: besides the last ten minutes' reports, one from two hours ago, and a mixed version
    with dashboard.serve_registry(tmp_path, dashboard.releases) as (url, registry):
        fill(registry)
        old = ("vad", "2.0.0", 1000, 50.0, MEASURED)
        late = ("digits", "1.0.0", 100, 3.0, MEASURED)
        now = time.time()
        registry.ingest(
            Inbox(telemetry=[report("cam-3", now - 7200, 0, old), report("cam-3", now, 1, late)])
        )
        auth = {"Authorization": f"Bearer {TOKEN}"}

        # Execute: the default window (an hour), then one that reaches the old report
        hour = httpx.get(f"{url}/api/energy", headers=auth).json()
        day = httpx.get(f"{url}/api/energy", params={"since": now - 86400}, headers=auth).json()
        one = httpx.get(f"{url}/api/energy", params={"release": "vad"}, headers=auth).json()

    # Assert
    in_hour = {(e["release"], e["version"]): e for e in hour}
    in_day = {(e["release"], e["version"]): e for e in day}
    vad_rows = [r for r in REPORTS if r[1] == "vad"]
    assert in_hour["vad", "2.0.0"]["items"] == sum(r[3] for r in vad_rows)
    assert in_day["vad", "2.0.0"]["items"] == sum(r[3] for r in vad_rows) + 1000
    assert in_day["vad", "2.0.0"]["joules"] == pytest.approx(sum(r[4] for r in vad_rows) + 50.0)
    digits = in_hour["digits", "1.0.0"]
    assert (digits["kind"], digits["labels"], digits["devices"]) == (
        "mixed",
        sorted([ESTIMATED, MEASURED]),
        3,
    )
    assert [(e["release"], e["version"]) for e in one] == [("vad", "2.0.0")]


def test_the_releases_page_shows_energy_per_inference_labelled(
    page: Page, tmp_path: Path, shots: Path
) -> None:
    with dashboard.serve_registry(tmp_path, dashboard.releases) as (url, registry):
        fill(registry)
        page.goto(f"{url}/?token={TOKEN}#/releases")

        expect(page.locator("#releases thead")).to_contain_text("Energy / inference")
        digits = page.locator('tr[data-release="digits@1.0.0"] td.energy')
        vad = page.locator('tr[data-release="vad@2.0.0"] td.energy')
        # between 10 and 100 mJ the dashboard shows one decimal
        expect(digits).to_have_text(f"{1000 * per_item('digits', '1.0.0'):.1f} mJ estimated")
        expect(digits.locator(".badge")).to_have_attribute("title", f"{ESTIMATED} · 3 reports "
                                                          "from 2 devices, last 24 h")  # fmt: skip
        expect(vad).to_contain_text("mJ measured")
        expect(vad.locator(".badge")).to_have_attribute("title", f"{MEASURED} · 2 reports from "
                                                        "1 device, last 24 h")  # fmt: skip
        expect(page.locator('tr[data-release="digits@1.1.0"] td.energy')).to_have_text("—")
        # the chart: a bar per release version that reported energy, each saying its kind
        chart = page.locator("#energy-chart")
        expect(chart.locator(".bar-row")).to_have_count(2)
        digits_bar = chart.locator('.bar-row[data-label="digits 1.0.0"]')
        expect(digits_bar.locator(".bar-value")).to_have_text(
            f"{1000 * per_item('digits', '1.0.0'):.1f} mJ estimated"
        )
        expect(digits_bar.locator(".bar-fill.kind-estimated")).to_be_visible()
        vad_bar = chart.locator('.bar-row[data-label="vad 2.0.0"]')
        expect(vad_bar.locator(".bar-value")).to_contain_text("mJ measured")
        expect(vad_bar.locator(".bar-fill.kind-measured")).to_be_visible()
        dashboard.screenshot(page, shots, "releases-energy")
