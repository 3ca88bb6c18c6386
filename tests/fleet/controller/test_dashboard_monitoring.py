"""The dashboard's model-health views in a real headless Chromium: per device, per release, gates.

The controller's API and pages run on uvicorn over a real SQLite registry
fed as the MQTT worker feeds it (``Registry.ingest``): two devices report
20 minutes of a monitoring pipeline's telemetry (drift scores, an alarm,
live accuracy from late labels on one, only an estimate on the other,
labels and captures), and a canary deployment with ``--min-accuracy`` is
judged by ``Rollouts`` on the canary's live accuracy and rolled back. The
browser, pages (failing on a script error) and screenshots (failing on
stray ``null``/``NaN`` text) are those of ``test_dashboard``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

import fleet.controller.test_dashboard as dashboard
from fogline.fleet.controller._api import ApiContext, application
from fogline.fleet.controller._dashboard import dashboard_routes
from fogline.fleet.controller._registry import Inbox, Registry
from fogline.fleet.controller._rollout import Criteria, RolloutPlan, Rollouts
from fogline.protocol import (
    AccuracyEstimate,
    DeviceState,
    DriftReading,
    LiveAccuracy,
    Monitoring,
    Presence,
    ReleaseMetrics,
    ReleaseStatus,
    Telemetry,
)

browser = dashboard.browser
page = dashboard.page
shots = dashboard.shots
screenshot = dashboard.screenshot
TOKEN = dashboard.TOKEN
RELEASE = "digits-monitor"


def monitoring(device: str, step: int, version: str) -> Monitoring:
    """cam-1 has late labels; cam-2 only an estimate. cam-1's input drifts at step 30."""
    drifted = device == "cam-1" and step >= 30
    score = (0.62 if drifted else 0.05) + 0.02 * math.sin(step / 3)
    live = []
    estimates = [AccuracyEstimate(model_version="1.0", window="1000", value=0.9 - 0.01 * drifted)]
    if device == "cam-1":
        accuracy = 0.95 if not drifted else 0.95 - 0.03 * (step - 29)
        live = [
            LiveAccuracy(
                model_version="1.0", window="1000", value=accuracy, labelled=10 * step + 10
            )
        ]
    return Monitoring(
        drift=[DriftReading(stage="drift", detector="adwin", score=score, alarm=drifted,
                            alarms=1 if device == "cam-1" and step == 30 else 0)],
        live=live, estimates=estimates,
        labels={"joined": 10} if device == "cam-1" else {},
        captures={"stored": 3 if drifted else 0, "capped": 2 if drifted else 0},
        # cam-1 runs two variants of its model and steps down to int8 at step 30.
        variants=({"fp32": 0, "int8": 300} if drifted else {"fp32": 250, "int8": 50})
        if device == "cam-1" else {},
        variant=("int8" if drifted else "fp32") if device == "cam-1" else None,
        switches=1 if device == "cam-1" and step == 30 else 0,
    )  # fmt: skip


