"""The device agent against a real Mosquitto and a real signed repository over HTTP.

The test plays the controller: it publishes retained desired states and
commands with paho and reads the device's retained state, presence and
telemetry. Releases are real TUF releases of the digits model.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fogline.examples import digits_model_path
from fogline.fleet.agent._agent import Agent, AgentConfig
from fogline.fleet.agent._enrol import read_credentials
from fogline.fleet.agent._telemetry import TelemetryReporter, TelemetryTransport
from fogline.model import load_engine
from fogline.protocol import Command, DesiredState, DeviceTopics, Telemetry
from fogline.security import SENT_CHECKPOINT, Checkpoint, read_checkpoint, verify_log
from fogline.store import OutboxSender, ResultStore
from fogline.transport.mqtt import MqttUrl
from support.agent_fixtures import make_agent
from support.broker import Mosquitto, free_port
from support.fleet_agent import (
    ENROL_TOKEN,
    FakeController,
    ReleaseServer,
    check_active,
    model_release,
    pipeline_release,
    release_phase,
)
from support.serve_repository import make_repository


def audit_events(data: Path) -> list[tuple[str, str | None, str | None]]:
    """The device's audit log, checked whole, as (event, version, by) — checkpoints left out."""
    report = verify_log(data / "audit.jsonl")
    assert report.intact, report.damages
    lines = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    return [
        (e["event"], e["fields"].get("version"), e["fields"].get("by"))
        for e in lines
        if e["event"] != "audit.checkpoint"
    ]


def active(phase: str, version: str, name: str = "digits"):  # type: ignore[no-untyped-def]
    return lambda state: release_phase(state, name)[::2] == (version, phase)


