"""The device's side of federated rounds: a real agent, Mosquitto with its ACL, a signed learner release.

Mosquitto runs with passwords and fogline's ACL, so the device may read only
its own ``fl-round`` and ``fl-ack`` and write only its own ``fl-update``. The
learner release (the bundled ``digits_learner`` folder) is signed, served and
installed through the agent's real installer. The test plays the controller
with paho (:class:`RoundController`): it offers rounds (retained frames of a
:class:`RoundTask` and the global model), reads the chunks, and acknowledges
(retained :class:`UpdateAck`).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fogline.examples import digits_device_data, digits_task
from fogline.federated import (
    SecAggDevice,
    SecAggServer,
    SoftmaxTrainer,
    decode_update,
    encode_weights,
)
from fogline.federated._secagg_wire import (
    decode_adverts,
    decode_masked,
    decode_response,
    decode_shares,
    encode_adverts,
    encode_request,
    encode_shares,
    params_from,
)
from fogline.federated.strategy import Weights
from fogline.fleet.agent._agent import Agent, AgentConfig
from fogline.fleet.agent._eligibility import CpuMeter, deferred, ineligible
from fogline.fleet.agent._enrol import DeviceLogin
from fogline.fleet.agent.kinds import Eligibility
from fogline.power import DeferPolicy, Deferral
from fogline.protocol import (
    DesiredState,
    DeviceState,
    RoundTask,
    SecAggSettings,
    UpdateAck,
    UpdateChunk,
    decode_frame,
    encode_frame,
)
from fogline.transport.mqtt import BrokerConfig, Credentials, LocalBroker, MqttUrl
from support.broker import free_port
from support.fleet_agent import ReleaseServer
from support.fleet_learner import learner_release, wide_task

DEVICE = "edge-1"
TASK = "fogline.examples:digits_task"
LEARNER = "digits-learner"
WIDE_TASK = "support.fleet_learner:wide_task"


@dataclass(frozen=True)
class Received:
    chunk: UpdateChunk
    body: bytes
    size: int  # of the whole frame
    at: float  # monotonic


class RoundController:
    """The controller's side, by hand: desired states, rounds and acks out; states and chunks in."""

    def __init__(self, url: MqttUrl, login: Credentials) -> None:
        self.states: dict[str, DeviceState] = {}
        self.chunks: list[Received] = []
        self._lock = threading.Condition()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="controller", protocol=paho.MQTTv5
        )
        self._client.username_pw_set(login.user, login.password)
        self._client.on_connect = lambda client, *_: client.subscribe(
            [("fogline/devices/+/state", 1), ("fogline/devices/+/fl-update", 1)]
        )
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600  # chunks wait for it while it reconnects
        self._client.connect(url.host, url.port, clean_start=False, properties=props)
        self._client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        device, kind = message.topic.split("/")[2:]
        with self._lock:
            if kind == "state":
                self.states[device] = DeviceState.model_validate_json(message.payload)
            else:
                chunk, body = decode_frame(message.payload, UpdateChunk)
                self.chunks.append(Received(chunk, body, len(message.payload), time.monotonic()))
            self._lock.notify_all()

    def _publish(self, device: str, kind: str, payload: bytes) -> None:
        topic = f"fogline/devices/{device}/{kind}"
        self._client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)

    def desire(self, desired: DesiredState) -> None:
        self._publish(DEVICE, "desired", desired.model_dump_json().encode())

    def offer(self, task: RoundTask, model: bytes) -> bytes:
        frame = encode_frame(task, model)
        self._publish(DEVICE, "fl-round", frame)
        return frame

    def ack(self, ack: UpdateAck) -> None:
        self._publish(DEVICE, "fl-ack", ack.model_dump_json().encode())

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
        with self._lock:
            assert self._lock.wait_for(check, timeout), f"timed out waiting for {what}"

    def update(self, round_: int, since: float = 0.0) -> list[Received]:
        """The chunks of round ``round_`` received after ``since``, once every index came."""

        def arrived() -> list[Received]:
            return [
                r
                for r in self.chunks
                if r.chunk.round == round_ and r.chunk.kind == "chunk" and r.at > since
            ]

        self.wait(
            f"the chunks of round {round_}",
            lambda: (
                bool(arrived())
                and {r.chunk.index for r in arrived()} >= set(range(arrived()[0].chunk.total))
            ),
        )
        return arrived()

    def decline(self, round_: int) -> UpdateChunk:
        found: list[UpdateChunk] = []

        def declined() -> bool:
            found[:] = [
                r.chunk
                for r in self.chunks
                if r.chunk.round == round_ and r.chunk.kind == "decline"
            ]
            return bool(found)

        self.wait(f"a decline of round {round_}", declined)
        return found[0]

    def secagg(self, round_: int, stage: str) -> Received:
        """The device's secure-aggregation message of ``stage`` in round ``round_``."""
        found: list[Received] = []

        def arrived() -> bool:
            found[:] = [
                r
                for r in self.chunks
                if (r.chunk.round, r.chunk.kind, r.chunk.stage) == (round_, "secagg", stage)
            ]
            return bool(found)

        self.wait(f"the {stage} of round {round_}", arrived)
        return found[0]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@dataclass
