"""The registry's events of one device, on a real SQLite registry.

A device's events are its own (enrolment, a release it refused or failed,
recorded when its state report says so) and those of the deployments that
reached it; a rollback is recorded once per deployment, with no device.
Deployments are made and rolled back by ``Rollouts``, the states fed in as
the controller's MQTT worker feeds them (``Registry.ingest``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.fleet.controller._registry import Inbox, Registry
from fogline.fleet.controller._rollout import RolloutPlan, Rollouts
from fogline.protocol import DeviceState, ReleaseStatus

IDS = ("dev-a", "dev-b", "dev-c")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    registry = Registry(tmp_path / "registry.db")
    for device_id in IDS:
        registry.redeem_token(registry.create_token(group="line"), device_id)
        registry.ingest(Inbox(states=[report(registry, device_id, ReleaseStatus(version="1.0"))]))
    return registry


def report(registry: Registry, device_id: str, status: ReleaseStatus) -> DeviceState:
    generation = registry.desired(device_id).generation
    return DeviceState(device_id=device_id, generation=generation, releases={"det": status})


def kinds(registry: Registry, device_id: str) -> list[str]:
    return [e["kind"] for e in registry.events(device=device_id)]


def test_a_device_sees_the_rollback_of_a_deployment_that_reached_it(registry: Registry) -> None:
    rollouts = Rollouts(registry, lambda changed: None)
    made = rollouts.create("det", "1.1", "line", strategy=RolloutPlan(kind="canary", canary=1))
    canary = next(d.device_id for d in made.devices if d.status == "assigned")
    failed = ReleaseStatus(version="1.0", target="1.1", phase="failed", error="p99 90 ms > 20 ms")

    registry.ingest(Inbox(states=[report(registry, canary, failed)]))
    rollouts.tick()

    events = registry.events(device=canary)
    assert [e["kind"] for e in events] == ["rollback", "failed", "deployment", "enrolled"]
    assert events[0]["device_id"] is None and events[0]["deployment"] == made.id
    assert events[1] == {
        "time": events[1]["time"],
        "kind": "failed",
        "device_id": canary,
        "deployment": made.id,
        "message": "det 1.1 failed: p99 90 ms > 20 ms",
    }
    for waiting in set(IDS) - {canary}:  # a later wave: never touched, so not theirs
        assert kinds(registry, waiting) == ["enrolled"]
    assert [e["kind"] for e in registry.events(deployment=made.id)] == [
        "rollback",
        "failed",
        "deployment",
    ]
    assert registry.events(device=canary, deployment="d-other") == []


def test_a_refusal_is_one_event_however_often_it_is_reported(registry: Registry) -> None:
    refused = ReleaseStatus(
        version="1.0", target="2.0", phase="refused", error="release det 2.0 expired: refused"
    )
    state = report(registry, "dev-a", refused)

    registry.ingest(Inbox(states=[state, state]))  # twice in one batch
    registry.ingest(Inbox(states=[state]))  # and again, as a reconnect re-publishes it
    registry.ingest(Inbox(states=[report(registry, "dev-b", ReleaseStatus(version="1.0"))]))

    events = registry.events(device="dev-a")
    assert [(e["kind"], e["message"]) for e in events] == [
        ("refused", "det 2.0 refused: release det 2.0 expired: refused"),
        ("enrolled", "enrolled in group line"),
    ]
    assert events[0]["deployment"] is None  # no deployment sent it 2.0
    assert kinds(registry, "dev-b") == ["enrolled"]


def test_a_new_attempt_that_fails_again_is_a_new_event(registry: Registry) -> None:
    first = ReleaseStatus(version="1.0", target="1.1", phase="failed", since=100.0)
    retry = ReleaseStatus(version="1.0", target="1.1", phase="downloading", since=200.0)
    again = ReleaseStatus(version="1.0", target="1.1", phase="failed", since=210.0)

    for status in (first, retry, again):
        registry.ingest(Inbox(states=[report(registry, "dev-c", status)]))

    events = registry.events(device="dev-c")
    assert [e["kind"] for e in events] == ["failed", "failed", "enrolled"]
    assert events[0]["message"] == "det 1.1 failed (no reason given)"