def fill(registry: Registry, rollouts: Rollouts) -> str:
    for device, group in (("cam-1", "line"), ("cam-2", "line"), ("cam-3", "lab"), ("cam-4", "lab")):
        registry.set_group(device, group)
    registry.ingest(
        Inbox(
            states=[
                DeviceState(device_id=d, releases={RELEASE: ReleaseStatus(version="1.0.0", phase="active")})
                for d in ("cam-1", "cam-2", "cam-3", "cam-4")
            ],
            presence=[(d, Presence(online=True)) for d in ("cam-1", "cam-2", "cam-3", "cam-4")],
        )
    )  # fmt: skip
    now = time.time()
    reports = []
    for step in range(40):  # every 30 s over the last 20 minutes
        t = now - 1200 + step * 30
        for device in ("cam-1", "cam-2"):
            metrics = ReleaseMetrics(
                items=300, items_per_second=10.0, monitoring=monitoring(device, step, "1.0.0")
            )
            reports.append(
                (f"{device}-{step}", Telemetry(device_id=device, time=t, sequence=step,
                                               versions={RELEASE: "1.0.0"}, metrics={RELEASE: metrics}))
            )  # fmt: skip
    registry.ingest(Inbox(telemetry=reports))
    # A canary of 1.1.0 whose live accuracy on its own traffic is too low: rolled back.
    made = rollouts.create(
        RELEASE, "1.1.0", "lab",
        strategy=RolloutPlan(kind="canary", canary=1, bake_seconds=0),
        criteria=Criteria(min_accuracy=0.9, min_labelled=100, require_telemetry=False),
    )  # fmt: skip
    canary = next(d.device_id for d in made.devices if d.status == "assigned")
    generation = registry.desired(canary).generation
    registry.ingest(
        Inbox(states=[DeviceState(device_id=canary, generation=generation,
                                  releases={RELEASE: ReleaseStatus(version="1.1.0", phase="active")})])
    )  # fmt: skip
    rollouts.tick()
    bad = Monitoring(
        live=[LiveAccuracy(model_version="1.1", window="1000", value=0.41, labelled=160)]
    )
    body = Telemetry(device_id=canary, time=time.time(), sequence=99, versions={RELEASE: "1.1.0"},
                     metrics={RELEASE: ReleaseMetrics(items=300, monitoring=bad)})  # fmt: skip
    registry.ingest(Inbox(telemetry=[("canary", body)]))
    rollouts.tick()
    return made.id


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Rollouts]]:
    registry = Registry(tmp_path_factory.mktemp("controller") / "registry.db")
    rollouts = Rollouts(registry, lambda changed: None)
    deployment = fill(registry, rollouts)
    app = application(
        ApiContext(registry=registry, rollouts=rollouts, releases=list,
                   enrol=lambda device_id: {}, token=TOKEN, wake=lambda: None),
        dashboard=dashboard_routes(),
    )  # fmt: skip
    server = dashboard.Served(app)
    try:
        yield server.url, deployment, rollouts
    finally:
        server.stop()
        registry.close()


def test_a_device_page_draws_drift_live_accuracy_and_captures(
    page: Page, served: tuple[str, str, Any], shots: Path
) -> None:
    url, _, _ = served
    page.goto(f"{url}/?token={TOKEN}#/devices/cam-1")

    health = page.locator("#device-monitoring")
    expect(health.locator('[data-fact="live"]')).to_contain_text("over 400 labelled · v1.0")
    expect(health.locator('[data-fact="alarms"] dd')).to_contain_text("1 · alarm up now")
    expect(health.locator('[data-fact="captures"] dd')).to_have_text("30")
    expect(health.locator('[data-fact="variants"] dd')).to_have_text(
        "int8 now · items served fp32 7.5k, int8 4.5k · 1 switch"
    )
    for chart in ("drift", "accuracy", "captures"):
        path = health.locator(f'[data-chart="{chart}"] svg .series path').first
        expect(path).to_have_attribute("d", dashboard._MANY_POINTS)
    drift = health.locator('[data-chart="drift"]')
    expect(drift.locator('.series[data-series="alarm raised"] circle')).to_have_count(1)
    accuracy = health.locator('[data-chart="accuracy"]')
    expect(accuracy.locator(".series.dashed")).to_have_attribute(
        "data-series", "estimate v1.0 (not measured)"
    )
    expect(accuracy.locator(".estimate-note")).to_contain_text("not measured accuracy")
    events = page.locator("#device-events li.ev-drift")
    expect(events).to_have_count(1)
    expect(events).to_contain_text(
        "drift alarm on digits-monitor 1.0.0, stage drift (adwin): score 0."
    )
    screenshot(page, shots, "device-monitoring")

    page.goto(f"{url}/#/devices/cam-2")  # no labels: only the estimate, marked as such
    expect(page.locator('#device-monitoring [data-fact="live"]')).to_contain_text("no labels yet")
    expect(page.locator('#device-monitoring [data-fact="estimate"]')).to_contain_text(
        "90% estimate, not measured"
    )
    expect(page.locator('#device-monitoring [data-chart="accuracy"] .series')).to_have_count(1)
    page.goto(f"{url}/#/devices/cam-4")  # reports nothing of its model
    expect(page.locator("#device-monitoring .monitoring-empty")).to_contain_text(
        "nothing reported: a pipeline release reports this once it has a drift stage"
    )