class Fleet:
    broker: LocalBroker
    url: MqttUrl
    device: Credentials
    releases: ReleaseServer
    controller: RoundController
    folder: Path

    def install(self, **learner: Any) -> None:
        """Sign the learner release and make it desired.

        The test machine may well be busy: the learner trains whatever the CPU
        load, unless the test is about that (it gives its own ``eligibility``).
        """
        learner.setdefault("eligibility", {"max_cpu_percent": 100})
        release = learner_release(self.folder / "learner", **learner)
        self.releases.publish(release, LEARNER, "1.0.0")
        self.controller.desire(DesiredState(generation=1, releases={LEARNER: "1.0.0"}))

    def wait_active(self) -> None:
        def active() -> bool:
            state = self.controller.states.get(DEVICE)
            status = None if state is None else state.releases.get(LEARNER)
            return status is not None and (status.version, status.phase) == ("1.0.0", "active")

        self.controller.wait("the learner release to be active", active)

    def agent(self, **extra: Any) -> Agent:
        config = AgentConfig(
            broker=self.url,
            controller=self.releases.url,
            data=self.folder / DEVICE,
            device_id=DEVICE,
            trusted_root=self.releases.root,
            credentials=DeviceLogin(username=self.device.user, password=self.device.password),
            **({"telemetry_period": 5.0, "round_resend_seconds": 1.0} | extra),
        )
        lines: list[str] = []
        agent = Agent(config, on_event=lines.append)
        agent.lines = lines  # type: ignore[attr-defined]
        return agent

    def agent_process(self, log: Path) -> subprocess.Popen[bytes]:
        broker = f"mqtt://{self.device.user}:{self.device.password}@{self.url.host}:{self.url.port}"
        command = [
            sys.executable, "-m", "fogline", "agent", "--broker", broker,
            "--controller", self.releases.url, "--data", str(self.folder / DEVICE),
            "--device-id", DEVICE, "--trusted-root", str(self.releases.root),
            "--telemetry-period", "5",
        ]  # fmt: skip
        with log.open("ab") as out:
            return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    broker = LocalBroker(BrokerConfig(folder=tmp_path / "broker", port=free_port(), auth=True))
    broker.start()
    releases = ReleaseServer(tmp_path / "controller")
    try:
        login = broker.add_controller()
        device = broker.add_device(DEVICE)
        url = MqttUrl.parse(broker.url)
        controller = RoundController(url, login)
        try:
            yield Fleet(broker, url, device, releases, controller, tmp_path)
        finally:
            controller.close()
    finally:
        releases.close()
        broker.stop()


def global_model(task: Callable[[], dict[str, Any]] = digits_task) -> tuple[Weights, bytes]:
    weights = Weights(dict(task()["weights"]))
    return weights, encode_weights(weights)


def round_task(round_: int, model: bytes, **changes: Any) -> RoundTask:
    fields: dict[str, Any] = {
        "run": "r1",
        "round": round_,
        "task": TASK,
        "deadline": time.time() + 60,
        "config": {"epochs": 1},
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "model_size": len(model),
        "chunk_bytes": 1024,
    }
    return RoundTask(**(fields | changes))


