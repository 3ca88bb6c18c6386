"""Receive the messages on one topic filter (shared subscriptions too) into a bounded queue."""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from fogline.errors import ConfigError
from fogline.transport.mqtt._client import (
    connect_properties,
    connect_refusal,
    new_client,
    received,
    stop_loop,
    subscription_refusal,
)
from fogline.transport.mqtt._values import MqttMessage, MqttUrl, TopicFilter, to_url

log = logging.getLogger(__name__)


class MqttSubscriber:
    """Receive the messages on ``topic`` into a bounded, thread-safe queue; :meth:`get` takes them.

    paho's thread connects in the background, reconnects after a drop and
    subscribes again each time. ``session_expiry > 0`` (seconds) with a fixed
    ``client_id`` keeps a persistent session, so QoS 1 messages published
    while this client was away are delivered when it is back. When the queue
    holds ``maxsize`` messages the oldest is dropped (counted in ``dropped``).
    ``error`` says why the broker refused the connection or subscription, for
    reasons that retrying cannot fix (credentials, ACL). ``topic`` may be a
    shared subscription (``$share/GROUP/filter``): the subscribers of one
    group share the messages, each message going to one of them.
    """

    def __init__(
        self,
        url: MqttUrl | str,
        topic: TopicFilter | str,
        *,
        qos: int = 1,
        client_id: str | None = None,
        session_expiry: int = 0,
        maxsize: int = 1024,
        timeout: float = 10.0,
    ) -> None:
        self.url = to_url(url)
        try:
            self.topic = topic if isinstance(topic, TopicFilter) else TopicFilter(topic)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if qos not in (0, 1, 2) or maxsize < 1 or session_expiry < 0:
            raise ConfigError(f"bad subscriber options: qos={qos}, maxsize={maxsize}")
        self.qos = qos
        self.dropped = 0
        self.error: str | None = None
        self._queue: queue.Queue[MqttMessage] = queue.Queue(maxsize)
        self._subscribed = threading.Event()
        self._client = new_client(self.url, client_id=client_id, timeout=timeout, reconnect=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=4)
        props = connect_properties(session_expiry) if session_expiry else None
        self._client.connect_async(
            self.url.host, self.url.port, 30, clean_start=not session_expiry, properties=props
        )
        self._client.loop_start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the broker confirmed the subscription within ``timeout`` seconds."""
        return self._subscribed.wait(timeout)

    def get(self, timeout: float | None = None) -> MqttMessage | None:
        """The next message, or None when none came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        refused, error = connect_refusal(self.url, reason)
        if refused:
            self.error = error or self.error
            return
        client.subscribe(self.topic.value, qos=self.qos)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        error = subscription_refusal(self.url, self.topic, reasons)
        if error is not None:
            self.error = error
        else:
            self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            item = received(message)
        except ValueError:
            self.dropped += 1  # a topic that is not UTF-8 cannot be named in an item
            return
        while True:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def close(self) -> None:
        """Disconnect and stop paho's thread (messages not yet taken are discarded)."""
        self._client.disconnect()
        stop_loop(self._client)

    def __enter__(self) -> MqttSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
