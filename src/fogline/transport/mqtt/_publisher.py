"""Publish to one broker and return only once the broker has every message."""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from fogline.errors import Refused, TimedOut, TransportError, Unreachable
from fogline.transport.mqtt._client import (
    closed_before_connack,
    is_config_refusal,
    new_client,
    publish_acknowledged,
    stop_loop,
)
from fogline.transport.mqtt._values import MqttMessage, MqttUrl, to_url

log = logging.getLogger(__name__)


class MqttPublisher:
    """Publish to one broker and return only once the broker has every message.

    Connects on the first :meth:`publish`, and again on the next one after
    the connection dropped, so a broker that comes back is used without a
    restart. For QoS 1 and 2 ``publish`` waits for the PUBACK / PUBCOMP (QoS 0:
    until written to the socket) and raises a :class:`TransportError` when it
    cannot: :class:`Unreachable` when the broker cannot be reached or
    disconnects, :class:`Refused` when it refuses the connection for a
    reason retrying cannot fix (credentials, ACL) or refuses a message,
    :class:`TimedOut` when it does not answer within ``timeout`` seconds. It
    never drops a message silently. Several messages in one call are sent
    back to back and then awaited together.

    >>> from fogline.transport.mqtt import MqttMessage, Topic
    >>> publisher = MqttPublisher("mqtt://127.0.0.1:1")  # nothing listens on port 1
    >>> publisher.publish(MqttMessage(Topic("a/b"), b"{}"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fogline.errors.Unreachable: cannot connect to mqtt://127.0.0.1:1: ...
    >>> publisher.close()
    """

    def __init__(
        self, url: MqttUrl | str, *, client_id: str | None = None, timeout: float = 10.0
    ) -> None:
        self.url = to_url(url)
        self.timeout = timeout
        # No reconnecting in paho's thread: it ends with the connection, and publish reconnects.
        self._client = new_client(self.url, client_id=client_id, timeout=timeout, reconnect=False)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._lock = threading.Lock()  # one connect at a time
        self._connected = threading.Event()
        self._connack = threading.Event()
        self._refusal: ReasonCode | None = None
        self._dropped = False  # the connection ended before its CONNACK
        self._reasons: dict[int, ReasonCode] = {}  # mid -> PUBACK reason, set by paho's thread
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, *messages: MqttMessage) -> None:
        """Send ``messages`` in order and wait for the broker's acknowledgement of each."""
        self._connect()
        publish_acknowledged(
            self._client, self.url, messages, self.timeout, self._connected, self._reasons
        )

    def _connect(self) -> None:
        with self._lock:
            if self._closed:
                raise TransportError(f"{self.url}: the publisher is closed")
            if self._connected.is_set():
                return
            stop_loop(self._client)  # the loop thread of a dropped connection ends by itself
            self._connack.clear()
            self._refusal = None
            self._dropped = False
            try:
                self._client.connect(self.url.host, self.url.port, keepalive=30)
            except TimeoutError as exc:  # the TCP connect outlived the timeout
                raise TimedOut(f"cannot connect to {self.url}: {exc}") from exc
            except (OSError, ValueError) as exc:
                raise Unreachable(f"cannot connect to {self.url}: {exc}") from exc
            self._client.loop_start()
            if not self._connack.wait(self.timeout):
                self._client.disconnect()
                stop_loop(self._client)
                raise TimedOut(f"{self.url}: no CONNACK within {self.timeout:g} s")
            if self._dropped:
                stop_loop(self._client)
                raise closed_before_connack(self.url)
            if self._refusal is not None:
                stop_loop(self._client)
                # Credentials or an ACL: Refused. Busy, unavailable, moved: may work later.
                failure = Refused if is_config_refusal(self._refusal) else Unreachable
                raise failure(f"{self.url} refused the connection: {self._refusal}")
            log.info("connected to %s", self.url)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._refusal = reason
        else:
            self._connected.set()
        self._connack.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if self._connected.is_set() and not self._closed:
            log.warning("disconnected from %s: %s", self.url, reason)
        elif not self._connack.is_set():
            self._dropped = True
            self._connack.set()
        self._connected.clear()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self._reasons[mid] = reason

    def close(self) -> None:
        """Disconnect and stop paho's thread; later publishes raise :class:`TransportError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._connected.is_set():
                self._client.disconnect()
            stop_loop(self._client)

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