def reassemble(received: list[Received]) -> bytes:
    by_index = {r.chunk.index: r.body for r in received}
    return b"".join(by_index[i] for i in range(received[0].chunk.total))


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_device_trains_the_round_and_its_chunks_make_an_update_that_moved_the_weights(
    fleet: Fleet,
) -> None:
    # Prepare
    fleet.install()
    base, model = global_model()
    saved = fleet.folder / DEVICE / "agent" / "fl" / "update.bin"
    with fleet.agent() as agent:
        fleet.wait_active()
        # Execute
        frame = fleet.controller.offer(round_task(1, model), model)
        received = fleet.controller.update(1)
        saved_before_ack = saved.exists()
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="accepted"))
        wait_for("the saved update to go", lambda: not saved.exists())
        counters = agent.round_counters()
        lines = list(agent.lines)  # type: ignore[attr-defined]
    # Assert: the chunks are one update that decodes against the model and trained it
    blob = reassemble(received)
    first = received[0].chunk
    assert first.total > 1 and len({r.chunk.index for r in received}) == first.total
    assert all(r.size <= 1024 for r in received)  # the whole frame within chunk_bytes
    assert first.size == len(blob) and first.sha256 == hashlib.sha256(blob).hexdigest()
    X, y = digits_device_data(DEVICE, clients=3)
    assert first.num_examples == len(y) and first.bytes_down == len(frame)
    assert first.loss is not None and first.train_seconds > 0
    trained = decode_update(blob, base)
    assert np.abs(trained.vector() - base.vector()).max() > 0.01
    evaluate = SoftmaxTrainer().evaluate
    assert evaluate(trained, (X, y)).loss < evaluate(base, (X, y)).loss
    assert first.loss == pytest.approx(evaluate(trained, (X, y)).loss, rel=0.05)
    # saved before it was sent, deleted once accepted; the round is remembered
    assert saved_before_ack
    assert '["r1", 1, "accepted"]' in (saved.parent / "finished.json").read_text()
    assert any(
        line.startswith(f"federated run r1 round 1: trained on {len(y)} examples in ")
        and f"in {first.total} chunk(s)" in line
        for line in lines
    ), lines
    assert "federated run r1 round 1: accepted by the controller" in "\n".join(lines)
    assert counters is not None and counters.rounds_trained == counters.rounds_accepted == 1
    assert counters.bytes_down == len(frame)
    assert counters.bytes_up == sum(r.size for r in received)


def test_a_device_declines_another_task_a_damaged_model_and_a_busy_cpu(fleet: Fleet) -> None:
    # Prepare: the learner trains only when the CPU is idle (0 %), and one core is kept busy
    fleet.install(eligibility={"max_cpu_percent": 0})
    _, model = global_model()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with fleet.agent() as agent:
            fleet.wait_active()
            # Execute
            fleet.controller.offer(round_task(1, model, task="elsewhere:task"), model)
            other = fleet.controller.decline(1)
            fleet.controller.offer(round_task(2, model, model_sha256="0" * 64), model)
            damaged = fleet.controller.decline(2)
            # a busy CPU may pass: the device waits, and declines only near the deadline
            offered = time.time()
            fleet.controller.offer(round_task(3, model, deadline=offered + 6), model)
            cpu = fleet.controller.decline(3)
            declined_after = time.time() - offered
            lines = list(agent.lines)  # type: ignore[attr-defined]
            counters = agent.round_counters()
    finally:
        busy.kill()
        busy.wait()
    # Assert
    assert other.reason == "no active learner release for task elsewhere:task"
    assert damaged.reason is not None and "sha256" in damaged.reason
    assert cpu.reason is not None and cpu.reason.startswith("cpu ") and "> 0%" in cpu.reason
    assert 3.5 <= declined_after <= 6.0  # it waited, and said so, until 2 s before the deadline
    assert any("round 3: waiting to be eligible: cpu" in line for line in lines)
    assert all(d.device_id == DEVICE and d.bytes_down > 0 for d in (other, damaged, cpu))
    assert not [r for r in fleet.controller.chunks if r.chunk.kind == "chunk"]
    assert f"federated run r1 round 3: declined: {cpu.reason}" in lines
    assert counters is not None and counters.rounds_declined == 3 and counters.rounds_trained == 0


