"""Edge to edge: one ZeroMQ hop (plain and CURVE) against one MQTT hop through Mosquitto.

One-way latency, sender to receiver, on loopback, one message at a time (no
queueing): ZeroMQ PUSH→PULL through :class:`fogline.transport.zmq.ZmqSocket`
(what the ``zmq`` source and sink use), plain and with CURVE encryption;
MQTT 5 publisher → Mosquitto → subscriber at QoS 1 and QoS 0, through
fogline's own clients (:func:`fogline.transport.mqtt.new_client`, which sets
TCP_NODELAY) and broker config (``set_tcp_nodelay true``): without them
Nagle's algorithm adds up to 40 ms to a small message, an unfair hop. Sizes: a 1 KiB message (a sensor reading or a result) and a
600 KiB one (a raw 640x320 RGB frame). p50 and
p99 of each, the ratio MQTT/zmq beside it.
"""

from __future__ import annotations

import os
import queue
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho

from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl, new_client
from fogline.transport.zmq import (
    CurveClient,
    CurveServer,
    KeyPair,
    ZmqEndpoint,
    ZmqSocket,
    write_keypair,
)

SIZES = {"1 KiB": 1024, "600 KiB": 600 * 1024}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def hop(
    send: Callable[[bytes], None], received: Callable[[], None], payload: bytes, n: int
) -> list[float]:
    """``n`` one-way latencies: send, wait for the receiver to have it, next (after warm-up)."""
    for _ in range(max(5, n // 20)):
        send(payload)
        received()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        send(payload)
        received()
        samples.append(time.perf_counter() - started)
    return samples


def zmq_hop(payload: bytes, n: int, keys: tuple[KeyPair, KeyPair] | None) -> list[float]:
    endpoint = ZmqEndpoint("tcp", host="127.0.0.1", port=free_port())
    server = client = None
    if keys is not None:
        receiver, sender = keys
        server = CurveServer(receiver, frozenset({sender.public}))
        client = CurveClient(sender, receiver.public)
    with (
        ZmqSocket("pull", endpoint, bind=True, curve=server) as pull,
        ZmqSocket("push", endpoint, bind=False, curve=client) as push,
    ):

        def received() -> None:
            if pull.receive(timeout=10.0) is None:
                raise SystemExit("zmq: a message did not arrive in 10 s")

        return hop(lambda body: push.send([body]), received, payload, n)


def mqtt_hop(url_port: int, payload: bytes, n: int, qos: int) -> list[float]:
    arrived: queue.Queue[float] = queue.Queue()
    subscribed = queue.Queue[int]()
    topic = f"bench/zmq/{os.getpid()}/{qos}"

    def on_message(client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        arrived.put(time.perf_counter())

    clients = []
    for role in ("sub", "pub"):
        client = new_client(MqttUrl("127.0.0.1", url_port), client_id=f"bench-{role}-{qos}")
        client.connect("127.0.0.1", url_port)
        client.loop_start()
        clients.append(client)
    sub, pub = clients
    sub.on_message = on_message
    sub.on_subscribe = lambda c, u, mid, codes, props: subscribed.put(mid)
    sub.subscribe(topic, qos=qos)
    subscribed.get(timeout=10)
    try:

        def send(body: bytes) -> None:
            pub.publish(topic, body, qos=qos)

        def received() -> None:
            arrived.get(timeout=10)

        return hop(send, received, payload, n)
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()


def run(quick: bool) -> list[str]:
    print("== zmq against one MQTT hop (loopback, one message at a time, one-way latency)")
    counts = {"1 KiB": 200 if quick else 2000, "600 KiB": 50 if quick else 400}
    lines = []
    with tempfile.TemporaryDirectory(prefix="fogline-zmq-bench-") as tmp:
        root = Path(tmp)
        for name in ("receiver", "sender"):
            write_keypair(root / "keys", name)
        keys = tuple(
            KeyPair.load(root / "keys" / f"{name}.key_secret", secret=True)
            for name in ("receiver", "sender")
        )
        curve = (keys[0], keys[1])
        port = free_port()
        broker = LocalBroker(BrokerConfig(folder=root / "broker", port=port, auth=False))
        broker.start()
        try:
            for size_name, size in SIZES.items():
                payload = os.urandom(size)
                n = counts[size_name]
                figures: dict[str, tuple[float, float]] = {}
                runs: list[tuple[str, Callable[[bytes, int], list[float]]]] = [
                    ("zmq", lambda body, count: zmq_hop(body, count, None)),
                    ("zmq+CURVE", lambda body, count: zmq_hop(body, count, curve)),
                    ("MQTT QoS 1", lambda body, count: mqtt_hop(port, body, count, 1)),
                    ("MQTT QoS 0", lambda body, count: mqtt_hop(port, body, count, 0)),
                ]
                for label, measure in runs:
                    figures[label] = percentiles(measure(payload, n))
                    p50, p99 = figures[label]
                    print(
                        f"   {size_name:>7} {label:<11} n={n:<5} p50 {p50:7.3f} ms  p99 {p99:7.3f} ms"
                    )
                base50 = figures["zmq"][0]
                parts = []
                for label, (p50, p99) in figures.items():
                    parts.append(f"{label} {p50:.2f}/{p99:.2f}")
                q1 = figures["MQTT QoS 1"][0] / base50 if base50 else float("nan")
                lines.append(
                    f"zmq vs one MQTT hop, {size_name} (p50/p99 ms): "
                    + ", ".join(parts)
                    + f" -> MQTT QoS 1 p50 is {q1:.1f}x zmq's"
                )
        finally:
            broker.stop()
    return lines


if __name__ == "__main__":
    for line in run(quick=True):
        print(line)
