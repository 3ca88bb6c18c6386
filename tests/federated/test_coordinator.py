"""The controller's coordinator of federated rounds, on a real SQLite file, with devices played here.

The coordinator is the thing under test: its store is real (``federated.db``),
its updates are real frames of real training on the digits task, and what it
publishes is read back and decoded. What stands in is only its surroundings
(the MQTT session, the registry's online devices, the repository), recorded
by :class:`Fleet`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fogline.errors import ConfigError, Conflict
from fogline.federated import (
    Coordinator,
    FieldQuantizer,
    FleetHooks,
    RunStore,
    SecAggDevice,
    SplitSpec,
    decode_update,
    decode_weights,
    encode_update,
    load_task,
    split_clients,
)
from fogline.federated.strategy import Update, strategy_for
from fogline.protocol import RoundTask, RunSpec, UpdateAck, UpdateChunk, decode_frame, encode_frame

TASK = "fogline.examples:digits_task"
DEVICES = ["edge-0", "edge-1", "edge-2"]


class Fleet:
    """The coordinator's surroundings: what it publishes, who is online, releases made."""

    def __init__(self, folder: Path, online: list[str]) -> None:
        self.online = list(online)
        self.retained: dict[str, bytes] = {}
        self.released: list[tuple[str, str, dict[str, Any]]] = []
        self.deployed: list[tuple[str, str, str]] = []
        self.newest: tuple[str, Path] | None = None
        self.hooks = FleetHooks(
            publish=self.publish,
            members=lambda group: list(self.online),
            newest_release=lambda name: self.newest,
            create_release=self.create_release,
            deploy=self.deploy,
            work=folder / "work",
        )

    def publish(self, topic: str, payload: bytes, retain: bool) -> None:
        assert retain
        self.retained[topic] = payload

    def create_release(
        self, folder: Path, name: str, version: str, canary: str, provenance: dict[str, Any]
    ) -> None:
        assert (folder / "model.onnx").exists() and (folder / canary).exists()
        self.released.append((name, version, provenance))

    def deploy(self, name: str, version: str, group: str, spec: RunSpec) -> str:
        self.deployed.append((name, version, group))
        return "dep-1"

    def task(self, device: str) -> tuple[RoundTask, bytes] | None:
        payload = self.retained.get(f"fogline/devices/{device}/fl-round")
        return decode_frame(payload, RoundTask) if payload else None

    def ack(self, device: str) -> UpdateAck | None:
        payload = self.retained.get(f"fogline/devices/{device}/fl-ack")
        return UpdateAck.model_validate_json(payload) if payload else None


@contextmanager
def running(folder: Path) -> Iterator[tuple[Fleet, RunStore, Coordinator]]:
    """A coordinator on ``folder/federated.db`` among a recorded fleet; stopped at the end."""
    fleet = Fleet(folder, DEVICES)
    store = RunStore(folder / "federated.db")
    coordinator = Coordinator(store, fleet.hooks, tick=0.05).start()
    try:
        yield fleet, store, coordinator
    finally:
        coordinator.stop()
        store.close()


@pytest.fixture(scope="module")
def task():  # type: ignore[no-untyped-def]
    return load_task(TASK)


@pytest.fixture(scope="module")
def shards(task):  # type: ignore[no-untyped-def]
    parts = split_clients(task.train, len(DEVICES), SplitSpec("iid"), seed=0)
    return dict(zip(DEVICES, parts, strict=True))


def train(task, shards, device: str, round_task: RoundTask, model: bytes, chunk: int = 0):  # type: ignore[no-untyped-def]
    """What a device sends for a round: its update as UpdateChunk frames."""
    weights = decode_weights(model)
    trainer = task.trainer(1)
    update = trainer.fit(
        device, weights, shards[device], round_task.config, np.random.default_rng(0)
    )
    blob = encode_update(update.weights, weights)
    size = chunk or len(blob)
    pieces = [blob[i : i + size] for i in range(0, len(blob), size)]
    return [
        encode_frame(
            UpdateChunk(
                device_id=device, run=round_task.run, round=round_task.round, index=i,
                total=len(pieces), size=len(blob), sha256=hashlib.sha256(blob).hexdigest(),
                num_examples=update.num_examples, bytes_down=len(model),
            ),
            piece,
        )
        for i, piece in enumerate(pieces)
    ]  # fmt: skip