def test_converges_to_a_release_and_reports_it_active(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    # Prepare
    releases.publish(
        model_release(tmp_path / "r1"),
        "digits",
        "1.0.0",
        sample="sample.npz",
        canary="canary.npz",
        latency_budget_ms=1000,
    )
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    # Execute
    with make_agent(tmp_path, broker, releases) as agent:
        state = controller.wait_state("cam-1", active("active", "1.0.0"))
        controller.wait(lambda: controller.presence.get("cam-1") is True, what="presence online")
        controller.wait(
            lambda: any(
                body["metrics"].get("digits", {}).get("accuracy")
                for _, body in controller.telemetry
            ),
            what="telemetry with the canary accuracy",
        )
    # Assert
    assert state.generation == 1 and state.health == "ok"
    assert check_active(tmp_path / "cam-1", "digits") == "1.0.0"
    report = controller.telemetry[-1][1]
    Telemetry.model_validate(report)  # the payload is the protocol's body itself
    assert report["device_id"] == "cam-1" and report["versions"] == {"digits": "1.0.0"}
    assert report["metrics"]["digits"]["accuracy"] > 0.9
    # what ran the model in the health check: the provider this machine's engine picks
    assert report["metrics"]["digits"]["device"] == load_engine(digits_model_path()).device
    assert report["metrics"]["digits"]["device_fallback"] is None
    assert report["memory_mb"] > 0
    controller.wait(lambda: controller.presence.get("cam-1") is False, what="presence offline")
    assert any("1.0.0 active" in line for line in agent.lines)  # type: ignore[attr-defined]


def test_a_release_failing_its_health_check_is_not_activated(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    # Prepare: 1.0.0 runs; 1.1.0 can never meet its latency budget
    releases.publish(model_release(tmp_path / "r1"), "digits", "1.0.0")
    releases.publish(
        model_release(tmp_path / "r2", seed=2),
        "digits",
        "1.1.0",
        sample="sample.npz",
        latency_budget_ms=0.000001,
    )
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    with make_agent(tmp_path, broker, releases):
        controller.wait_state("cam-1", active("active", "1.0.0"))
        # Execute
        controller.desire("cam-1", DesiredState(generation=2, releases={"digits": "1.1.0"}))
        state = controller.wait_state("cam-1", active("failed", "1.0.0"))
        time.sleep(1.0)  # it is not tried again for the same generation
        again = controller.states["cam-1"]
    # Assert
    status = state.releases["digits"]
    assert status.target == "1.1.0" and state.generation == 2
    assert status.error is not None and "budget" in status.error
    assert again.releases["digits"].since == status.since
    assert check_active(tmp_path / "cam-1", "digits") == "1.0.0"


def test_a_sample_that_does_not_fit_the_model_fails_the_check(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    import numpy as np

    folder = model_release(tmp_path / "r1")
    np.savez(folder / "sample.npz", pixels=np.zeros((1, 8, 8), np.float32))  # no channel axis
    releases.publish(folder, "digits", "1.0.0", sample="sample.npz")
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    with make_agent(tmp_path, broker, releases):
        state = controller.wait_state("cam-1", lambda s: release_phase(s, "digits")[2] == "failed")
    assert state.releases["digits"].version is None
    assert "shape" in (state.releases["digits"].error or "")
    assert not (tmp_path / "cam-1" / "active" / "digits").exists()


def test_rollback_command_and_rollback_in_the_desired_state(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    releases.publish(model_release(tmp_path / "r1"), "digits", "1.0.0")
    releases.publish(model_release(tmp_path / "r2", seed=2), "digits", "1.1.0")
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    with make_agent(tmp_path, broker, releases):
        controller.wait_state("cam-1", active("active", "1.0.0"))
        controller.desire("cam-1", DesiredState(generation=2, releases={"digits": "1.1.0"}))
        controller.wait_state("cam-1", active("active", "1.1.0"))
        # Execute: the command takes it back and holds it there for this generation
        controller.command("cam-1", Command(id="c-1", kind="rollback", release="digits"))
        state = controller.wait_state("cam-1", active("rolled-back", "1.0.0"))
        assert check_active(tmp_path / "cam-1", "digits") == "1.0.0"
        time.sleep(1.0)
        assert release_phase(controller.states["cam-1"], "digits")[0] == "1.0.0"
        # A newer generation goes forward again, then the controller rolls it back itself
        controller.desire("cam-1", DesiredState(generation=3, releases={"digits": "1.1.0"}))
        controller.wait_state("cam-1", active("active", "1.1.0"))
        controller.desire(
            "cam-1",
            DesiredState(generation=4, releases={"digits": "1.0.0"}, rollback={"digits": "1.0.0"}),
        )
        final = controller.wait_state("cam-1", active("active", "1.0.0"))
    assert state.releases["digits"].phase == "rolled-back"
    assert final.generation == 4
    assert check_active(tmp_path / "cam-1", "digits") == "1.0.0"
    assert audit_events(tmp_path / "cam-1") == [
        ("key.created", None, None),  # the device key, made at first start
        ("release.installed", "1.0.0", None),
        ("release.installed", "1.1.0", None),
        ("release.rolled_back", "1.0.0", "command"),
        ("release.installed", "1.1.0", None),
        ("release.rolled_back", "1.0.0", "desired"),
    ]


def test_a_command_sent_while_the_agent_is_away_waits_in_its_session(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    releases.publish(model_release(tmp_path / "r1"), "digits", "1.0.0")
    releases.publish(model_release(tmp_path / "r2", seed=2), "digits", "1.1.0")
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    with make_agent(tmp_path, broker, releases):
        controller.wait_state("cam-1", active("active", "1.0.0"))
        controller.desire("cam-1", DesiredState(generation=2, releases={"digits": "1.1.0"}))
        controller.wait_state("cam-1", active("active", "1.1.0"))
    controller.wait(lambda: controller.presence.get("cam-1") is False, what="offline")
    # Execute: the command is sent while the device is away, and twice (at least once)
    rollback = Command(id="c-7", kind="rollback", release="digits")
    controller.command("cam-1", rollback)
    controller.command("cam-1", rollback)
    started = time.time()
    with make_agent(tmp_path, broker, releases):
        state = controller.wait_state(
            "cam-1", lambda s: s.time > started and active("rolled-back", "1.0.0")(s)
        )
        time.sleep(1.0)
        later = controller.states["cam-1"]
    assert check_active(tmp_path / "cam-1", "digits") == "1.0.0"
    assert later.releases["digits"] == state.releases["digits"]  # the duplicate did nothing


def test_an_older_release_without_rollback_is_refused(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    releases.publish(model_release(tmp_path / "r1"), "digits", "1.0.0")
    releases.publish(model_release(tmp_path / "r2", seed=2), "digits", "1.1.0")
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.1.0"}))
    with make_agent(tmp_path, broker, releases):
        controller.wait_state("cam-1", active("active", "1.1.0"))
        controller.desire("cam-1", DesiredState(generation=2, releases={"digits": "1.0.0"}))
        state = controller.wait_state("cam-1", active("refused", "1.1.0"))
    assert "older" in (state.releases["digits"].error or "")
    assert check_active(tmp_path / "cam-1", "digits") == "1.1.0"
    assert audit_events(tmp_path / "cam-1")[-1] == ("release.refused", "1.0.0", None)


def test_telemetry_is_queued_while_the_broker_is_down_and_delivered_after(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    releases.publish(model_release(tmp_path / "r1"), "digits", "1.0.0")
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    with make_agent(tmp_path, broker, releases) as agent:
        controller.wait_state("cam-1", active("active", "1.0.0"))
        assert agent.store is not None
        # Execute: the broker goes away; the model keeps running and reports pile up
        broker.stop()
        queued_before = agent.store.stats().pending
        deadline = time.monotonic() + 30
        while agent.store.stats().pending < queued_before + 5:
            assert time.monotonic() < deadline, "telemetry was not queued while offline"
            time.sleep(0.1)
        assert check_active(tmp_path / "cam-1", "digits") == "1.0.0"
        broker.start()
        deadline = time.monotonic() + 60
        while agent.store.stats().pending > 0:
            assert time.monotonic() < deadline, f"outbox not drained: {agent.store.stats()}"
            time.sleep(0.1)
        produced = agent.store.stats().produced
        sequences = lambda: {b["sequence"] for _, b in controller.telemetry}  # noqa: E731
        controller.wait(lambda: set(range(produced)) <= sequences(), what="every report")
        dropped = agent.store.stats().dropped
    # Assert: nothing lost; a redelivery carries the same key as the first delivery
    by_key: dict[str, int] = {}
    for key, body in controller.telemetry:
        sequence = body["sequence"]
        assert by_key.setdefault(key, sequence) == sequence
    assert len(set(by_key.values())) == len(by_key)
    assert dropped == 0
    # Each report carries the device's audit log signed at its head (the install is in it).
    points = [body["audit"] for _, body in controller.telemetry if body.get("audit")]
    newest = Checkpoint.from_dict(max(points, key=lambda point: point["seq"]))
    assert newest.seq >= 1
    assert verify_log(tmp_path / "cam-1" / "audit.jsonl", external=newest).intact
    # The agent keeps a copy of the newest one it sent, outside the log, for a local verify.
    kept = read_checkpoint(tmp_path / "cam-1" / SENT_CHECKPOINT)
    assert kept.seq >= newest.seq  # a report may have gone out after the last one counted
    assert verify_log(tmp_path / "cam-1" / "audit.jsonl", external=kept).intact


def test_telemetry_survives_an_agent_restart(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    releases.publish(model_release(tmp_path / "r1"), "digits", "1.0.0")
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    broker.stop()  # offline from the start: everything stays in the outbox
    agent = make_agent(tmp_path, broker, releases)
    with agent:
        assert agent.store is not None
        deadline = time.monotonic() + 30
        while agent.store.stats().pending < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    broker.start()
    with make_agent(tmp_path, broker, releases) as again:
        assert again.store is not None
        controller.wait_state("cam-1", active("active", "1.0.0"))
        deadline = time.monotonic() + 60
        while again.store.stats().pending > 0 or again.store.stats().delivered < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        controller.wait(
            lambda: {0, 1, 2} <= {b["sequence"] for _, b in controller.telemetry},
            what="the reports queued before the restart",
        )


def test_a_pipeline_release_runs_as_a_child_and_is_restarted_after_a_crash(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    releases.publish(pipeline_release(tmp_path / "p1"), "scanner", "1.0.0")
    controller.desire("cam-1", DesiredState(generation=1, releases={"scanner": "1.0.0"}))
    with make_agent(tmp_path, broker, releases) as agent:
        controller.wait_state("cam-1", active("active", "1.0.0", "scanner"))
        assert agent.supervisor is not None
        deadline = time.monotonic() + 30
        while agent.supervisor.pid("scanner") is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first = agent.supervisor.pid("scanner")
        assert first is not None
        # A cluster node reads which fleet device it is from its environment.
        assert psutil.Process(first).environ()["FOGLINE_DEVICE_ID"] == "cam-1"
        controller.wait(
            lambda: any(
                body["metrics"].get("scanner", {}).get("items", 0) > 0
                for _, body in controller.telemetry
            ),
            what="telemetry with the pipeline's throughput",
        )
        # Execute: the child dies
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while agent.supervisor.pid("scanner") in (None, first):
            assert time.monotonic() < deadline, "the pipeline was not restarted"
            time.sleep(0.05)
        second = agent.supervisor.pid("scanner")
        # The restart command starts it again on purpose
        controller.command("cam-1", Command(id="r-1", kind="restart", release="scanner"))
        deadline = time.monotonic() + 30
        while agent.supervisor.pid("scanner") in (None, second):
            assert time.monotonic() < deadline, "the restart command did nothing"
            time.sleep(0.05)
        # A dropped release is stopped
        controller.desire("cam-1", DesiredState(generation=2, releases={}))
        controller.wait_state("cam-1", lambda s: "scanner" not in s.releases)
        assert agent.supervisor.pid("scanner") is None
    assert second is not None and second != first
    metrics = [
        b["metrics"]["scanner"] for _, b in controller.telemetry if "scanner" in b["metrics"]
    ]
    assert any(m["items_per_second"] > 0 and m["p50_ms"] is not None for m in metrics)
    # Energy per inference, from the child's energy counter, labelled measured or estimated
    metered = [m for m in metrics if m["items"] > 0 and m.get("joules_per_item")]
    assert metered, metrics
    for m in metered:
        assert m["joules_per_item"] == pytest.approx(m["joules"] / m["items"])
        assert m["energy"].startswith("measured (" if m["energy_measured"] else "estimated (")
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


def test_a_serve_release_runs_fogline_serve(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    releases.publish(make_repository(tmp_path / "s1"), "digits-server", "1.0.0")
    port = free_port()
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits-server": "1.0.0"}))
    with make_agent(tmp_path, broker, releases, serve_http_port=port):
        controller.wait_state("cam-1", active("active", "1.0.0", "digits-server"))
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fogline serve did not become ready"
            time.sleep(0.1)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v2/models/digits/infer",
            json={
                "inputs": [
                    {
                        "name": "pixels",
                        "datatype": "FP32",
                        "shape": [1, 1, 8, 8],
                        "data": [0.0] * 64,
                    }
                ]
            },
        )
        controller.wait(
            lambda: any(
                body["metrics"].get("digits-server", {}).get("items", 0) >= 1
                for _, body in controller.telemetry
            ),
            what="telemetry counting the request",
        )
    assert answer.status_code == 200, answer.text
    served = [
        b["metrics"]["digits-server"]
        for _, b in controller.telemetry
        if b["metrics"].get("digits-server", {}).get("items", 0) >= 1
    ]
    assert all(m["joules"] > 0 and m["energy"] for m in served), served  # the server's energy
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/v2/health/ready")


def test_enrolment_with_a_token(tmp_path: Path, broker: Mosquitto, releases: ReleaseServer) -> None:
    config = AgentConfig(
        broker=MqttUrl.parse(broker.url),
        controller=releases.url,
        data=tmp_path / "cam-9",
        device_id="cam-9",
        token=ENROL_TOKEN,
    )
    with Agent(config):
        pass
    credentials = read_credentials(tmp_path / "cam-9")
    assert credentials is not None and credentials.prefix == "fogline"
    assert (tmp_path / "cam-9" / "credentials.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "cam-9" / "trust" / "root.json").read_bytes() == releases.root.read_bytes()
    assert releases.enrolled == ["cam-9"]
    assert [e for e, *_ in audit_events(tmp_path / "cam-9")] == ["key.created", "device.enrolled"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_refuses_bad_options_with_one_line(tmp_path: Path) -> None:
    bad_id = run_cli(
        "--broker",
        "mqtt://127.0.0.1:1",
        "--controller",
        "http://127.0.0.1:1",
        "--data",
        str(tmp_path / "d"),
        "--device-id",
        "cam/7",
    )
    assert bad_id.returncode == 2
    assert "device id" in bad_id.stderr and len(bad_id.stderr.strip().splitlines()) == 1
    unreachable = run_cli(
        "--broker",
        "mqtt://127.0.0.1:1",
        "--controller",
        "http://127.0.0.1:1",
        "--data",
        str(tmp_path / "d"),
        "--device-id",
        "cam-7",
        "--token",
        "t",
    )
    assert unreachable.returncode == 2
    assert "cannot enrol" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1
    no_root = run_cli(
        "--broker",
        "mqtt://127.0.0.1:1",
        "--controller",
        "http://127.0.0.1:1",
        "--data",
        str(tmp_path / "d"),
        "--device-id",
        "cam-7",
    )
    assert no_root.returncode == 2 and "--trusted-root" in no_root.stderr


class _Session:
    """Stands in for the agent's MQTT session: the test is about what goes in and out of the outbox."""

    def __init__(self) -> None:
        self.topics = DeviceTopics("fogline", "cam-1")
        self.published: list[Any] = []

    def publish_and_wait(self, messages: list[Any], timeout: float) -> None:
        self.published.extend(messages)


def test_a_report_is_a_plain_outbox_message_whose_payload_is_the_telemetry_body(
    tmp_path: Path,
) -> None:
    # Prepare
    session = _Session()
    with ResultStore(tmp_path / "telemetry.db") as store:
        reporter = TelemetryReporter(
            store, "cam-1", lambda: ({"digits": "1.0.0"}, {}), topic=session.topics.telemetry
        )
        # Execute
        body = reporter.report_once()
        (message,) = store.pending()
        OutboxSender(store, TelemetryTransport(session)).deliver_once()  # type: ignore[arg-type]
        # Assert: no result in the store, the body itself in the outbox and on the wire
        assert store.count() == 0
    assert message.topic == "fogline/devices/cam-1/telemetry"
    assert Telemetry.model_validate_json(message.payload) == body
    (sent,) = session.published
    assert (str(sent.topic), sent.payload) == (message.topic, message.payload)
    assert sent.property("idempotency-key") == message.key


def test_cli_refuses_a_bad_deferral_policy_with_the_path_to_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fogline.cli import main

    policy = tmp_path / "defer.yaml"
    policy.write_text("carbon: {topic: grid/carbon, max_g_per_kwh: 200, stale_after: 60}\n")

    status = main(
        ["agent", "--broker", "mqtt://127.0.0.1:1", "--controller", "http://127.0.0.1:1",
         "--data", str(tmp_path / "d"), "--device-id", "cam-7", "--defer", str(policy)]
    )  # fmt: skip

    stderr = " ".join(capsys.readouterr().err.split())
    assert status == 2 and "Traceback" not in stderr
    assert f"{policy}: carbon.stale_after: unknown key 'stale_after'" in stderr
    assert not (tmp_path / "d").exists()