def test_the_overview_draws_model_health_per_release_and_lists_drift_alarms(
    page: Page, served: tuple[str, str, Any], shots: Path
) -> None:
    url, _, _ = served
    page.goto(f"{url}/?token={TOKEN}#/")

    health = page.locator("#release-health")
    drift = health.locator('[data-chart="release-drift"]')
    expect(drift.locator(f'.series[data-series="{RELEASE} 1.0.0"] path').first).to_have_attribute(
        "d", dashboard._MANY_POINTS
    )
    accuracy = health.locator('[data-chart="release-accuracy"]')
    expect(accuracy.locator(f'.series[data-series="{RELEASE} 1.0.0 live"]')).to_have_count(1)
    expect(
        accuracy.locator(f'.series.dashed[data-series="{RELEASE} 1.0.0 estimate (not measured)"]')
    ).to_have_count(1)
    expect(health.locator('[data-chart="release-captures"] svg')).to_have_count(1)
    expect(page.locator("#recent-events li.ev-drift")).to_contain_text("cam-1")
    screenshot(page, shots, "overview-monitoring")


def test_a_deployment_says_which_accuracy_figure_rolled_it_back(
    page: Page, served: tuple[str, str, Any], shots: Path
) -> None:
    url, deployment, rollouts = served
    canary = next(d.device_id for d in rollouts.get(deployment).devices if d.wave == 0)
    page.goto(f"{url}/?token={TOKEN}#/deployments/{deployment}")

    card = page.locator("#deployment")
    expect(card.locator(".reason")).to_contain_text(
        f"live accuracy 41.0% over 160 labelled items on {canary} < 90.0%"
    )
    expect(card.locator('.gates [data-source="live"]')).to_have_text(
        f"live accuracy 41.0% over 160 labelled items on {canary}"
    )
    expect(card.locator(".dep-foot")).to_contain_text(
        "accuracy ≥ 90.0% (live on ≥ 100 labelled items"
    )
    screenshot(page, shots, "deployment-gate")


def test_fleet_health_prints_each_devices_model_health(served: tuple[str, str, Any]) -> None:
    url, _, _ = served

    shown = subprocess.run(
        [sys.executable, "-m", "fogline", "fleet", "health", "--controller", url, "--token", TOKEN,
         "--since", "3600"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip

    assert shown.returncode == 0, shown.stderr
    rows = {
        line.split("│")[1].strip(): line for line in shown.stdout.splitlines() if "│ cam-" in line
    }
    assert "65.0% of 400 (model 1.0)" in rows["cam-1"] and "alarm" in rows["cam-1"]
    assert "~90.0% (est.)" in rows["cam-2"] and "%" not in rows["cam-2"].split("│")[3]
    assert "not measured accuracy" in shown.stdout


def test_deploy_takes_the_gates_and_rollout_status_says_which_figure_was_used(
    served: tuple[str, str, Any],
) -> None:
    url, deployment, rollouts = served

    def fogline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fogline", "fleet", *args, "--controller", url, "--token", TOKEN],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip

    status = fogline("rollout", "status", deployment)
    made = fogline("deploy", RELEASE, "1.1.0", "--group", "line", "--min-accuracy", "0.8",
                   "--min-labelled", "20", "--accept-estimate", "--no-drift-alarm", "--json")  # fmt: skip

    assert status.returncode == 0, status.stderr
    assert "  accuracy: live accuracy 41.0% over 160 labelled items on cam-3\n" in status.stdout
    assert "  reason: live accuracy 41.0% over 160 labelled items on cam-3 < 90.0%" in status.stdout
    assert made.returncode == 0, made.stderr
    criteria = json.loads(made.stdout)["criteria"]
    assert (criteria["min_accuracy"], criteria["min_labelled"]) == (0.8, 20)
    assert criteria["accept_estimate"] is True and criteria["no_drift_alarm"] is True
    rollouts.rollback(json.loads(made.stdout)["id"])