def test_after_a_partial_ack_only_the_missing_chunks_are_sent_again(fleet: Fleet) -> None:
    # Prepare: a wider model than digits, so that its update takes several chunks
    fleet.install(task=WIDE_TASK, data="support.fleet_learner:wide_device_data")
    _, model = global_model(wide_task)
    with fleet.agent() as agent:
        fleet.wait_active()
        fleet.controller.offer(round_task(1, model, task=WIDE_TASK), model)
        first = fleet.controller.update(1)
        total = first[0].chunk.total
        stored = [0, total - 1]  # the controller "lost" the chunks in between
        # Execute
        acked = time.monotonic()
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="partial", received=stored))
        fleet.controller.wait(
            "the missing chunks",
            lambda: (
                {r.chunk.index for r in fleet.controller.chunks if r.at > acked}
                >= set(range(1, total - 1))
            ),
        )
        time.sleep(0.3)  # anything else it would (wrongly) send again
        again = [r for r in fleet.controller.chunks if r.at > acked]
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="accepted"))
        wait_for(
            "the round to be finished",
            lambda: "federated run r1 round 1: accepted" in " ".join(agent.lines),  # type: ignore[attr-defined]
        )
        counters = agent.round_counters()
    # Assert
    assert total >= 4
    assert sorted(r.chunk.index for r in again) == list(range(1, total - 1))
    assert {r.chunk.sha256 for r in again} == {first[0].chunk.sha256}
    assert counters is not None and counters.chunks_resent == total - 2
    assert reassemble(first) == reassemble([*[r for r in first if r.chunk.index in stored], *again])


def test_after_a_reconnect_the_missing_chunks_go_without_waiting_for_the_resend_delay(
    fleet: Fleet,
) -> None:
    # Prepare: the controller stored the first half; the agent would wait a minute to resend
    fleet.install(task=WIDE_TASK, data="support.fleet_learner:wide_device_data")
    _, model = global_model(wide_task)
    with fleet.agent(round_resend_seconds=60.0) as agent:
        fleet.wait_active()
        fleet.controller.offer(round_task(1, model, task=WIDE_TASK), model)
        first = fleet.controller.update(1)
        total = first[0].chunk.total
        stored = list(range(total // 2))
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="partial", received=stored))
        # Execute: the broker restarts (it keeps the retained round and ack)
        fleet.broker.stop()
        restarted = time.monotonic()
        fleet.broker.start()
        fleet.controller.wait(
            "the missing chunks after the reconnect",
            lambda: (
                {r.chunk.index for r in fleet.controller.chunks if r.at > restarted}
                >= set(range(total // 2, total))
            ),
        )
        again = [r for r in fleet.controller.chunks if r.at > restarted]
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="accepted"))
        wait_for(
            "the round to be finished",
            lambda: "federated run r1 round 1: accepted" in " ".join(agent.lines),  # type: ignore[attr-defined]
        )
        counters = agent.round_counters()
    # Assert: well within the minute, and only what the controller lacked
    assert time.monotonic() - restarted < 30
    assert sorted(r.chunk.index for r in again) == list(range(total // 2, total))
    assert counters is not None and counters.chunks_resent == total - total // 2
    assert counters.rounds_trained == 1


def test_under_secure_aggregation_the_device_sends_its_keys_and_answers_every_stage(
    fleet: Fleet,
) -> None:
    # Prepare: two sampled devices, the real agent and one played here; the test is the server
    fleet.install()
    base, model = global_model()
    settings = SecAggSettings(
        num_clients=2, dimension=base.size + 1, clip=8.0, bits=16, threshold=2, round_id="r1/1"
    )
    server = SecAggServer(params_from(settings))
    other_change = np.linspace(-0.05, 0.05, base.size)
    other = SecAggDevice("edge-2", settings, other_change, 300)

    def stage(name: str, body: bytes) -> RoundTask:
        return round_task(1, body, stage=name, secagg=settings)

    with fleet.agent() as agent:
        fleet.wait_active()
        # Execute: train, then shares, mask and unmask, each opened on fl-round
        fleet.controller.offer(round_task(1, model, secagg=settings), model)
        keys = fleet.controller.secagg(1, "keys")
        adverts = server.collect_adverts(decode_adverts(keys.body) + decode_adverts(other.keys()))
        offered = encode_adverts(adverts)
        fleet.controller.offer(stage("shares", offered), offered)
        shares = fleet.controller.secagg(1, "shares")
        inbox = server.route_shares(
            decode_shares(shares.body) + decode_shares(other.answer("shares", offered))
        )
        mine, theirs = encode_shares(inbox[DEVICE]), encode_shares(inbox["edge-2"])
        fleet.controller.offer(stage("mask", mine), mine)
        masked = fleet.controller.secagg(1, "mask")
        request = server.collect_masked(
            [
                decode_masked(DEVICE, masked.body, server.params),
                decode_masked("edge-2", other.answer("mask", theirs), server.params),
            ]
        )
        asked = encode_request(request)
        fleet.controller.offer(stage("unmask", asked), asked)
        unmask = fleet.controller.secagg(1, "unmask")
        result = server.aggregate(
            [decode_response(unmask.body), decode_response(other.answer("unmask", asked))]
        )
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="accepted"))
        lines = list(agent.lines)  # type: ignore[attr-defined]
    # Assert: the sum holds the device's weighted change, which trained it; nothing in the clear
    examples = keys.chunk.num_examples
    weight = min(1.0, examples / settings.scale)
    assert set(result.survivors) == {DEVICE, "edge-2"}
    assert result.total[-1] == pytest.approx(weight + 0.3, abs=1e-3)
    change = (result.total[:-1] - 0.3 * other_change) / weight
    trained = base.like(base.vector() + change)
    X, y = digits_device_data(DEVICE, clients=3)
    evaluate = SoftmaxTrainer().evaluate
    assert examples == len(y) and evaluate(trained, (X, y)).loss < evaluate(base, (X, y)).loss
    assert not [r for r in fleet.controller.chunks if r.chunk.kind != "secagg"]
    assert any("sent its keys for secure aggregation" in line for line in lines), lines
    assert "federated run r1 round 1: secure aggregation: answered unmask" in " ".join(lines)


