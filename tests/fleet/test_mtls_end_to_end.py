"""Mutual TLS for a whole fleet: enrolment issues a certificate, and only it opens the doors.

A real controller with a CA, its operator and device listeners on HTTPS, a
real Mosquitto that takes only the fleet's certificates, and a real agent
that enrols with a one-time token and nothing else.
"""

from __future__ import annotations

import json
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from fogline.fleet.agent import Agent, AgentConfig
from fogline.fleet.agent._session import AgentSession
from fogline.fleet.controller._controller import Controller, ControllerConfig
from fogline.protocol import DeviceTopics
from fogline.security import SERVER_CERT, SERVER_KEY, ReleaseRepository, init_ca, init_keys
from fogline.transport.mqtt import LocalBroker, MqttUrl
from support.broker import mosquitto_binary
from support.fleet_controller import tiny_model, wait_for
from support.mtls import FleetCa, mtls_broker, url_for


@dataclass
class Fleet:
    ca: FleetCa
    broker: LocalBroker
    controller: Controller

    def token(self) -> str:
        return self.controller.registry.create_token(group="default")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if mosquitto_binary() is None:
        pytest.fail("the mosquitto broker is not installed: run scripts/ensure-mosquitto")
    data = tmp_path_factory.mktemp("mtls-fleet") / "controller"
    init_keys(data)
    ReleaseRepository(data).create_release(
        tiny_model(data.parent / "model", 0), "tiny", "1.0.0", data / "keys" / "targets.pem"
    )
    ca = FleetCa(data / "ca")
    broker = mtls_broker(data.parent / "broker", ca)
    controller = Controller(
        ControllerConfig(
            data=data,
            broker=url_for(broker, ca.controller),
            http_port=0,
            device_port=0,
            tls_cert=ca.folder / SERVER_CERT,
            tls_key=ca.folder / SERVER_KEY,
            ca=ca.folder,
            tick_seconds=0.1,
            verify_seconds=None,
        )
    ).start()
    try:
        assert controller.wait_connected(30), "the controller's certificate was refused"
        yield Fleet(ca, broker, controller)
    finally:
        controller.stop()
        broker.stop()


def test_an_enrolled_device_gets_a_certificate_and_connects_with_it(
    fleet: Fleet, tmp_path: Path
) -> None:
    device = tmp_path / "cam-1"
    config = AgentConfig(
        broker=MqttUrl.parse(fleet.broker.url),  # mqtts://, nothing else: enrolment brings the rest
        controller=fleet.controller.base_url,
        data=device,
        device_id="cam-1",
        token=fleet.token(),
        tls_ca=fleet.ca.ca.cert_file,  # what the operator gives a device to trust the controller
    )
    with Agent(config) as agent:
        assert agent.session is not None and agent.session.wait_connected(30), agent.error
        wait_for("the controller to see cam-1", lambda: _online(fleet, "cam-1"), 30)
        assert agent.installer is not None
        staged = agent.installer.fetch("tiny", "1.0.0")  # from the device listener, by certificate
        assert staged.version == "1.0.0"

    key = device / "keys" / "tls.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((device / "keys" / "tls.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=cam-1"
    audit = [json.loads(line) for line in (fleet.controller.data / "audit.jsonl").open()]
    assert any(e["event"] == "cert.issued" and e["fields"]["subject"] == "cam-1" for e in audit)


def test_the_device_listener_refuses_a_request_without_a_client_certificate(
    fleet: Fleet, tmp_path: Path
) -> None:
    devices = fleet.controller.devices
    assert devices is not None and devices.base_url is not None
    url = f"{devices.base_url}/repository/metadata/timestamp.json"
    trust = ssl.create_default_context(cafile=str(fleet.ca.ca.cert_file))

    # TLS 1.3: the server checks the client's certificate after the client's handshake ends,
    # so the client sees the connection closed (or the alert) instead of an answer.
    with pytest.raises(httpx.HTTPError, match=r"(?i)certificate|disconnected without"):
        httpx.get(url, verify=trust)

    tls = fleet.ca.device("cam-2")
    assert httpx.get(url, verify=tls.context()).status_code == 200
    # With mTLS on, the operator listener no longer serves releases to anyone.
    operator = httpx.get(
        f"{fleet.controller.base_url}/repository/metadata/timestamp.json", verify=trust
    )
    assert operator.status_code == 404


def test_enrolment_without_a_csr_is_refused_and_the_token_kept(fleet: Fleet) -> None:
    trust = ssl.create_default_context(cafile=str(fleet.ca.ca.cert_file))
    token = fleet.token()
    enrol = f"{fleet.controller.base_url}/api/enrol"

    refused = httpx.post(enrol, json={"device_id": "cam-3", "token": token}, verify=trust)
    assert refused.status_code == 400 and "needs a csr" in refused.json()["error"]
    bad = httpx.post(
        enrol, json={"device_id": "cam-3", "token": token, "csr": "not one"}, verify=trust
    )
    assert bad.status_code == 400 and "csr" in bad.json()["error"]

    from fogline.security import certificate_request

    csr = certificate_request(fleet.ca.folder / "devices" / "cam-3.key", "cam-3")
    taken = httpx.post(enrol, json={"device_id": "cam-3", "token": token, "csr": csr}, verify=trust)
    assert taken.status_code == 201, taken.text
    assert "BEGIN CERTIFICATE" in taken.json()["certificate"]


def test_an_agent_whose_certificate_the_broker_refuses_says_so(fleet: Fleet) -> None:
    stranger = init_ca(fleet.ca.folder.parent / "stranger")
    url = url_for(fleet.broker, fleet.ca.device("cam-5", by=stranger))
    session = AgentSession(url, DeviceTopics("fogline", "cam-5"), reconnect_min=1)
    with session:
        wait_for("the session's error", lambda: session.error is not None, 30)
    assert session.error is not None and "requires a client certificate" in session.error
    assert not session.connected


def _online(fleet: Fleet, device_id: str) -> bool:
    found = fleet.controller.registry.device(device_id)
    return found is not None and found.online
