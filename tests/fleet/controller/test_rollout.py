"""Rollouts on a real SQLite registry: waves, criteria, automatic and operator rollback.

The devices' reports are fed to the registry the way the controller's MQTT
worker feeds them (``Registry.ingest``); the clock is a variable, so a bake
time of minutes takes no time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.errors import ConfigError
from fogline.fleet.controller import Criteria, Inbox, Registry, RolloutPlan, Rollouts
from fogline.protocol import DesiredState, DeviceState, ReleaseMetrics, ReleaseStatus, Telemetry

#: The devices' telemetry period in these tests: a silence of more than 2 x 5 + 1 s counts.
PERIOD = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Fleet:
    """A registry, the rollouts on it, and what was published."""

    def __init__(self, folder: Path, devices: int) -> None:
        self.clock = Clock()
        self.registry = Registry(folder / "registry.db")
        self.published: list[tuple[str, DesiredState]] = []
        self.rollouts = Rollouts(self.registry, self.published.extend, clock=self.clock)
        self.ids = [f"dev-{i:02d}" for i in range(devices)]
        for device_id in self.ids:
            self.report(device_id, "1.0.0")

    def report(
        self,
        device_id: str,
        version: str | None,
        *,
        phase: str = "active",
        target: str | None = None,
        error: str | None = None,
    ) -> None:
        generation = self.registry.desired(device_id).generation
        status = ReleaseStatus(version=version, target=target, phase=phase, error=error)  # type: ignore[arg-type]
        state = DeviceState(device_id=device_id, generation=generation, releases={"det": status})
        self.registry.ingest(Inbox(states=[state]))

    def telemetry(
        self,
        device_id: str,
        version: str,
        *,
        items: int = 0,
        errors: int = 0,
        stamp: float | None = None,
        **extra: float,
    ) -> None:
        """One report received now; ``stamp`` is the device's own time (a late one from its outbox)."""
        stamp = self.clock.now if stamp is None else stamp
        report = Telemetry(
            device_id=device_id,
            time=stamp,
            sequence=int(stamp * 10),
            versions={"det": version},
            metrics={"det": ReleaseMetrics(items=items, errors=errors, **extra)},
            period=PERIOD,
        )
        self.registry.ingest(
            Inbox(telemetry=[(f"{device_id}:{stamp}", report)]), now=self.clock.now
        )

    def run_for(self, seconds: float, devices: list[str], version: str) -> None:
        """Let ``seconds`` pass, each of ``devices`` sending a heartbeat every period, ticking."""
        end = self.clock.now + seconds
        while self.clock.now < end:
            self.clock.now += PERIOD
            for device_id in devices:
                self.telemetry(device_id, version)
            self.rollouts.tick()

    def on(self, version: str) -> list[str]:
        return [i for i in self.ids if self.desired_version(i) == version]

    def desired_version(self, device_id: str) -> str | None:
        return self.registry.desired(device_id).releases.get("det")

    def follow(self, version: str) -> None:
        """Every device told to run ``version`` reports it running."""
        for device_id in self.ids:
            if self.desired_version(device_id) == version:
                self.report(device_id, version)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path, devices=5)


def test_canary_then_the_rest(fleet: Fleet) -> None:
    d = fleet.rollouts.create(
        "det", "1.1.0", "default", strategy=RolloutPlan(kind="canary", canary=1, bake_seconds=60)
    )
    assert d.waves == 2
    assert [fleet.desired_version(i) for i in fleet.ids].count("1.1.0") == 1
    fleet.follow("1.1.0")
    fleet.rollouts.tick()  # converged: the bake starts
    canary = fleet.on("1.1.0")
    fleet.run_for(30, canary, "1.1.0")
    assert len(fleet.on("1.1.0")) == 1  # still baking
    fleet.run_for(30, canary, "1.1.0")  # bake over: the second wave is assigned
    assert all(fleet.desired_version(i) == "1.1.0" for i in fleet.ids)
    fleet.follow("1.1.0")
    fleet.rollouts.tick()
    fleet.run_for(60, fleet.ids, "1.1.0")
    done = fleet.rollouts.get(d.id)
    assert done is not None and done.status == "succeeded"
    assert done.counts() == {"converged": 5}
    published = {device for device, _ in fleet.published}
    assert published == set(fleet.ids)


def test_a_failing_canary_rolls_back_and_the_rest_never_get_it(fleet: Fleet) -> None:
    d = fleet.rollouts.create("det", "1.1.0", "default", strategy=RolloutPlan(canary="40%"))
    canaries = [i for i in fleet.ids if fleet.desired_version(i) == "1.1.0"]
    assert len(canaries) == 2
    fleet.report(
        canaries[0], "1.0.0", phase="failed", target="1.1.0", error="latency 90 ms > 20 ms"
    )
    fleet.rollouts.tick()
    done = fleet.rollouts.get(d.id)
    assert done is not None and done.status == "rolled-back"
    assert done.reason is not None and "latency 90 ms > 20 ms" in done.reason
    for device_id in canaries:
        desired = fleet.registry.desired(device_id)
        assert desired.releases["det"] == "1.0.0"
        assert desired.rollback == {"det": "1.0.0"}
    for device_id in set(fleet.ids) - set(canaries):
        assert fleet.registry.desired(device_id).generation == 0  # never touched


