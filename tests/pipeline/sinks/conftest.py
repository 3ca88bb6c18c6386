"""The far ends the sink and transport suites deliver to: an MQTT listener, an HTTP endpoint.

Both are real: a paho MQTT 5 client subscribed on the test's Mosquitto (it
subscribes, and waits for the SUBACK, before anything is published), and an
``http.server`` in a thread on loopback. Each keeps what arrived, in order.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Wait until ``condition()`` holds; False if it did not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Delivery:
    """One message as the far end got it: its body and the key it carried outside the body."""

    body: Any
    key: str | None = None  # MQTT user property ``idempotency-key``, HTTP ``Idempotency-Key``
    where: str = ""  # the MQTT topic or the HTTP path


class MqttListener:
    """A paho MQTT 5 client subscribed to ``topic`` (QoS 1); ``deliveries`` in arrival order."""

    def __init__(self, port: int, topic: str) -> None:
        self.deliveries: list[Delivery] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"listener-{secrets.token_hex(4)}",
            protocol=paho.MQTTv5,
        )
        self._client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"no SUBACK for {topic!r} from the broker on port {port}")

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        properties = dict(getattr(message.properties, "UserProperty", None) or [])
        self.deliveries.append(
            Delivery(json.loads(message.payload), properties.get("idempotency-key"), message.topic)
        )

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Delivery]:
        """The deliveries once ``count`` arrived (or the timeout passed), after a short settle.

        The settle gives a duplicate the broker would send late the time to show up.
        """
        until(lambda: len(self.deliveries) >= count, timeout)
        time.sleep(0.2)
        return list(self.deliveries)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def mqtt_listener(mosquitto: Any) -> Iterator[Callable[[str], MqttListener]]:
    """Subscribe a listener on the test's broker; it is subscribed when this returns."""
    opened: list[MqttListener] = []

    def make(topic: str) -> MqttListener:
        listener = MqttListener(mosquitto.port, topic)
        opened.append(listener)
        return listener

    yield make
    for listener in opened:
        listener.close()


class HttpEndpoint:
    """A real HTTP server in a thread: answers every POST 200 and keeps it as a delivery."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers.get("Idempotency-Key")
                endpoint.deliveries.append(Delivery(body, key, self.path))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_endpoint() -> Iterator[HttpEndpoint]:
    endpoint = HttpEndpoint()
    yield endpoint
    endpoint.close()
