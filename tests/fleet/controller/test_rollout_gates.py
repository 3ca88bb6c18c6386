"""A rollout's gates on the model's health: live accuracy on the canary's own traffic, drift alarms.

A real SQLite registry and ``Rollouts``; the devices' state and telemetry
(with its monitoring section) fed as the controller's MQTT worker feeds
them, on a clock that is a variable. The canary is judged on its live
accuracy once enough labelled items stand behind it, on the canary set
otherwise; an estimate decides only when the deployment accepts one, and
the status always says which figure was used. A drift alarm on the canary
rolls it back at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fogline.fleet.controller import Criteria, Inbox, Registry, RolloutPlan, Rollouts
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

PERIOD = 1.0
IDS = ("dev-a", "dev-b", "dev-c")


class Fleet:
    def __init__(self, folder: Path) -> None:
        self.now = 1_000_000.0
        self.registry = Registry(folder / "registry.db")
        self.rollouts = Rollouts(self.registry, lambda changed: None, clock=lambda: self.now)
        for device in IDS:
            self.registry.set_group(device, "line")
            self.state(device, "1.0")

    def state(self, device: str, version: str) -> None:
        status = ReleaseStatus(version=version, phase="active")
        generation = self.registry.desired(device).generation
        self.registry.ingest(
            Inbox(
                states=[
                    DeviceState(device_id=device, generation=generation, releases={"p": status})
                ]
            )
        )

    def report(
        self, device: str, version: str, monitoring: Monitoring | None = None, **metrics: float
    ) -> None:
        body = Telemetry(
            device_id=device, time=self.now, sequence=int(self.now), versions={"p": version},
            metrics={"p": ReleaseMetrics(items=10, monitoring=monitoring, **metrics)},
            period=PERIOD,
        )  # fmt: skip
        self.registry.ingest(Inbox(telemetry=[(f"{device}:{self.now}", body)]), now=self.now)

    def deploy(self, bake: float = 5.0, **criteria: object) -> tuple[str, str]:
        made = self.rollouts.create(
            "p", "1.1", "line",
            strategy=RolloutPlan(kind="canary", canary=1, bake_seconds=bake, timeout_seconds=30),
            criteria=Criteria(**criteria),  # type: ignore[arg-type]
        )  # fmt: skip
        canary = next(d.device_id for d in made.devices if d.status == "assigned")
        self.state(canary, "1.1")
        self.rollouts.tick()
        return made.id, canary

    def bake(
        self, canary: str, seconds: float, monitoring: Monitoring | None = None, **m: float
    ) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += PERIOD
            self.report(canary, "1.1", monitoring, **m)
            self.rollouts.tick()


def live(
    accuracy: float, labelled: int, model: str = "m-1.1", estimate: float | None = None
) -> Monitoring:
    return Monitoring(
        live=[LiveAccuracy(model_version=model, window="1000", value=accuracy, labelled=labelled)],
        estimates=[] if estimate is None else [AccuracyEstimate(model_version=model, value=estimate)],
    )  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.registry.close()


def test_live_accuracy_below_the_minimum_rolls_the_canary_back_and_says_which_figure(
    fleet: Fleet,
) -> None:
    made, canary = fleet.deploy(min_accuracy=0.85, min_labelled=50)

    fleet.bake(canary, 2, live(0.40, 20))  # too few labels: not judged yet
    during = fleet.rollouts.get(made)
    fleet.bake(canary, 4, live(0.42, 120))

    assert during is not None and during.status == "running"
    assert during.gates is not None and during.gates["accuracy"]["used"] == []
    assert (
        "so far live accuracy 40.0% over 20 labelled items"
        in during.gates["accuracy"]["waiting"][0]
    )
    done = fleet.rollouts.get(made)
    assert done is not None and done.status == "rolled-back"
    assert done.reason == f"live accuracy 42.0% over 120 labelled items on {canary} < 85.0%"
    assert fleet.registry.desired(canary).releases["p"] == "1.0"


def test_good_live_accuracy_passes_and_the_event_names_the_figure(fleet: Fleet) -> None:
    made, canary = fleet.deploy(min_accuracy=0.85, min_labelled=50)

    fleet.bake(canary, 6, live(0.93, 400))

    done = fleet.rollouts.get(made)
    assert done is not None and done.status == "running" and done.wave == 1  # the rest's wave
    gate = next(e for e in fleet.registry.events(deployment=made) if e["kind"] == "gate")
    assert gate["message"] == (
        f"wave 1 of 2: live accuracy 93.0% over 400 labelled items on {canary} ≥ 85.0%"
    )


def test_live_accuracy_of_the_old_model_is_not_the_canarys(fleet: Fleet) -> None:
    # The canary ran model m-1.0 under release 1.0; late labels still join its old results.
    made, canary = fleet.deploy(min_accuracy=0.85, min_labelled=50)
    old = fleet.now
    fleet.now -= 100
    fleet.report(canary, "1.0", live(0.99, 900, model="m-1.0"))
    fleet.now = old
    both = Monitoring(live=[*live(0.99, 900, "m-1.0").live, *live(0.30, 80, "m-1.1").live])

    fleet.bake(canary, 6, both)

    done = fleet.rollouts.get(made)
    assert done is not None and done.status == "rolled-back"
    assert done.reason is not None and "live accuracy 30.0% over 80 labelled items" in done.reason


def test_without_labels_the_canary_set_decides_and_an_estimate_never_passes_silently(
    fleet: Fleet,
) -> None:
    made, canary = fleet.deploy(min_accuracy=0.85, min_labelled=50)

    fleet.bake(canary, 6, live(0.0, 0, estimate=0.97))  # an estimate alone: not measured

    waiting = fleet.rollouts.get(made)
    assert waiting is not None and waiting.status == "running" and waiting.wave == 0
    assert "an estimate of 97.0%, not measured" in waiting.gates["accuracy"]["waiting"][0]  # type: ignore[index]
    fleet.bake(canary, 2, live(0.0, 0, estimate=0.97), accuracy=0.91)  # the canary set arrives
    passed = fleet.rollouts.get(made)
    assert passed is not None and passed.wave == 1
    gate = next(e for e in fleet.registry.events(deployment=made) if e["kind"] == "gate")
    assert gate["message"].endswith(f"canary-set accuracy 91.0% on {canary} ≥ 85.0%")


def test_an_accepted_estimate_decides_and_is_named_as_one(fleet: Fleet) -> None:
    made, canary = fleet.deploy(min_accuracy=0.85, accept_estimate=True)

    fleet.bake(canary, 6, live(0.0, 0, estimate=0.60))

    done = fleet.rollouts.get(made)
    assert done is not None and done.status == "rolled-back"
    assert done.reason == (
        f"estimated accuracy 60.0% on {canary} (an estimate, not measured) < 85.0%"
    )
    assert "or else the estimate" in done.criteria.describe()


def test_a_drift_alarm_on_the_canary_rolls_it_back_at_once(fleet: Fleet) -> None:
    made, canary = fleet.deploy(bake=60, no_drift_alarm=True)
    quiet = Monitoring(drift=[DriftReading(stage="drift", detector="adwin", score=0.1)])
    alarm = Monitoring(
        drift=[DriftReading(stage="drift", detector="adwin", score=0.73, alarm=True, alarms=1)]
    )

    fleet.bake(canary, 3, quiet)
    during = fleet.rollouts.get(made)
    fleet.bake(canary, 1, alarm)

    assert during is not None and during.status == "running"
    assert during.gates == {"accuracy": None, "drift": {"alarm": None}}
    done = fleet.rollouts.get(made)
    assert done is not None and done.status == "rolled-back"
    assert done.reason == f"drift alarm on {canary} on 1.1: stage drift (adwin), score 0.73"
    assert "no drift alarm" in done.criteria.describe()
    assert fleet.registry.desired(canary).releases["p"] == "1.0"