def test_error_rate_over_the_limit_rolls_back(fleet: Fleet) -> None:
    d = fleet.rollouts.create(
        "det",
        "1.1.0",
        "default",
        strategy=RolloutPlan(canary=1, bake_seconds=10),
        criteria=Criteria(max_error_rate=0.01, require_telemetry=True),
    )
    fleet.follow("1.1.0")
    fleet.rollouts.tick()
    canary = next(i for i in fleet.ids if fleet.desired_version(i) == "1.1.0")
    fleet.clock.now += 5
    fleet.telemetry(canary, "1.1.0", items=1000, errors=50)
    fleet.run_for(6, [canary], "1.1.0")
    done = fleet.rollouts.get(d.id)
    assert done is not None and done.status == "rolled-back"
    assert done.reason == "error rate 5.0% over 1000 items > 1.0%"


def test_criteria_wait_for_telemetry_then_pass(fleet: Fleet) -> None:
    d = fleet.rollouts.create(
        "det",
        "1.1.0",
        "default",
        strategy=RolloutPlan(canary=1, bake_seconds=10),
        criteria=Criteria(max_p99_ms=20, require_telemetry=True),
    )
    fleet.follow("1.1.0")
    fleet.rollouts.tick()
    fleet.clock.now += 11
    fleet.rollouts.tick()
    running = fleet.rollouts.get(d.id)
    assert running is not None and running.status == "running" and running.wave == 0
    assert running.bake is not None and running.bake.waiting == tuple(fleet.on("1.1.0"))
    canary = next(i for i in fleet.ids if fleet.desired_version(i) == "1.1.0")
    fleet.telemetry(canary, "1.1.0", items=100, errors=0, p99_ms=12.0)
    fleet.rollouts.tick()
    moved = fleet.rollouts.get(d.id)
    assert moved is not None and moved.wave == 1


def test_a_silent_canary_does_not_pass_its_bake_and_is_rolled_back_at_the_deadline(
    fleet: Fleet,
) -> None:
    d = fleet.rollouts.create(
        "det",
        "1.1.0",
        "default",
        strategy=RolloutPlan(canary=1, bake_seconds=10, timeout_seconds=60),
    )
    assert d.criteria.require_telemetry  # the default
    fleet.follow("1.1.0")
    fleet.rollouts.tick()  # converged at t0: the bake would end at t0 + 10
    canary = fleet.on("1.1.0")
    fleet.clock.now += 69  # the bake and most of the timeout pass with no report
    fleet.rollouts.tick()
    waiting = fleet.rollouts.get(d.id)
    assert waiting is not None and (waiting.status, waiting.wave) == ("running", 0)
    assert waiting.bake is not None and waiting.bake.silent == tuple(canary)
    fleet.clock.now += 2  # past t0 + bake + timeout
    fleet.rollouts.tick()
    done = fleet.rollouts.get(d.id)
    assert done is not None and done.status == "rolled-back"
    assert done.reason == (
        f"no telemetry on 1.1.0 covering the 10 s bake within the 60 s timeout from "
        f"{canary[0]} (never reported on it)"
    )
    assert fleet.on("1.1.0") == []


def test_a_silence_during_the_bake_restarts_it_from_the_next_report(fleet: Fleet) -> None:
    """What a broker outage looks like: reports stop, then the queued ones arrive in one burst."""
    d = fleet.rollouts.create(
        "det", "1.1.0", "default", strategy=RolloutPlan(canary=1, bake_seconds=20)
    )
    fleet.follow("1.1.0")
    fleet.rollouts.tick()
    canary = fleet.on("1.1.0")
    t0 = fleet.clock.now
    fleet.run_for(10, canary, "1.1.0")
    outage = fleet.clock.now
    fleet.clock.now += 30  # 30 s of silence, longer than the bake itself
    fleet.rollouts.tick()
    assert fleet.on("1.1.0") == canary  # the bake did not pass while nothing was heard
    for stamp in (outage + 5, outage + 10, outage + 15, outage + 20, outage + 25, outage + 30):
        fleet.telemetry(canary[0], "1.1.0", stamp=stamp)  # the outbox, delivered at once
    fleet.rollouts.tick()
    baking = fleet.rollouts.get(d.id)
    assert baking is not None and baking.bake is not None
    assert baking.bake.start == fleet.clock.now > t0 + 20  # restarted from the burst
    fleet.run_for(15, canary, "1.1.0")
    assert fleet.on("1.1.0") == canary  # 15 s of the restarted 20 s bake
    fleet.run_for(5, canary, "1.1.0")
    moved = fleet.rollouts.get(d.id)
    assert moved is not None and moved.wave == 1


