"""The outbox over MQTT: every stored result arrives once per key, in order, broker down or not."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from fogline.errors import ConfigError, TransportError
from fogline.pipeline.sinks._mqtt import MqttTransport, MqttTransportSpec
from fogline.store import OutboxSender, Result, ResultStore
from fogline.transport.mqtt import MqttMessage, MqttSubscriber
from support.broker import Mosquitto


def results(start: int, count: int) -> list[Result]:
    return [
        Result(
            "cam0", i, 1_700_000_000.0 + i, "digits", "3", {"label": i % 10}, True, f"log.csv:{i}"
        )
        for i in range(start, start + count)
    ]


def until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Receiver:
    """The far side: drains a subscriber, keeps the first message per idempotency key."""

    def __init__(self, subscriber: MqttSubscriber) -> None:
        self.subscriber = subscriber
        self.first: dict[str, dict] = {}
        self.order: list[int] = []  # result ids in order of first arrival
        self.duplicates = 0

    def drain(self, timeout: float = 0.05) -> None:
        while (message := self.subscriber.get(timeout)) is not None:
            self.take(message)

    def take(self, message: MqttMessage) -> None:
        body = json.loads(message.payload)
        assert message.property("idempotency-key") == body["key"]
        if body["key"] in self.first:
            self.duplicates += 1
            return
        self.first[body["key"]] = body
        self.order.append(body["result_id"])

    def wait_for(self, count: int, timeout: float = 15.0) -> bool:
        return until(lambda: self.drain() or len(self.first) >= count, timeout)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    with ResultStore(tmp_path / "results.db") as opened:
        yield opened


@pytest.fixture
def running_sender(store: ResultStore, mosquitto: Mosquitto) -> Iterator[OutboxSender]:
    transport = MqttTransportSpec(url=mosquitto.url, client_id="device-1", timeout=2).build()
    sender = OutboxSender(
        store, transport, backoff_initial=0.05, backoff_max=0.4, poll_interval=0.02
    )
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), daemon=True)
    thread.start()
    yield sender
    stop.set()
    thread.join(10)
    transport.close()


def test_outbox_delivers_every_result_once_per_key_in_order(
    store: ResultStore, running_sender: OutboxSender, subscribe
) -> None:
    # Prepare
    receiver = Receiver(subscribe("fogline/+/outbox"))
    # Execute
    ids = store.add(results(0, 40))
    # Assert
    assert receiver.wait_for(40)
    assert receiver.order == ids
    assert until(lambda: store.stats().pending == 0)
    sent = [Result.from_dict(receiver.first[k]["result"]) for k in receiver.first]
    assert sent == results(0, 40)


def test_broker_down_keeps_messages_pending_and_drains_in_order_when_back(
    store: ResultStore, running_sender: OutboxSender, mosquitto: Mosquitto, subscribe
) -> None:
    # Prepare: a receiver with a persistent session, so the broker queues for it while it reconnects
    receiver = Receiver(subscribe("fogline/#", client_id="receiver", session_expiry=300))
    first = store.add(results(0, 10))
    assert receiver.wait_for(10)
    # Execute: the broker goes away while results keep coming
    mosquitto.stop()
    second = store.add(results(10, 20))
    assert until(lambda: isinstance(running_sender.last_error, TransportError), 10)
    time.sleep(1.0)
    # Assert: nothing sent, nothing dropped, the sender backs off instead of spinning
    stats = store.stats()
    assert (stats.pending, stats.dropped, stats.delivered) == (20, 0, 10)
    attempts = store.pending(1)[0].attempts
    assert 2 <= attempts <= 12
    # Execute: the broker is back on the same port
    mosquitto.start()
    # Assert: drained in order, the receiver has every result once
    assert until(lambda: store.stats().pending == 0, 20)
    assert receiver.wait_for(30, 20)
    assert receiver.order == first + second
    assert store.stats().delivered == 30


def test_transport_refuses_what_it_cannot_deliver_reliably(mosquitto: Mosquitto) -> None:
    with pytest.raises(ConfigError, match="qos 1 or 2"):
        MqttTransport(mosquitto.url, qos=0)
    # The topic is the pipeline's choice, from the spec, and may use the result's own fields only.
    with pytest.raises(ValidationError, match="label"):
        MqttTransportSpec(url=mosquitto.url, topic="x/{label}")
