"""The controller keeps what devices say about their models: stored, served, alarms as events.

A real SQLite registry fed as the controller's MQTT worker feeds it
(``Registry.ingest``), and the real API app over it (called through
httpx's ASGI transport): readings per device and release, series per release, and each
drift alarm a report says was raised recorded once as an event naming the
device, release, stage and score.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fogline.fleet.controller._api import ApiContext, application
from fogline.fleet.controller._registry import Inbox, Registry
from fogline.fleet.controller._rollout import RolloutPlan, Rollouts
from fogline.protocol import (
    AccuracyEstimate,
    DeviceState,
    DriftReading,
    LiveAccuracy,
    Monitoring,
    ReleaseMetrics,
    ReleaseStatus,
    Telemetry,
)

TOKEN = "t"


def telemetry(device: str, t: float, version: str, monitoring: Monitoring | None) -> Telemetry:
    return Telemetry(
        device_id=device, time=t, sequence=int(t), versions={"digits": version},
        metrics={"digits": ReleaseMetrics(items=10, monitoring=monitoring)}, period=1.0,
    )  # fmt: skip


def watching(
    score: float, *, alarms: int = 0, accuracy: float = 0.9, labelled: int = 50
) -> Monitoring:
    return Monitoring(
        drift=[DriftReading(stage="drift", detector="adwin", score=score, alarm=alarms > 0,
                            alarms=alarms)],
        live=[LiveAccuracy(model_version="m1", window="500", metric="accuracy", value=accuracy,
                           labelled=labelled)],
        estimates=[AccuracyEstimate(model_version="m1", value=0.88)],
        labels={"joined": 5, "unknown": 1}, captures={"stored": 2, "capped": 7},
    )  # fmt: skip


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    registry = Registry(tmp_path / "registry.db")
    for device in ("cam-1", "cam-2"):
        registry.set_group(device, "line")
        registry.ingest(
            Inbox(
                states=[
                    DeviceState(
                        device_id=device,
                        releases={"digits": ReleaseStatus(version="1.0", phase="active")},
                    )
                ]
            )
        )
    yield registry
    registry.close()


def test_readings_are_stored_per_device_and_release_and_alarms_become_events(
    registry: Registry,
) -> None:
    # Execute: cam-1 reports three periods, the second with an alarm; the third is redelivered
    registry.ingest(
        Inbox(
            telemetry=[
                ("k1", telemetry("cam-1", 100.0, "1.0", watching(0.1))),
                ("k2", telemetry("cam-1", 101.0, "1.0", watching(0.7, alarms=1))),
                ("k3", telemetry("cam-1", 102.0, "1.0", watching(0.7))),
                ("k4", telemetry("cam-2", 102.0, "1.0", None)),  # an agent without monitoring
            ]
        )
    )
    registry.ingest(
        Inbox(telemetry=[("k2", telemetry("cam-1", 101.0, "1.0", watching(0.7, alarms=1)))])
    )

    # Assert
    client = Client(registry)
    rows = client.get("/api/monitoring?device=cam-1&since=0&kind=drift", headers=AUTH).json()
    assert [(r["time"], r["value"], r["count"], r["alarm"]) for r in rows] == [
        (100.0, 0.1, 0, False), (101.0, 0.7, 1, True), (102.0, 0.7, 0, False),
    ]  # fmt: skip
    assert all((r["release"], r["version"], r["key"]) == ("digits", "1.0", "drift") for r in rows)
    live = client.get("/api/monitoring?release=digits&kind=live&since=0", headers=AUTH).json()
    assert {(r["device_id"], r["key"], r["window"], r["value"], r["count"]) for r in live} == {
        ("cam-1", "m1", "500", 0.9, 50)
    }
    alarms = [e for e in registry.events(device="cam-1") if e["kind"] == "drift"]
    assert [e["message"] for e in alarms] == [
        "drift alarm on digits 1.0, stage drift (adwin): score 0.7"
    ]  # once, though its report came twice
    device = client.get("/api/devices/cam-1?since=0", headers=AUTH).json()
    assert {r["kind"] for r in device["monitoring"]} == {
        "drift", "live", "estimate", "labels", "captures",
    }  # fmt: skip
    bad = client.get("/api/monitoring?kind=accuracy", headers=AUTH)
    assert bad.status_code == 400 and "one of drift, live, estimate" in bad.json()["error"]


def test_series_per_release_keep_the_estimate_apart_from_the_measured_figure(
    registry: Registry,
) -> None:
    registry.ingest(
        Inbox(
            telemetry=[
                ("a", telemetry("cam-1", 100.0, "1.0", watching(0.2, accuracy=0.9, labelled=300))),
                ("b", telemetry("cam-2", 101.0, "1.0", watching(0.5, accuracy=0.5, labelled=100))),
            ]
        )
    )

    series = Client(registry).get("/api/monitoring/series?since=0&step=10", headers=AUTH).json()

    one = series["digits 1.0"]
    assert one["time"] == [100.0]
    assert one["live_accuracy"] == [0.8]  # (0.9 * 300 + 0.5 * 100) / 400
    assert (one["labelled"], one["estimate"], one["drift_score"]) == ([400], [0.88], [0.5])
    assert (one["labels"], one["captures"], one["devices"]) == ([10], [4], [2])


def test_an_alarm_on_a_canary_names_its_deployment(registry: Registry) -> None:
    rollouts = Rollouts(registry, lambda changed: None)
    made = rollouts.create("digits", "1.1", "line", strategy=RolloutPlan(kind="canary", canary=1))
    canary = next(d.device_id for d in made.devices if d.status == "assigned")

    registry.ingest(
        Inbox(telemetry=[("x", telemetry(canary, 200.0, "1.1", watching(0.9, alarms=2)))])
    )

    event = next(e for e in registry.events(deployment=made.id) if e["kind"] == "drift")
    assert event["device_id"] == canary
    assert event["message"] == (
        "drift alarm on digits 1.1, stage drift (adwin): score 0.9 (2 alarms in the period)"
    )


AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Client:
    """GET requests to the controller's real API app, through httpx's ASGI transport."""

    def __init__(self, registry: Registry) -> None:
        self.app = application(
            ApiContext(
                registry=registry,
                rollouts=Rollouts(registry, lambda changed: None),
                releases=list,
                enrol=lambda device_id: {},
                token=TOKEN,
                wake=lambda: None,
            )
        )

    def get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                response = await client.get(path, headers=headers)
                await response.aread()
                return response

        return asyncio.run(call())
