"""The controller's audit trail: failed logins at the API, enrolments, devices' checkpoints.

A real controller answers real HTTP; a device's checkpoint travels in a real
telemetry report over a real Mosquitto, and the controller's copy is what
finds the device's log cut short afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fogline.cli import main
from fogline.fleet.agent._telemetry import TelemetryReporter
from fogline.fleet.controller._audit_book import CheckpointBook, LoginFailures
from fogline.fleet.controller._controller import Controller, ControllerConfig
from fogline.protocol import Telemetry
from fogline.security import AuditLog, AuditSigner, init_keys, verify_log
from fogline.store import ResultStore
from fogline.transport.mqtt import MqttUrl
from support.fleet_controller import Setup, wait_for


def events(log: Path, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [line["fields"] for line in lines if line["event"] == name]


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    data = tmp_path / "controller"
    init_keys(data)
    started = Controller(
        ControllerConfig(data=data, broker="mqtt://127.0.0.1:1", http_port=0)
    ).start()  # no broker: only the HTTP API is under test
    yield started
    started.stop()


def test_bad_operator_tokens_are_audit_events_rate_limited(controller: Controller) -> None:
    controller.login_failures.burst = 3
    log = controller.data / "audit.jsonl"

    answers = [
        httpx.get(controller.base_url + "/api/devices", headers={"Authorization": "Bearer nope"})
        for _ in range(5)
    ]
    good = httpx.get(
        controller.base_url + "/api/devices",
        headers={"Authorization": f"Bearer {controller.token}"},
    )

    assert [a.status_code for a in answers] == [401] * 5 and good.status_code == 200
    failed = events(log, "api.login_failed")
    assert failed == [{"client": "127.0.0.1", "path": "/api/devices"}] * 3  # 2 over the burst
    assert controller.login_failures._suppressed == 2
    assert [e["role"] for e in events(log, "key.created")] == [
        "root",
        "targets",
        "snapshot",
        "timestamp",
    ]
    assert verify_log(log).intact


def test_login_failures_over_the_burst_are_summed_in_the_next_window(tmp_path: Path) -> None:
    now = [0.0]
    limit = LoginFailures(AuditLog(tmp_path / "a.jsonl"), burst=2, window=60, clock=lambda: now[0])
    written = [limit.failed("10.0.0.9", "/api/devices") for _ in range(50)]
    now[0] = 61.0
    limit.failed("10.0.0.9", "/api/devices")

    assert written.count(True) == 2
    logged = events(tmp_path / "a.jsonl", "api.login_failed")
    assert len(logged) == 3 and logged[-1]["suppressed"] == 48


def test_a_device_checkpoint_sent_with_telemetry_finds_its_log_cut_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = Setup(tmp_path)
    try:
        token = setup.api.post("/api/tokens", json={"group": "lab"}).json()["token"]
        enrolled = httpx.post(
            setup.controller.base_url + "/api/enrol", json={"device_id": "cam-1", "token": token}
        ).json()
        # The device: its signed audit log and a telemetry reporter that checkpoints it.
        device = tmp_path / "cam-1"
        log = AuditLog.signed(device / "audit.jsonl")
        for version in ("1.0", "1.1", "1.2"):
            log.record("release.installed", release="digits", version=version)
        store = ResultStore(device / "telemetry.db")
        reporter = TelemetryReporter(
            store,
            "cam-1",
            lambda: ({}, {}),
            topic="fogline/devices/cam-1/telemetry",
            checkpoint=lambda: log.checkpoint().as_dict(),  # type: ignore[union-attr]
        )
        sent = reporter.report_once()
        assert sent.audit is not None and sent.audit.seq == 3
        (message,) = store.pending()
        store.close()
        url = MqttUrl.parse(setup.broker.url)
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cam-1", protocol=paho.MQTTv5)
        client.username_pw_set("cam-1", enrolled["password"])
        client.connect(url.host, url.port)
        client.loop_start()
        try:
            client.publish(message.topic, message.payload, qos=1).wait_for_publish(30)
        finally:
            client.loop_stop()
            client.disconnect()
        kept = setup.controller.data / "audit-checkpoints" / "cam-1.json"
        wait_for("the kept checkpoint", kept.exists, timeout=30)
        controller_log = setup.controller.data / "audit.jsonl"
        assert events(controller_log, "device.enrolled")[0]["device"] == "cam-1"

        # Someone cuts the device's log back to before the last install.
        lines = log.path.read_bytes().splitlines(keepends=True)
        log.path.write_bytes(b"".join(lines[:2]))
        assert main(["audit", "verify", str(log.path)]) == 0  # alone it looks whole
        capsys.readouterr()
        assert main(["audit", "verify", str(log.path), "--checkpoint", str(kept)]) == 2
        err = capsys.readouterr().err
        assert "line 3: truncated: the log ends at seq 2" in err and "covers seq 3" in err
        # The same, asking the controller over its API for the device's checkpoint.
        api = ["--controller", setup.controller.base_url, "--token", setup.controller.token]
        assert main(["audit", "verify", str(log.path), "--device", "cam-1", *api]) == 2
        assert "line 3: truncated" in capsys.readouterr().err
        assert main(["audit", "verify", str(log.path), "--device", "cam-2", *api]) == 2
        assert "no audit checkpoint from 'cam-2' yet" in capsys.readouterr().err
    finally:
        setup.close()


def test_the_book_pins_a_devices_key_and_keeps_only_newer_checkpoints(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "controller.jsonl")
    book = CheckpointBook(tmp_path / "book", audit)
    mine, other = AuditSigner(tmp_path / "a.key"), AuditSigner(tmp_path / "b.key")

    def report(point: object) -> Telemetry:
        body = {"device_id": "cam-1", "time": 1.0, "sequence": 0, "audit": point}
        return Telemetry.model_validate(body)

    assert book.keep_reports([report(mine.sign(5, "a" * 64).as_dict())]) == 1
    assert book.keep_reports([report(other.sign(9, "b" * 64).as_dict())]) == 0  # another key
    assert book.keep_reports([report(mine.sign(4, "c" * 64).as_dict())]) == 0  # went back
    assert book.keep_reports([report(mine.sign(6, "d" * 64).as_dict())]) == 1

    latest = book.latest("cam-1")
    assert latest is not None and (latest.seq, latest.hash) == (6, "d" * 64)
    assert "not by the trusted key" in str(events(audit.path, "audit.checkpoint_refused")[0])
    assert events(audit.path, "audit.checkpoint_regressed") == [
        {"device": "cam-1", "kept": 5, "seq": 4}
    ]