def test_an_agent_killed_after_saving_its_update_resends_it_without_training_again(
    fleet: Fleet,
) -> None:
    # Prepare: an agent process saved and sent its update; the controller stored only chunk 0
    fleet.install()
    base, model = global_model()
    saved = fleet.folder / DEVICE / "agent" / "fl" / "update.bin"
    process = fleet.agent_process(fleet.folder / "agent.log")
    try:
        fleet.wait_active()
        fleet.controller.offer(round_task(1, model, deadline=time.time() + 120), model)
        first = fleet.controller.update(1)
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="partial", received=[0]))
        # Execute: kill -9, then the agent starts again on the same folder
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert saved.exists()
    restarted = time.monotonic()
    total = first[0].chunk.total
    with fleet.agent() as agent:
        fleet.controller.wait(
            "the missing chunks after the restart",
            lambda: (
                {r.chunk.index for r in fleet.controller.chunks if r.at > restarted}
                >= set(range(1, total))
            ),
        )
        again = [r for r in fleet.controller.chunks if r.at > restarted]
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="accepted"))
        wait_for("the saved update to go", lambda: not saved.exists())
        counters = agent.round_counters()
        lines = list(agent.lines)  # type: ignore[attr-defined]
    # Assert: the same update, not trained again, and only the chunks the controller lacked
    assert counters is not None and counters.rounds_trained == 0
    assert counters.chunks_sent == total - 1 and counters.rounds_accepted == 1
    assert f"federated run r1 round 1: resuming the saved update ({total} chunk(s))" in lines
    assert sorted(r.chunk.index for r in again) == list(range(1, total))
    assert {r.chunk.sha256 for r in again} == {first[0].chunk.sha256}
    blob = reassemble([first[0], *again])
    assert hashlib.sha256(blob).hexdigest() == first[0].chunk.sha256
    assert decode_update(blob, base).size == base.size


def test_in_an_async_run_an_update_still_owed_is_sent_before_a_newer_round_replaces_it(
    fleet: Fleet,
) -> None:
    # Prepare: a run with --async; round 1's update takes several chunks
    fleet.install(task=WIDE_TASK, data="support.fleet_learner:wide_device_data")
    _, model = global_model(wide_task)
    config = {"epochs": 1, "async": 1.0}
    with fleet.agent() as agent:
        fleet.wait_active()
        fleet.controller.offer(round_task(1, model, task=WIDE_TASK, config=config), model)
        first = fleet.controller.update(1)
        total = first[0].chunk.total
        # Execute: the controller stored only chunk 0 when round 2 comes
        fleet.controller.ack(UpdateAck(run="r1", round=1, status="partial", received=[0]))
        offered = time.monotonic()
        fleet.controller.offer(round_task(2, model, task=WIDE_TASK, config=config), model)
        fleet.controller.update(2)
        late = [r for r in fleet.controller.chunks if r.at > offered and r.chunk.round == 1]
        lines = list(agent.lines)  # type: ignore[attr-defined]
    # Assert: the rest of round 1 went out once (the controller folds it in later), then round 2
    assert total >= 4
    assert sorted(r.chunk.index for r in late) == list(range(1, total))
    assert {r.chunk.sha256 for r in late} == {first[0].chunk.sha256}
    assert any("round 1: sent late" in line for line in lines), lines


