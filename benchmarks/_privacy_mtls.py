"""Mutual TLS at the broker: what a connection and a message cost, against plain MQTT.

Two real Mosquittos on loopback, one plain with a password per device and
one as ``fogline broker --mtls`` runs it. Measured: the time to connect
(TCP, the TLS handshake with both certificates, CONNECT/CONNACK), and the
QoS 1 messages per second one publisher gets through a connection it keeps,
which is how a device talks (one persistent session). The anchor is that
TLS costs a handshake per connection and little per message: a session
that stays connected pays it once.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from fogline.security import (
    SERVER_CERT,
    SERVER_KEY,
    ClientTls,
    init_ca,
    issue_certificate,
    issue_fleet_certificates,
)
from fogline.testing import free_port
from fogline.transport.mqtt import (
    BrokerConfig,
    LocalBroker,
    MqttMessage,
    MqttPublisher,
    MqttUrl,
    Topic,
)


def _connect_ms(url: MqttUrl, count: int) -> float:
    """The median time to connect (one publish, acknowledged, proves it), in ms."""
    times = []
    message = MqttMessage(Topic("fogline/devices/cam-1/state"), b"{}")
    for _ in range(count):
        started = time.perf_counter()
        with MqttPublisher(url) as publisher:
            publisher.publish(message)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _messages_per_second(url: MqttUrl, count: int) -> float:
    payload = b"x" * 200
    messages = [MqttMessage(Topic("fogline/devices/cam-1/telemetry"), payload)] * 100
    with MqttPublisher(url) as publisher:
        publisher.publish(messages[0])  # connected before the clock starts
        started = time.perf_counter()
        for _ in range(count // 100):
            publisher.publish(*messages)
        return count / (time.perf_counter() - started)


def run(quick: bool) -> list[str]:
    connects, messages = (10, 2_000) if quick else (50, 20_000)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ca = init_ca(folder / "ca")
        issue_fleet_certificates(ca)
        issue_certificate(ca, "cam-1").write(folder / "cam-1.pem", folder / "cam-1.key")
        plain = LocalBroker(BrokerConfig(folder=folder / "plain", port=free_port()))
        mtls = LocalBroker(
            BrokerConfig(
                folder=folder / "mtls",
                port=free_port(),
                tls_cert=ca.folder / SERVER_CERT,
                tls_key=ca.folder / SERVER_KEY,
                tls_ca=ca.cert_file,
                require_certificate=True,
                identity_from_certificate=True,
            )
        )
        with plain, mtls:
            password = plain.add_device("cam-1").password
            plain_url = MqttUrl("127.0.0.1", plain.config.port, False, "cam-1", password)
            device = ClientTls(ca.cert_file, folder / "cam-1.pem", folder / "cam-1.key")
            mtls_url = dataclasses.replace(MqttUrl.parse(mtls.url), client_tls=device)
            figures = {}
            for name, url in (("plain", plain_url), ("mtls", mtls_url)):
                figures[name] = (_connect_ms(url, connects), _messages_per_second(url, messages))
                print(
                    f"   {name}: connect {figures[name][0]:.1f} ms, {figures[name][1]:,.0f} msg/s"
                )
    (plain_ms, plain_rate), (mtls_ms, mtls_rate) = figures["plain"], figures["mtls"]
    return [
        f"mtls connect (median of {connects}): {mtls_ms:.1f} ms vs {plain_ms:.1f} ms plain "
        "(one TLS handshake with both certificates, paid once per persistent session)",
        f"mtls QoS 1 publish, one kept connection: {mtls_rate:,.0f} msg/s vs "
        f"{plain_rate:,.0f} plain ({1 - mtls_rate / plain_rate:.0%} fewer; 200-byte messages)",
    ]