def wait(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def spec(**options: Any) -> RunSpec:
    return RunSpec(**{"task": TASK, "release": "digits-fl", "rounds": 3, "deadline": 30.0,
                      "seed": 1, "min_clients": 2, **options})  # fmt: skip


def play_round(coordinator, fleet, task, shards, number: int, devices=DEVICES) -> None:  # type: ignore[no-untyped-def]
    wait(lambda: all((t := fleet.task(d)) is not None and t[0].round == number for d in devices))
    for device in devices:
        header, model = fleet.task(device)  # type: ignore[misc]
        assert hashlib.sha256(model).hexdigest() == header.model_sha256
        for frame in train(task, shards, device, header, model, chunk=600):
            coordinator.submit(device, frame)


def test_a_run_trains_gates_releases_and_deploys_a_canary(tmp_path, task, shards) -> None:  # type: ignore[no-untyped-def]
    with running(tmp_path) as (fleet, _store, coordinator):
        run = coordinator.start_run(spec(then="canary"))
        for number in (1, 2, 3):
            play_round(coordinator, fleet, task, shards, number)
        wait(lambda: coordinator.describe(run["id"])["status"] == "finished")  # type: ignore[index]
        found = coordinator.describe(run["id"])
        assert found is not None
        rounds = found["rounds"]
        assert [r["status"] for r in rounds] == ["closed"] * 3
        assert all(r["participants"] == 3 for r in rounds)
        # measured 0.92 after three rounds of three iid devices; 10% is the untrained model
        assert rounds[-1]["accuracy"] > 0.85 and rounds[-1]["accuracy"] >= rounds[0]["accuracy"]
        # every upload was counted: float16 deltas, deflated, in 600-byte chunks plus headers
        assert all(0 < r["bytes_up"] < 3 * 4 * 650 for r in rounds)
        assert all(r["bytes_down"] > 0 for r in rounds)
        [(name, version, provenance)] = fleet.released
        assert (name, version) == ("digits-fl", "1.0.0")
        assert provenance["strategy"] == "fedavg" and provenance["participants"] == [3, 3, 3]
        assert fleet.deployed == [("digits-fl", "1.0.0", "default")]
        gate = found["result"]["gate"]
        assert gate["passed"] and gate["accuracy"] == pytest.approx(
            rounds[-1]["accuracy"], abs=0.01
        )
        # the rounds are withdrawn: nothing retained is left for a device to act on
        assert all(fleet.task(d) is None for d in DEVICES)


def test_bad_updates_are_refused_with_a_reason_and_the_round_goes_on(
    tmp_path, task, shards
) -> None:  # type: ignore[no-untyped-def]
    with running(tmp_path) as (fleet, _store, coordinator):
        run = coordinator.start_run(spec(rounds=1, fraction=0.5, min_clients=2))
        wait(lambda: sum(fleet.task(d) is not None for d in DEVICES) == 2)
        sampled = [d for d in DEVICES if fleet.task(d) is not None]
        outsider = next(d for d in DEVICES if d not in sampled)
        header, model = fleet.task(sampled[0])  # type: ignore[misc]
        good = train(task, shards, sampled[0], header, model)

        def refused(device: str, frames: list[bytes], reason: str) -> None:
            for frame in frames:
                coordinator.submit(device, frame)
            wait(lambda: (a := fleet.ack(device)) is not None and a.status == "refused")
            ack = fleet.ack(device)
            assert ack is not None and reason in (ack.reason or ""), ack
            fleet.retained.pop(f"fogline/devices/{device}/fl-ack")

        # a device that was not sampled
        refused(outsider, train(task, shards, outsider, header, model), "not sampled")
        # a run and a round that do not exist
        bogus = UpdateChunk(
            device_id=sampled[0], run="nope", round=1, sha256="0" * 64, num_examples=1
        )
        refused(sampled[0], [encode_frame(bogus, b"x")], "run 'nope' does not exist")
        bogus = bogus.model_copy(update={"run": run["id"], "round": 7})
        refused(sampled[0], [encode_frame(bogus, b"x")], "round 7")
        # NaN in the change: refused, counted, and this device's round is over
        weights = decode_weights(model)
        nan = weights.like(np.full(weights.size, np.nan))
        blob = encode_update(nan, weights)
        frame = UpdateChunk(
            device_id=sampled[1], run=run["id"], round=1, size=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(), num_examples=10,
        )  # fmt: skip
        refused(sampled[1], [encode_frame(frame, blob)], "NaN or Inf")
        # the good one, then the same again: accepted once, the copy counted as a duplicate
        for frame in good + good:
            coordinator.submit(sampled[0], frame)
        wait(lambda: coordinator.counters["duplicates"] == 1)
        ack = fleet.ack(sampled[0])
        assert ack is not None and ack.status == "accepted"
        # both sampled answered (one accepted, one refused): the round closes short of updates
        wait(lambda: coordinator.describe(run["id"])["status"] in ("finished", "gate-failed"))  # type: ignore[index]
        found = coordinator.describe(run["id"])
        assert found is not None
        [round1] = found["rounds"]
        assert round1["status"] == "failed" and "1 update(s)" in round1["reason"]
        assert coordinator.counters["refused"] >= 4


def test_a_restarted_coordinator_resumes_the_open_round_with_what_it_acknowledged(
    tmp_path, task, shards
) -> None:  # type: ignore[no-untyped-def]
    fleet = Fleet(tmp_path, DEVICES)
    store = RunStore(tmp_path / "federated.db")
    first = Coordinator(store, fleet.hooks, tick=0.05).start()
    run = first.start_run(spec(rounds=1))
    wait(lambda: all(fleet.task(d) is not None for d in DEVICES))
    header, model = fleet.task(DEVICES[0])  # type: ignore[misc]
    frames = train(task, shards, DEVICES[0], header, model, chunk=500)
    assert len(frames) >= 2
    for frame in frames:
        first.submit(DEVICES[0], frame)
    wait(lambda: (a := fleet.ack(DEVICES[0])) is not None and a.status == "accepted")
    # half of the second device's chunks are stored and acknowledged, then the controller dies
    frames1 = train(task, shards, DEVICES[1], header, model, chunk=500)
    first.submit(DEVICES[1], frames1[0])
    wait(lambda: (a := fleet.ack(DEVICES[1])) is not None and a.received == [0])
    first.stop()
    store.close()

    store = RunStore(tmp_path / "federated.db")
    second = Coordinator(store, fleet.hooks, tick=0.05).start()
    try:
        found = second.describe(run["id"])
        assert found is not None and found["status"] == "running"
        assert found["current"]["status"] == "open"
        assert [u["device"] for u in found["current"]["updates"]] == [DEVICES[0]]
        for frame in frames1[1:]:  # the device sends only what the retained ack lacks
            second.submit(DEVICES[1], frame)
        for frame in train(task, shards, DEVICES[2], header, model):
            second.submit(DEVICES[2], frame)
        wait(lambda: second.describe(run["id"])["status"] == "finished")  # type: ignore[index]
        [round1] = second.describe(run["id"])["rounds"]  # type: ignore[index]
        assert round1["status"] == "closed" and round1["participants"] == 3
    finally:
        second.stop()
        store.close()


def test_a_round_closes_at_its_deadline_with_the_updates_it_has(tmp_path, task, shards) -> None:  # type: ignore[no-untyped-def]
    with running(tmp_path) as (fleet, _store, coordinator):
        run = coordinator.start_run(spec(rounds=1, deadline=3.0))
        play_round(coordinator, fleet, task, shards, 1, devices=DEVICES[:2])  # one straggles
        wait(lambda: coordinator.describe(run["id"])["status"] == "finished")  # type: ignore[index]
        [round1] = coordinator.describe(run["id"])["rounds"]  # type: ignore[index]
        assert round1["status"] == "closed" and round1["participants"] == 2
        assert round1["closed"] - round1["opened"] >= 2.9
        ack = fleet.ack(DEVICES[2])
        assert ack is not None and ack.status == "closed"  # the straggler is told


def test_the_gate_refuses_a_model_worse_than_the_newest_release(tmp_path, task, shards) -> None:  # type: ignore[no-untyped-def]
    with running(tmp_path) as (fleet, _store, coordinator):
        # the newest release: a trained model from a first run
        first = coordinator.start_run(spec(rounds=2))
        for number in (1, 2):
            play_round(coordinator, fleet, task, shards, number)
        wait(lambda: coordinator.describe(first["id"])["status"] == "finished")  # type: ignore[index]
        fleet.newest = ("1.0.0", tmp_path / "work" / first["id"] / "release")
        # a run whose only round fails leaves the untrained model: far worse, refused
        fleet.online = DEVICES[:1]
        with pytest.raises(ConfigError, match="1 online device"):
            coordinator.start_run(spec(rounds=1, min_clients=2))
        fleet.online = DEVICES
        second = coordinator.start_run(spec(rounds=1, deadline=1.0))
        with pytest.raises(Conflict, match="already trains release 'digits-fl'"):
            coordinator.start_run(spec())
        wait(lambda: coordinator.describe(second["id"])["status"] == "gate-failed")  # type: ignore[index]
        found = coordinator.describe(second["id"])
        assert found is not None
        assert "below release digits-fl 1.0.0" in found["reason"]
        assert len(fleet.released) == 1  # only the first run's model was signed


def secagg_frame(device: str, task: RoundTask, stage: str, body: bytes, examples: int = 0) -> bytes:
    header = UpdateChunk(
        device_id=device, run=task.run, round=task.round, kind="secagg", stage=stage,
        num_examples=examples, bytes_down=task.model_size,
    )  # fmt: skip
    return encode_frame(header, body)


def test_secure_aggregation_over_frames_survives_a_device_dropping_after_sharing_keys(
    tmp_path, task, shards
) -> None:  # type: ignore[no-untyped-def]
    with running(tmp_path) as (fleet, store, coordinator):
        run = coordinator.start_run(spec(rounds=1, secagg=True, deadline=4.0))
        wait(lambda: all(fleet.task(d) is not None for d in DEVICES))
        header, model = fleet.task(DEVICES[0])  # type: ignore[misc]
        assert header.secagg is not None and header.secagg.bits == 16
        base = decode_weights(model)
        devices, updates = {}, {}
        for device in DEVICES:
            update = task.trainer(1).fit(device, base, shards[device], header.config,
                                         np.random.default_rng(0))  # fmt: skip
            updates[device] = update
            change = update.weights.vector() - base.vector()
            devices[device] = SecAggDevice(device, header.secagg, change, update.num_examples)
            coordinator.submit(device, secagg_frame(device, header, "keys", devices[device].keys(),
                                                    update.num_examples))  # fmt: skip
        for stage in ("shares", "mask", "unmask"):
            alive = DEVICES if stage == "shares" else DEVICES[:2]  # edge-2 drops after sharing
            wait(lambda s=stage, a=alive: all(  # type: ignore[misc]
                (t := fleet.task(d)) is not None and t[0].stage == s for d in a))  # fmt: skip
            for device in alive:
                stage_task, body = fleet.task(device)  # type: ignore[misc]
                reply = devices[device].answer(stage, body)
                coordinator.submit(device, secagg_frame(device, stage_task, stage, reply))
        wait(lambda: coordinator.describe(run["id"])["status"] == "finished")  # type: ignore[index]
        found = coordinator.describe(run["id"])
        assert found is not None
        [round1] = found["rounds"]
        assert round1["status"] == "closed" and round1["participants"] == 2, round1
        # what the controller ended with is the survivors' examples-weighted mean
        survivors = [updates[d] for d in DEVICES[:2]]
        expected = strategy_for("fedavg").aggregate(1, base, survivors).weights.vector()
        got = decode_weights(store.run(run["id"])["model"]).vector()  # type: ignore[index]
        # within the field's rounding: at most sum_error_bound on the weighted sum of two rows
        # (the change and its weight), divided by the sum of the two weights
        weights = sum(min(1.0, u.num_examples / header.secagg.scale) for u in survivors)
        bound = FieldQuantizer(16, 8.0, num_clients=3).sum_error_bound(2)
        assert np.max(np.abs(got - expected)) <= 2 * bound / weights
        # every device's bytes were counted; the one that dropped is recorded as such
        statuses = {u["device"]: u["status"] for u in store.updates(run["id"], 1)}
        assert statuses == {"edge-0": "accepted", "edge-1": "accepted", "edge-2": "dropped"}
        # the signed release says how it was aggregated
        [(_, _, provenance)] = fleet.released
        assert provenance["secure_aggregation"]["bits"] == 16
        assert provenance["participants"] == [2]


def test_with_async_a_late_update_is_folded_into_the_next_round_by_its_staleness(
    tmp_path, task, shards
) -> None:  # type: ignore[no-untyped-def]
    with running(tmp_path) as (fleet, store, coordinator):
        run = coordinator.start_run(spec(rounds=2, deadline=2.0, asynchronous=True))
        wait(lambda: all(fleet.task(d) is not None for d in DEVICES))
        header1, model1 = fleet.task(DEVICES[0])  # type: ignore[misc]
        assert header1.config["async"] == 1.0
        for device in DEVICES[:2]:
            for frame in train(task, shards, device, header1, model1):
                coordinator.submit(device, frame)
        # edge-2 straggles past round 1's deadline: its round is not withdrawn, nor closed
        wait(lambda: (t := fleet.task(DEVICES[0])) is not None and t[0].round == 2)
        assert fleet.ack(DEVICES[2]) is None
        late = train(task, shards, DEVICES[2], header1, model1)
        for frame in late:
            coordinator.submit(DEVICES[2], frame)
        wait(lambda: (a := fleet.ack(DEVICES[2])) is not None and a.status == "accepted")
        assert store.update(run["id"], 1, DEVICES[2])["status"] == "late"  # type: ignore[index]
        header2, model2 = fleet.task(DEVICES[0])  # type: ignore[misc]
        fresh = {}
        for device in DEVICES:
            frames = train(task, shards, device, header2, model2)
            fresh[device] = frames
            for frame in frames:
                coordinator.submit(device, frame)
        wait(lambda: coordinator.describe(run["id"])["status"] == "finished")  # type: ignore[index]
        found = coordinator.describe(run["id"])
        assert found is not None
        round2 = found["rounds"][1]
        assert round2["participants"] == 4 and "3 on time and 1 late" in round2["reason"]
        assert store.update(run["id"], 1, DEVICES[2])["status"] == "folded"  # type: ignore[index]
        # the aggregate is FedAvg of the three fresh updates and the late change at weight 2**-0.5
        base1, base2 = decode_weights(model1), decode_weights(model2)

        def weights(frames: list[bytes], base: Any) -> Any:
            header, body = decode_frame(frames[0], UpdateChunk)
            return decode_update(body, base), header.num_examples

        updates = []
        for device in DEVICES:
            w, n = weights(fresh[device], base2)
            updates.append(Update(device, w, n))
        w_late, n_late = weights(late, base1)
        moved = base2.like(base2.vector() + 2**-0.5 * (w_late.vector() - base1.vector()))
        updates.append(Update("late", moved, n_late))
        expected = strategy_for("fedavg").aggregate(2, base2, updates).weights.vector()
        got = decode_weights(store.run(run["id"])["model"]).vector()  # type: ignore[index]
        assert np.allclose(got, expected, atol=1e-6)