def test_a_device_whose_deferral_policy_says_wait_declines_with_the_reason_then_trains(
    fleet: Fleet,
) -> None:
    # Prepare: the device's own policy (fogline agent --defer) waits for a clean grid
    grid = fleet.folder / "grid.json"
    grid.write_text('{"g_per_kwh": 312}')
    policy = DeferPolicy(carbon={"file": grid, "max_g_per_kwh": 200}, check_every_s=0.1)
    fleet.install()
    _, model = global_model()
    with fleet.agent(defer=policy) as agent:
        fleet.wait_active()
        # Execute: a round while the grid is dirty, then one after it got clean. The device
        # declines a round it waits for in the last quarter of its time, so the deadline is
        # the decline's wait: 16 s leaves a loaded machine 12 s to take the offer (a round
        # seen after its deadline is dropped without a word) and the test ~12 s long
        fleet.controller.offer(round_task(1, model, deadline=time.time() + 16), model)
        dirty = fleet.controller.decline(1)
        grid.write_text('{"g_per_kwh": 120}')
        fleet.controller.offer(round_task(2, model), model)
        fleet.controller.update(2)
        lines = list(agent.lines)  # type: ignore[attr-defined]
        counters = agent.round_counters()
    # Assert: the decline carries the policy's reason, the device said it waited, then trained
    assert dirty.reason is not None
    assert dirty.reason.startswith(f"deferred: carbon intensity 312 g/kWh > 200 (from {grid}, ")
    assert any(
        "round 1: waiting to be eligible: deferred: carbon intensity 312 g/kWh" in line
        for line in lines
    ), lines
    assert f"federated run r1 round 1: declined: {dirty.reason}" in lines
    assert counters is not None and counters.rounds_declined == 1
    assert counters.rounds_trained == 1


def test_a_round_due_before_the_policys_next_window_is_declined_at_once() -> None:
    # A window that opened an hour ago and closed half an hour ago (local time, as the policy
    # reads it without tz) stays closed for the next 23 hours.
    now = time.time()
    start, end = time.localtime(now - 3600), time.localtime(now - 1800)
    window = f"{start.tm_hour:02d}:{start.tm_min:02d}-{end.tm_hour:02d}:{end.tm_min:02d}"
    deferral = Deferral(DeferPolicy(windows=[window]))

    soon, hopeless = deferred(deferral, deadline=now + 60)
    later, waits = deferred(deferral, deadline=now + 86400)

    assert hopeless and soon is not None
    assert soon.startswith(f"deferred: outside the window {window} (now ")
    assert soon.endswith(f"; no window opens before the deadline (next at {window[:5]} local time)")
    assert not waits and later is not None and "no window opens" not in later


def test_require_mains_and_a_mains_policy_read_the_power_supply_alike(tmp_path: Path) -> None:
    # Prepare: a laptop unplugged, then plugged in (a folder laid out like /sys/class/power_supply)
    power = tmp_path / "power_supply"
    for name, files in {
        "AC": {"type": "Mains", "online": "0"},
        "BAT0": {"type": "Battery", "capacity": "38", "status": "Discharging"},
    }.items():
        (power / name).mkdir(parents=True)
        for key, value in files.items():
            (power / name / key).write_text(value + "\n")
    rule, cpu = Eligibility(max_cpu_percent=100, require_mains=True), CpuMeter()
    deferral = Deferral(DeferPolicy(mains=True, power_supply=power))

    # Execute
    unplugged = ineligible(rule, cpu, power), deferral.check().allowed
    (power / "AC" / "online").write_text("1\n")
    plugged = ineligible(rule, cpu, power), deferral.check().allowed

    # Assert: the learner's rule and the policy agree, both times
    assert unplugged == ("on battery (38 %)", False)
    assert plugged == (None, True)
