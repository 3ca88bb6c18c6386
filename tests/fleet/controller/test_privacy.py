"""The fleet default egress policy: set at the controller, read by a device, enforced by a pipeline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fogline.cli import main
from fogline.errors import PolicyError
from fogline.fleet.agent._privacy import DevicePrivacy
from fogline.fleet.agent._session import AgentSession
from fogline.pipeline import load_spec, plan
from fogline.protocol import DeviceTopics
from fogline.security import FLEET_POLICY_ENV
from fogline.transport.mqtt import MqttUrl
from support.digits_pipeline import write_spec
from support.echo_model import echo_model
from support.fleet_controller import Setup, wait_for


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def _device(setup: Setup, device_id: str) -> MqttUrl:
    token = setup.api.post("/api/tokens", json={"group": "default"}).json()["token"]
    enrolled = httpx.post(
        setup.controller.base_url + "/api/enrol", json={"device_id": device_id, "token": token}
    ).json()
    broker = MqttUrl.parse(setup.broker.url)
    return MqttUrl(broker.host, broker.port, False, device_id, enrolled["password"])


def _events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_fleet_default_reaches_a_device_and_its_pipelines_cannot_loosen_it(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: an enrolled device's session, reading the fleet policy as the agent does
    device = tmp_path / "device"
    privacy = DevicePrivacy(device, restart=lambda: None)
    session = AgentSession(
        _device(setup, "cam-1"), DeviceTopics("fogline", "cam-1"), on_privacy=privacy.on_message
    )
    session.start()
    policy = tmp_path / "fleet.yaml"
    policy.write_text("raw: never\nredact: [faces]\nfields: {drop: [position]}\n")

    # Execute: a malformed policy, one without the operator token, then the real one
    bad = setup.api.put("/api/privacy", json={"policy": {"raw": "sometimes"}})
    anonymous = httpx.put(setup.controller.base_url + "/api/privacy", json={"policy": None})
    done = main(["fleet", "policy", "set", str(policy), "--controller", setup.controller.base_url,
                 "--token", setup.controller.token])  # fmt: skip
    try:
        wait_for("the device to take the policy", lambda: "never" in privacy.path.read_text(), 30)
    finally:
        session.close()
    shown = setup.api.get("/api/privacy").json()

    # Assert: refused by name; kept, audited on both sides; a loosening pipeline is refused
    assert bad.status_code == 400 and bad.json()["error"].startswith("privacy.raw: Input should")
    assert anonymous.status_code == 401
    assert done == 0
    assert shown["policy"]["raw"] == "never"
    controller_events = _events(setup.data / "audit.jsonl")
    device_events = _events(device / "audit.jsonl")
    assert [e["event"] for e in controller_events][-1:] == ["policy.changed"]
    assert [e["event"] for e in device_events] == ["policy.changed"]
    assert device_events[0]["fields"]["policy"]["redact"] == ["faces"]  # type: ignore[index]
    monkeypatch.setenv(FLEET_POLICY_ENV, privacy.env()[FLEET_POLICY_ENV])
    spec = {
        "sources": [{"type": "synthetic", "shape": [1, 8, 8], "count": 1}],
        "model": {"path": str(echo_model(tmp_path / "echo.onnx"))},
        "privacy": {"raw": "captured-only"},  # looser than the fleet's never
    }
    with pytest.raises(PolicyError, match=r"^privacy\.raw: 'captured-only' is looser"):
        plan(load_spec(write_spec(tmp_path, spec)))
