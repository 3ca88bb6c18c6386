"""Mutual TLS at a real Mosquitto: a device is its certificate, and only its own topics are its."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fogline.errors import ConfigError, Refused
from fogline.security import ClientTls, init_ca
from fogline.transport.mqtt import (
    BrokerConfig,
    LocalBroker,
    MqttMessage,
    MqttPublisher,
    MqttSubscriber,
    Topic,
)
from support.broker import mosquitto_binary
from support.mtls import FleetCa, connects, mtls_broker, url_for


@pytest.fixture(scope="module")
def fleet_ca(tmp_path_factory: pytest.TempPathFactory) -> FleetCa:
    return FleetCa(tmp_path_factory.mktemp("fleet") / "ca")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, fleet_ca: FleetCa) -> Iterator[LocalBroker]:
    if mosquitto_binary() is None:
        pytest.fail("the mosquitto broker is not installed: run scripts/ensure-mosquitto")
    running = mtls_broker(tmp_path_factory.mktemp("mtls-broker"), fleet_ca)
    yield running
    running.stop()


def test_the_broker_config_takes_identity_from_the_certificate(broker: LocalBroker) -> None:
    lines = broker.config.lines()
    assert "require_certificate true" in lines
    assert "use_identity_as_username true" in lines
    with pytest.raises(ConfigError, match="needs require_certificate"):
        BrokerConfig(folder=Path("b"), identity_from_certificate=True).check()


def test_a_device_with_a_certificate_from_the_fleet_ca_connects(
    broker: LocalBroker, fleet_ca: FleetCa
) -> None:
    assert connects(url_for(broker, fleet_ca.device("cam-1"))) == "connected"


@pytest.mark.parametrize("certificate", ["none", "another CA", "expired"])
def test_a_device_without_a_valid_certificate_cannot_connect(
    broker: LocalBroker, fleet_ca: FleetCa, tmp_path: Path, certificate: str
) -> None:
    if certificate == "none":
        tls = ClientTls(fleet_ca.ca.cert_file)
    elif certificate == "another CA":
        stranger = init_ca(tmp_path / "stranger", name="fogline fleet CA")  # the same name
        tls = fleet_ca.device("cam-1", by=stranger)
    else:
        tls = fleet_ca.device("cam-1", expired=True)

    outcome = connects(url_for(broker, tls, username="cam-1", password="anything"))

    assert outcome != "connected", certificate
    assert "refused" not in outcome  # it never got as far as MQTT: TLS ended it


def test_one_devices_certificate_cannot_act_as_another(
    broker: LocalBroker, fleet_ca: FleetCa
) -> None:
    a, b = fleet_ca.device("dev-a"), fleet_ca.device("dev-b")
    controller = url_for(broker, fleet_ca.controller)
    # dev-a claims to be dev-b in every way MQTT lets it: user name and client id.
    pretender = url_for(broker, a, username="dev-b", password="guessed")
    with (
        MqttSubscriber(controller, "fogline/devices/#") as everything,
        MqttPublisher(url_for(broker, b), client_id="dev-b") as real_b,
        MqttPublisher(pretender, client_id="dev-b") as fake_b,
    ):
        assert everything.wait_subscribed(10), everything.error
        real_b.publish(MqttMessage(Topic("fogline/devices/dev-b/state"), b"b, before"))

        with pytest.raises(Refused, match=r"(?i)not authori"):
            fake_b.publish(MqttMessage(Topic("fogline/devices/dev-b/state"), b"forged"))
        fake_b.publish(MqttMessage(Topic("fogline/devices/dev-a/state"), b"a, as itself"))
        # Its client id became its certificate's name: dev-b's connection was not taken over.
        real_b.publish(MqttMessage(Topic("fogline/devices/dev-b/state"), b"b, after"))

        seen = []
        while len(seen) < 3 and (message := everything.get(timeout=10)) is not None:
            seen.append((message.topic.value, message.payload))
    assert seen == [
        ("fogline/devices/dev-b/state", b"b, before"),
        ("fogline/devices/dev-a/state", b"a, as itself"),
        ("fogline/devices/dev-b/state", b"b, after"),
    ]


def test_a_device_cannot_read_another_devices_desired_state(
    broker: LocalBroker, fleet_ca: FleetCa
) -> None:
    # Mosquitto grants the subscription and checks each message against the ACL on delivery.
    pretender = url_for(broker, fleet_ca.device("dev-a"), username="dev-b")
    with (
        MqttSubscriber(pretender, "fogline/devices/+/desired") as reader,
        MqttPublisher(url_for(broker, fleet_ca.controller)) as controller,
    ):
        assert reader.wait_subscribed(10), reader.error
        controller.publish(
            MqttMessage(Topic("fogline/devices/dev-b/desired"), b"for b"),
            MqttMessage(Topic("fogline/devices/dev-a/desired"), b"for a"),
        )
        first = reader.get(timeout=10)
    assert first is not None and first.payload == b"for a"  # b's came first and never arrived


def test_a_publisher_without_a_certificate_is_told_what_it_lacks(
    broker: LocalBroker, fleet_ca: FleetCa
) -> None:
    with (
        MqttPublisher(url_for(broker, ClientTls(fleet_ca.ca.cert_file)), timeout=10) as publisher,
        pytest.raises(Refused, match="requires a client certificate"),
    ):
        publisher.publish(MqttMessage(Topic("fogline/devices/cam-1/state"), b"x"))
