"""The controller for real: Mosquitto with passwords and ACL, the HTTP API, simulated devices.

The devices are :class:`~fogline.testing._simulator.SimulatedFleet` devices:
each has its own MQTT session and installs releases for real (TUF refresh,
download from the controller, hash check, atomic activation). What they
leave out is inference, which these tests are not about.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fogline.fleet.controller._controller import Controller, ControllerConfig, _telemetry
from fogline.protocol import Telemetry
from fogline.security import init_keys
from fogline.transport.mqtt import MqttUrl
from support.fleet_controller import Setup, wait_for


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def test_canary_then_all_over_a_real_broker(setup: Setup) -> None:
    fleet = setup.devices(4)
    wait_for(
        "4 devices online",
        lambda: sum(d["online"] for d in setup.api.get("/api/devices").json()) == 4,
    )
    first = setup.finished(setup.deploy("1.0.0", kind="all", bake_seconds=0)["id"])
    assert first["status"] == "succeeded", first
    d = setup.deploy("1.1.0", kind="canary", canary=1, bake_seconds=1)
    assert d["waves"] == 2
    done = setup.finished(d["id"])
    assert done["status"] == "succeeded", done
    assert fleet.versions("tiny") == {"1.1.0": 4}
    devices = setup.api.get("/api/devices").json()
    assert {dev["state"]["releases"]["tiny"]["version"] for dev in devices} == {"1.1.0"}
    # The devices' telemetry reached the registry.
    wait_for("telemetry", lambda: len(setup.api.get("/api/metrics").json()) > 0)
    series = setup.api.get("/api/series", params={"step": 1}).json()
    assert series["devices"] and max(series["devices"]) >= 1


def test_a_failing_canary_is_rolled_back_and_the_rest_never_get_it(setup: Setup) -> None:
    fleet = setup.devices(3, fail={"sim-0"})
    wait_for("3 devices", lambda: len(setup.api.get("/api/devices").json()) == 3)
    assert (
        setup.finished(setup.deploy("1.0.0", kind="all", bake_seconds=0)["id"])["status"]
        == "succeeded"
    )
    done = setup.finished(setup.deploy("1.1.0", kind="canary", canary=1, bake_seconds=0)["id"])
    assert done["status"] == "rolled-back"
    assert "sim-0: failed: health check: latency 80 ms over the budget of 20 ms" in done["reason"]
    assert fleet.versions("tiny") == {"1.0.0": 3}
    statuses = {row["device_id"]: row["status"] for row in done["devices"]}
    assert statuses == {"sim-0": "rolled-back", "sim-1": "waiting", "sim-2": "waiting"}
    assert any(e["kind"] == "rollback" for e in done["events"])


def test_the_api_answers_bad_requests_with_4xx(setup: Setup) -> None:
    base = setup.controller.base_url
    assert httpx.get(base + "/api/devices").status_code == 401
    assert setup.api.get("/api/deployments/nope").status_code == 404
    bad = setup.api.post("/api/deployments", content=b"{not json")
    assert bad.status_code == 400 and "not JSON" in bad.json()["error"]
    unknown = setup.api.post("/api/deployments", json={"release": "tiny", "version": "9.0.0"})
    assert unknown.status_code == 400 and "no release tiny 9.0.0" in unknown.json()["error"]
    typo = setup.api.post(
        "/api/deployments",
        json={"release": "tiny", "version": "1.0.0", "strategy": {"kind": "fast"}},
    )
    assert typo.status_code == 422 and "strategy.kind" in typo.json()["error"]
    enrol = httpx.post(base + "/api/enrol", json={"device_id": "cam-1", "token": "forged"})
    assert enrol.status_code == 403 and "unknown enrolment token" in enrol.json()["error"]
    bad_id = httpx.post(base + "/api/enrol", json={"device_id": "cam/1", "token": "x"})
    assert bad_id.status_code == 400 and "device id" in bad_id.json()["error"]


def test_an_enrolled_device_gets_working_credentials_limited_to_its_topics(setup: Setup) -> None:
    token = setup.api.post("/api/tokens", json={"group": "lab"}).json()["token"]
    enrolled = httpx.post(
        setup.controller.base_url + "/api/enrol", json={"device_id": "cam-1", "token": token}
    ).json()
    assert enrolled["username"] == "cam-1" and enrolled["password"]
    assert '"signed"' in enrolled["trusted_root"]
    url = MqttUrl.parse(setup.broker.url)
    received: list[str] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="cam-1", protocol=paho.MQTTv5)
    client.username_pw_set("cam-1", enrolled["password"])
    client.on_message = lambda c, u, m: received.append(m.topic)
    client.connect(url.host, url.port)
    client.loop_start()
    try:
        client.subscribe("fogline/devices/+/desired", qos=1)
        setup.devices(1, prefix="other")
        wait_for(
            "the other device", lambda: setup.api.get("/api/devices/other-0").status_code == 200
        )
        setup.finished(setup.deploy("1.0.0", kind="all", bake_seconds=0)["id"])
        time.sleep(0.5)
        assert "fogline/devices/other-0/desired" not in received
        assert setup.api.get("/api/devices/cam-1").json()["group"] == "lab"
    finally:
        client.loop_stop()
        client.disconnect()


def test_groups_and_tags_from_the_cli(setup: Setup) -> None:
    from fogline.cli import main

    token = setup.api.post("/api/tokens", json={"group": "lab", "tags": ["cam"]}).json()["token"]
    httpx.post(
        setup.controller.base_url + "/api/enrol", json={"device_id": "cam-9", "token": token}
    )
    common = ["--controller", setup.controller.base_url, "--token", setup.controller.token]
    assert main(["fleet", "group", "cam-9", "field", "--tag", "outdoor", *common]) == 0
    device = setup.api.get("/api/devices/cam-9").json()
    assert (device["group"], device["tags"]) == ("field", ["outdoor"])
    assert main(["fleet", "group", "nope", "field", *common]) == 2
    missing = setup.api.patch("/api/devices/cam-9", json={"grup": "x"})
    assert missing.status_code == 422 and "grup" in missing.json()["error"]


def test_the_api_over_https(tmp_path: Path) -> None:
    from support.certificates import self_signed

    (tmp_path / "tls").mkdir()
    cert, key = self_signed(tmp_path / "tls")
    data = tmp_path / "controller"
    init_keys(data)
    controller = Controller(
        ControllerConfig(
            data=data, broker="mqtt://127.0.0.1:1", http_port=0, tls_cert=cert, tls_key=key
        )
    ).start()
    try:
        assert controller.base_url.startswith("https://")
        trust = ssl.create_default_context(cafile=str(cert))
        answer = httpx.get(controller.base_url + "/api/health", verify=trust)
        assert answer.status_code == 200 and answer.json()["ok"] is True
        with pytest.raises(httpx.ConnectError):
            httpx.get(controller.base_url + "/api/health")  # not trusted without the CA
    finally:
        controller.stop()


# -- telemetry bodies --------------------------------------------------------------

REPORT = Telemetry(device_id="cam-1", time=1_700_000_000.0, sequence=7, versions={"digits": "1"})


def test_a_telemetry_payload_is_the_protocol_body_itself() -> None:
    payload = REPORT.model_dump_json().encode()

    key, report = _telemetry(payload, {"idempotency-key": "k-7"})

    assert (key, report) == ("k-7", REPORT)


def test_telemetry_an_older_agent_queued_in_the_result_envelope_is_still_read() -> None:
    # Prepare: what an agent from before plain outbox messages sent (kept for one release)
    old = {
        "key": "k-old",
        "result_id": 3,
        "result": {
            "source": "cam-1",
            "sequence": 7,
            "position": None,
            "captured_at": 1_700_000_000.0,
            "model": "fogline-telemetry",
            "model_version": "0.9.0",
            "outputs": REPORT.model_dump(mode="json"),
            "sync": True,
        },
    }

    key, report = _telemetry(json.dumps(old).encode(), {"idempotency-key": "k-old"})

    assert (key, report) == ("k-old", REPORT)


@pytest.mark.parametrize(
    "payload",
    [b"[]", b'{"key": "k", "result": "x"}', b'{"key": "k", "result": {}}', b"{}", b"not json"],
)
def test_a_malformed_telemetry_payload_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):  # pydantic's ValidationError is one too
        _telemetry(payload, {})
