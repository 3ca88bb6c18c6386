"""The one client factory against a real Mosquitto: shared subscriptions, TLS, client ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.errors import ConfigError, TransportError
from fogline.transport.mqtt import (
    BrokerConfig,
    LocalBroker,
    MqttMessage,
    MqttPublisher,
    MqttSubscriber,
    MqttUrl,
    Topic,
    TopicFilter,
    new_client,
    publish_queued,
)
from support.broker import Mosquitto, free_port
from support.certificates import self_signed


def drain(subscriber: MqttSubscriber, quiet: float = 0.5) -> list[MqttMessage]:
    """Every message until none came for ``quiet`` seconds."""
    taken = []
    while (message := subscriber.get(timeout=quiet)) is not None:
        taken.append(message)
    return taken


def test_a_shared_subscription_hands_each_message_to_one_member_of_the_group(
    mosquitto: Mosquitto,
) -> None:
    shared = TopicFilter.shared("workers", "jobs/#")
    members = [MqttSubscriber(mosquitto.url, shared) for _ in range(2)]
    everything = MqttSubscriber(mosquitto.url, "jobs/#")
    try:
        for subscriber in (*members, everything):
            assert subscriber.wait_subscribed(10), subscriber.error
        sent = [f"job-{i}".encode() for i in range(20)]

        with MqttPublisher(mosquitto.url) as publisher:
            publisher.publish(*(MqttMessage(Topic(f"jobs/{i % 3}"), p) for i, p in enumerate(sent)))

        taken = [drain(member) for member in members]
        assert sorted(m.payload for got in taken for m in got) == sorted(sent)
        assert all(got for got in taken), "the broker gave every job to one member"
        assert sorted(m.payload for m in drain(everything)) == sorted(sent)
    finally:
        for subscriber in (*members, everything):
            subscriber.close()


def test_mqtts_is_tls_verified_against_the_system_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    config = BrokerConfig(
        folder=tmp_path / "broker", port=port, auth=False, tls_cert=cert, tls_key=key
    )
    url = f"mqtts://127.0.0.1:{port}"
    with LocalBroker(config):
        untrusting = MqttPublisher(url, timeout=5)  # the system store lacks our certificate
        with untrusting, pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.publish(MqttMessage(Topic("a"), b"x"))

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what the default context trusts
        with MqttSubscriber(url, "a/#") as subscriber:
            assert subscriber.wait_subscribed(10), subscriber.error
            with MqttPublisher(url) as publisher:
                publisher.publish(MqttMessage(Topic("a/b"), b"over tls"))
            message = subscriber.get(timeout=10)
            assert message is not None and message.payload == b"over tls"


def test_client_ids_are_random_unless_given_and_never_empty() -> None:
    url = MqttUrl("127.0.0.1")
    first, second = new_client(url), new_client(url)
    assert first._client_id != second._client_id  # throwaway sessions never collide
    assert first._client_id.startswith(b"fogline-")
    assert new_client(url, client_id="cam-7")._client_id == b"cam-7"
    with pytest.raises(ConfigError, match="client id"):
        new_client(url, client_id="a\x00b")
    with pytest.raises(ConfigError, match="timeout"):
        new_client(url, timeout=0)


def test_user_properties_travel_with_an_acknowledged_publish(mosquitto: Mosquitto) -> None:
    with MqttSubscriber(mosquitto.url, "q/#") as subscriber:
        assert subscriber.wait_subscribed(10)
        with MqttPublisher(mosquitto.url) as publisher:
            publisher.publish(MqttMessage(Topic("q/1"), b"1", user_properties=(("k", "v"),)))
        message = subscriber.get(timeout=10)
        assert message is not None and message.property("k") == "v"


def test_a_queued_publish_says_when_paho_refuses_it() -> None:
    """Offline, paho queues a QoS 1 message for the reconnect; past its queue size it refuses."""
    client = new_client(MqttUrl("127.0.0.1", 1))
    client.max_queued_messages_set(1)
    message = MqttMessage(Topic("fogline/devices/a/desired"), b"{}", retain=True)
    assert publish_queued(client, message)  # kept for the reconnect
    assert not publish_queued(client, message)  # the queue is full: logged, not dropped silently
