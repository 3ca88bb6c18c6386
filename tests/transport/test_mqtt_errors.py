"""Each way a publish fails against a real Mosquitto is the TransportError subclass that says why.

No connection is :class:`Unreachable`, a refusal that retrying cannot fix
(bad password, an ACL) is :class:`Refused`, a broker that does not answer
(frozen with SIGSTOP) is :class:`TimedOut`; each is still a TransportError.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fogline.errors import Refused, TimedOut, TransportError, Unreachable
from fogline.transport.mqtt import (
    BrokerConfig,
    Credentials,
    LocalBroker,
    MqttMessage,
    MqttPublisher,
    MqttUrl,
    Topic,
)
from support.broker import Mosquitto, free_port

MESSAGE = MqttMessage(Topic("fogline/devices/cam-1/telemetry"), b"{}")


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[LocalBroker, Credentials]]:
    """A Mosquitto with passwords and fogline's ACL, and one device's credentials."""
    config = BrokerConfig(folder=tmp_path / "broker", port=free_port(), auth=True)
    with LocalBroker(config) as broker:
        yield broker, broker.add_device("cam-1")


def url_for(broker: LocalBroker, user: str, password: str) -> MqttUrl:
    url = MqttUrl.parse(broker.url)
    return MqttUrl(url.host, url.port, username=user, password=password)


def test_nothing_listening_is_unreachable() -> None:
    publisher = MqttPublisher(f"mqtt://127.0.0.1:{free_port()}", timeout=5)
    with publisher, pytest.raises(Unreachable, match="cannot connect"):
        publisher.publish(MESSAGE)


def test_a_wrong_password_is_refused(secured: tuple[LocalBroker, Credentials]) -> None:
    broker, device = secured
    publisher = MqttPublisher(url_for(broker, device.user, "not-the-password"), timeout=5)
    with publisher, pytest.raises(Refused, match="refused the connection") as caught:
        publisher.publish(MESSAGE)
    assert isinstance(caught.value, TransportError)  # code that catches the base still does


def test_a_publish_the_acl_forbids_is_refused(secured: tuple[LocalBroker, Credentials]) -> None:
    broker, device = secured
    with MqttPublisher(url_for(broker, device.user, device.password), timeout=5) as publisher:
        publisher.publish(MESSAGE)  # its own telemetry: allowed
        forbidden = MqttMessage(Topic("fogline/devices/cam-2/telemetry"), b"{}")
        with pytest.raises(Refused, match="the broker refused"):
            publisher.publish(forbidden)


def test_a_broker_that_does_not_answer_times_out(mosquitto: Mosquitto) -> None:
    with MqttPublisher(mosquitto.url, timeout=1) as publisher:
        publisher.publish(MESSAGE)
        mosquitto.pause()  # connected, but nothing is answered: no PUBACK
        try:
            with pytest.raises(TimedOut, match="no acknowledgement"):
                publisher.publish(MESSAGE)
        finally:
            mosquitto.resume()


def test_a_broker_that_sends_no_connack_times_out(mosquitto: Mosquitto) -> None:
    mosquitto.pause()  # the kernel still accepts the TCP connection: no CONNACK follows
    try:
        publisher = MqttPublisher(mosquitto.url, timeout=1)
        with publisher, pytest.raises(TimedOut, match="no CONNACK"):
            publisher.publish(MESSAGE)
    finally:
        mosquitto.resume()
