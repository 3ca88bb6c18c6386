"""The publisher and the MQTT sink against a real Mosquitto: acknowledged, or a TransportError."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from fogline.errors import ItemError, TransportError
from fogline.pipeline.sinks._mqtt import MqttSinkSpec
from fogline.store import Result
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto

Take = Callable[..., list]


def test_qos1_round_trip_with_user_properties(mosquitto: Mosquitto, subscribe, take: Take) -> None:
    # Prepare
    subscriber = subscribe("test/#")
    sent = [
        MqttMessage(Topic(f"test/{i}"), f"m{i}".encode(), 1, user_properties=(("n", str(i)),))
        for i in range(20)
    ]
    # Execute
    with MqttPublisher(mosquitto.url) as publisher:
        publisher.publish(*sent[:10])
        for message in sent[10:]:
            publisher.publish(message)
        assert publisher.connected
    # Assert
    got = take(subscriber, 20)
    assert [(m.topic, m.payload, m.property("n")) for m in got] == [
        (m.topic, m.payload, m.property("n")) for m in sent
    ]


def test_broker_down_is_a_transport_error_and_the_next_publish_reconnects(
    mosquitto: Mosquitto, subscribe, take: Take
) -> None:
    # Prepare
    publisher = MqttPublisher(mosquitto.url, timeout=2)
    publisher.publish(MqttMessage(Topic("t/a"), b"1"))
    # Execute
    mosquitto.stop()
    deadline = time.monotonic() + 5
    while publisher.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(TransportError, match="cannot connect"):
        publisher.publish(MqttMessage(Topic("t/a"), b"2"))
    mosquitto.start()
    subscriber = subscribe("t/#")
    publisher.publish(MqttMessage(Topic("t/a"), b"3"))
    # Assert
    assert [m.payload for m in take(subscriber, 1)] == [b"3"]
    publisher.close()
    with pytest.raises(TransportError, match="closed"):
        publisher.publish(MqttMessage(Topic("t/a"), b"4"))


def test_no_acknowledgement_in_time_is_a_transport_error(
    mosquitto: Mosquitto, subscribe, take: Take
) -> None:
    # Prepare
    subscriber = subscribe("slow")
    publisher = MqttPublisher(mosquitto.url, timeout=0.5)
    publisher.publish(MqttMessage(Topic("slow"), b"1"))
    # Execute
    mosquitto.pause()
    try:
        with pytest.raises(TransportError, match="no acknowledgement"):
            publisher.publish(MqttMessage(Topic("slow"), b"2"))
    finally:
        mosquitto.resume()
    publisher.publish(MqttMessage(Topic("slow"), b"3"))
    publisher.close()
    # Assert: at least once: the unacknowledged one may still arrive, and in order
    assert [m.payload for m in take(subscriber, 3)] == [b"1", b"2", b"3"]


def test_unreachable_broker_fails_fast() -> None:
    with MqttPublisher("mqtt://127.0.0.1:1", timeout=1) as publisher:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            publisher.publish(MqttMessage(Topic("x"), b""))
    assert isinstance(caught.value.__cause__, OSError)
    assert time.monotonic() - started < 1.5


def test_sink_publishes_each_result_on_its_topic(
    mosquitto: Mosquitto, subscribe, take: Take
) -> None:
    # Prepare
    subscriber = subscribe("fogline/#")
    spec = MqttSinkSpec(url=mosquitto.url, topic="fogline/{source}/{label}", retain=True)
    results = [
        Result(f"cam{i % 2}", i, 1.0 + i, "digits", "3", {"label": str(i)}, False, f"#frame {i}")
        for i in range(6)
    ]
    sink = spec.build()
    # Execute
    sink.write(results)
    # Assert
    got = take(subscriber, 6)
    assert [str(m.topic) for m in got] == [f"fogline/cam{i % 2}/{i}" for i in range(6)]
    assert [Result.from_dict(json.loads(m.payload)) for m in got] == results
    late = subscribe("fogline/cam1/5")  # retained: a late subscriber gets the last one
    assert [json.loads(m.payload)["sequence"] for m in take(late, 1)] == [5]
    sink.close()


def test_sink_skips_a_result_without_a_topic_field_and_says_so(
    mosquitto: Mosquitto, subscribe, take: Take
) -> None:
    subscriber = subscribe("r/#")
    sink = MqttSinkSpec(url=mosquitto.url, topic="r/{label}").build()
    good = Result("cam0", 1, 0.0, "m", "1", {"label": "a"})
    with pytest.raises(ItemError, match="cam0#2"):
        sink.write([good, Result("cam0", 2, 0.0, "m", "1", {})])
    assert [str(m.topic) for m in take(subscriber, 1)] == ["r/a"]
    sink.close()