def test_without_required_telemetry_the_bake_is_a_time(fleet: Fleet) -> None:
    d = fleet.rollouts.create(
        "det",
        "1.1.0",
        "default",
        strategy=RolloutPlan(canary=1, bake_seconds=10),
        criteria=Criteria(require_telemetry=False),
    )
    assert d.to_dict()["criteria_text"] == "error rate ≤ 5.0%; no telemetry required"
    fleet.follow("1.1.0")
    fleet.rollouts.tick()
    fleet.clock.now += 11
    fleet.rollouts.tick()
    moved = fleet.rollouts.get(d.id)
    assert moved is not None and moved.wave == 1


def test_a_report_on_the_old_version_does_not_cover_the_bake(fleet: Fleet) -> None:
    d = fleet.rollouts.create(
        "det", "1.1.0", "default", strategy=RolloutPlan(canary=1, bake_seconds=10)
    )
    fleet.follow("1.1.0")
    fleet.rollouts.tick()
    fleet.run_for(20, fleet.on("1.1.0"), "1.0.0")
    still = fleet.rollouts.get(d.id)
    assert still is not None and (still.status, still.wave) == ("running", 0)


def test_a_wave_that_does_not_converge_in_time_rolls_back(fleet: Fleet) -> None:
    d = fleet.rollouts.create(
        "det", "1.1.0", "default", strategy=RolloutPlan(kind="all", timeout_seconds=120)
    )
    fleet.report(fleet.ids[0], "1.1.0")
    fleet.clock.now += 121
    fleet.rollouts.tick()
    done = fleet.rollouts.get(d.id)
    assert done is not None and done.status == "rolled-back"
    assert done.reason is not None and "did not run 1.1.0 within 120 s" in done.reason
    assert fleet.registry.desired(fleet.ids[0]).releases["det"] == "1.0.0"


def test_a_stale_failure_report_does_not_stop_a_new_deployment(fleet: Fleet) -> None:
    device = fleet.ids[0]
    fleet.report(device, "1.0.0", phase="failed", target="1.1.0", error="old attempt")
    d = fleet.rollouts.create("det", "1.1.0", "default", strategy=RolloutPlan(kind="all"))
    # The device has not read the new generation yet: its report is from before.
    state = DeviceState(
        device_id=device,
        generation=0,
        releases={"det": ReleaseStatus(version="1.0.0", target="1.1.0", phase="failed")},
    )
    fleet.registry.ingest(Inbox(states=[state]))
    fleet.rollouts.tick()
    running = fleet.rollouts.get(d.id)
    assert running is not None and running.status == "running"


def test_operator_rollback_and_conflicts(fleet: Fleet) -> None:
    d = fleet.rollouts.create("det", "1.1.0", "default", strategy=RolloutPlan(kind="all"))
    with pytest.raises(ConfigError, match="still running"):
        fleet.rollouts.create("det", "1.2.0", "default")
    fleet.follow("1.1.0")
    done = fleet.rollouts.rollback(d.id)
    assert done.status == "rolled-back" and done.reason == "rolled back by the operator"
    assert all(fleet.desired_version(i) == "1.0.0" for i in fleet.ids)
    with pytest.raises(ConfigError, match="already rolled back"):
        fleet.rollouts.rollback(d.id)
    with pytest.raises(ConfigError, match="no devices"):
        fleet.rollouts.create("det", "1.1.0", "lab")
    with pytest.raises(ConfigError, match="PEP 440"):
        fleet.rollouts.create("det", "latest", "default")


def test_a_device_without_the_release_is_rolled_back_by_removing_it(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, devices=0)
    fleet.registry.set_group("fresh", "default")
    d = fleet.rollouts.create("det", "1.0.0", "default", strategy=RolloutPlan(kind="all"))
    fleet.rollouts.rollback(d.id)
    assert fleet.registry.desired("fresh").releases == {}


def test_telemetry_is_counted_once(fleet: Fleet) -> None:
    report = Telemetry(
        device_id="dev-00", time=5.0, sequence=1, metrics={"det": ReleaseMetrics(items=3, errors=0)}
    )
    assert fleet.registry.ingest(Inbox(telemetry=[("k1", report)])) == 1
    assert fleet.registry.ingest(Inbox(telemetry=[("k1", report)])) == 0
    assert len(fleet.registry.metrics(devices=["dev-00"])) == 1


def test_enrolment_tokens_are_one_time(fleet: Fleet) -> None:
    token = fleet.registry.create_token(group="lab", tags=["cam"])
    device = fleet.registry.redeem_token(token, "cam-1")
    assert (device.group, device.tags) == ("lab", ("cam",))
    with pytest.raises(ConfigError, match="already used by 'cam-1'"):
        fleet.registry.redeem_token(token, "cam-2")
    with pytest.raises(ConfigError, match="unknown enrolment token"):
        fleet.registry.redeem_token("nope", "cam-2")
    expired = fleet.registry.create_token(ttl=-1)
    with pytest.raises(ConfigError, match="expired"):
        fleet.registry.redeem_token(expired, "cam-3")
