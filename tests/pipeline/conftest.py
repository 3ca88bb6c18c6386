"""Fixtures for the pipeline tests: subscribers on the test broker, closed after each test."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fogline.transport.mqtt import MqttMessage, MqttSubscriber
from support.broker import Mosquitto

Subscribe = Callable[..., MqttSubscriber]


@pytest.fixture
def subscribe(mosquitto: Mosquitto) -> Iterator[Subscribe]:
    """Subscribe to a filter on the test broker and wait until the broker confirmed it."""
    opened: list[MqttSubscriber] = []

    def make(topic: str, **options: Any) -> MqttSubscriber:
        subscriber = MqttSubscriber(mosquitto.url, topic, **options)
        opened.append(subscriber)
        assert subscriber.wait_subscribed(10), subscriber.error or "no SUBACK"
        return subscriber

    yield make
    for subscriber in opened:
        subscriber.close()


def receive(subscriber: MqttSubscriber, count: int, timeout: float = 10.0) -> list[MqttMessage]:
    """Up to ``count`` messages, waiting at most ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    messages: list[MqttMessage] = []
    while len(messages) < count and time.monotonic() < deadline:
        message = subscriber.get(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None:
            messages.append(message)
    return messages


@pytest.fixture
def take() -> Callable[..., list[MqttMessage]]:
    return receive
