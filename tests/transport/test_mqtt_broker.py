"""The fleet's broker security and lifecycle, against a real Mosquitto and real paho MQTT 5 clients.

Each test starts its own Mosquitto with fogline's generated config, password
file and ACL. "Never received" is proved with a marker: the forbidden message
is sent first and an allowed one after it on the same connection, and the
receiver is read up to the marker (Mosquitto keeps one publisher's order).
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fogline.errors import ConfigError
from fogline.protocol import TOPIC_KINDS, DeviceTopics
from fogline.transport.mqtt import (
    BrokerConfig,
    Credentials,
    LocalBroker,
    PasswordFile,
    acl_lines,
    device_credentials,
    reload_broker,
)
from support.broker import free_port
from support.certificates import self_signed

NOT_AUTHORIZED = 0x87
BAD_CREDENTIALS = 0x86
REFUSED = {BAD_CREDENTIALS, NOT_AUTHORIZED}
A, B = DeviceTopics("fogline", "dev-a"), DeviceTopics("fogline", "dev-b")


def delivered(reason: ReasonCode) -> bool:
    """A PUBACK that accepted the message (0x10 "no matching subscribers" is a success)."""
    return not reason.is_failure


class Peer:
    """A paho MQTT 5 client whose CONNACK, SUBACK, PUBACK and messages a test can wait for."""

    def __init__(
        self,
        broker: LocalBroker,
        credentials: Credentials | None,
        *,
        client_id: str | None = None,
        session: bool = False,
        tls_ca: Path | None = None,
    ) -> None:
        name = client_id or (credentials.user if credentials else "anonymous")
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
        if credentials is not None:
            self.client.username_pw_set(credentials.user, credentials.password)
        if tls_ca is not None:
            self.client.tls_set_context(ssl.create_default_context(cafile=str(tls_ca)))
        self.session = session
        self.port = broker.config.port
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.seen: list[paho.MQTTMessage] = []
        self._acks: dict[int, list[ReasonCode]] = {}
        self._done = threading.Condition()
        self.client.on_connect = lambda c, u, f, reason, p: self.connacks.put(reason)
        self.client.on_message = lambda c, u, message: self.messages.put(message)
        self.client.on_subscribe = lambda c, u, mid, reasons, p: self._ack(mid, list(reasons))
        self.client.on_publish = lambda c, u, mid, reason, p: self._ack(mid, [reason])

    def _ack(self, mid: int, reasons: list[ReasonCode]) -> None:
        with self._done:
            self._acks[mid] = reasons
            self._done.notify_all()

    def _wait_ack(self, mid: int) -> list[ReasonCode]:
        with self._done:
            assert self._done.wait_for(lambda: mid in self._acks, timeout=10), f"no ack for {mid}"
            return self._acks.pop(mid)

    def connect(self) -> ReasonCode:
        """Connect and return the CONNACK reason; a refused client stops retrying."""
        properties = Properties(PacketTypes.CONNECT)
        if self.session:
            properties.SessionExpiryInterval = 3600
        self.client.connect(
            "127.0.0.1", self.port, clean_start=not self.session, properties=properties
        )
        self.client.loop_start()
        reason = self.connacks.get(timeout=10)
        if reason.is_failure:
            self.close()
        return reason

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        result, mid = self.client.subscribe([(topic, 1) for topic in filters])
        assert result == paho.MQTT_ERR_SUCCESS
        return self._wait_ack(mid)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        return self._wait_ack(info.mid)[0]

    def until(self, topic: str, payload: bytes, timeout: float = 10.0) -> list[paho.MQTTMessage]:
        """Every message up to and including ``payload`` on ``topic`` (the marker)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            self.seen.append(message)
            if message.topic == topic and message.payload == payload:
                return self.seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    with LocalBroker(BrokerConfig(folder=tmp_path / "broker", port=free_port())) as running:
        yield running


@pytest.fixture
def peers(broker: LocalBroker) -> Iterator[dict[str, Peer]]:
    """The controller and devices dev-a and dev-b, connected."""
    made = {
        "controller": Peer(broker, broker.add_controller(), client_id="controller-test"),
        "dev-a": Peer(broker, broker.add_device("dev-a")),
        "dev-b": Peer(broker, broker.add_device("dev-b")),
    }
    for peer in made.values():
        assert peer.connect().value == 0
    yield made
    for peer in made.values():
        peer.close()


def test_acl_names_every_device_topic_once_with_the_user_as_device_id() -> None:
    lines = acl_lines("plant", "ops")

    rules = [line.split() for line in lines if line.startswith("pattern") and "%u" in line]
    assert {(access, topic.rsplit("/", 1)[1]) for _, access, topic in rules} == {
        ("read", "desired"),
        ("read", "command"),
        ("read", "fl-round"),
        ("read", "fl-ack"),
        ("read", "offer-ack"),
        ("write", "state"),
        ("write", "telemetry"),
        ("write", "presence"),
        ("write", "fl-update"),
        ("write", "offer"),
    }
    assert {kind for *_, kind in (topic.split("/") for *_, topic in rules)} == set(TOPIC_KINDS)
    assert all(topic.startswith("plant/devices/%u/") for *_, topic in rules)
    assert lines[lines.index("user ops") + 1] == "topic readwrite plant/#"
    assert lines[-1] == "pattern readwrite fogline/cluster/#"  # clusters: not under the prefix
    with pytest.raises(ConfigError, match="prefix"):
        acl_lines("a/b")


def test_a_device_never_receives_another_devices_commands_or_desired_state(
    peers: dict[str, Peer],
) -> None:
    controller, a, b = peers["controller"], peers["dev-a"], peers["dev-b"]
    assert delivered(controller.publish(B.desired, b"b-desired", retain=True))
    assert delivered(controller.publish(A.desired, b"a-desired", retain=True))
    # Mosquitto grants the subscriptions and checks read access per message.
    a.subscribe(B.command, B.desired, "fogline/devices/+/command", "fogline/#")
    a.subscribe(A.desired, A.command)
    b.subscribe(B.command, B.desired)

    assert delivered(controller.publish(B.command, b"b-command"))
    assert delivered(controller.publish(A.command, b"a-command"))

    seen_by_a = a.until(A.command, b"a-command")
    assert {m.topic for m in seen_by_a} == {A.desired, A.command}
    assert not [m for m in seen_by_a if b"b-" in m.payload]
    seen_by_b = b.until(B.command, b"b-command")
    assert (B.desired, b"b-desired") in {(m.topic, m.payload) for m in seen_by_b}


def test_a_device_cannot_publish_as_another_and_the_controller_reads_all(
    peers: dict[str, Peer],
) -> None:
    controller, a = peers["controller"], peers["dev-a"]
    controller.subscribe("fogline/#")

    for topic in (B.state, B.telemetry, B.presence, A.desired, A.command):
        reason = a.publish(topic, b"forged")
        assert reason.value == NOT_AUTHORIZED, (topic, reason)
    for topic in (A.state, A.telemetry, A.presence):
        assert delivered(a.publish(topic, b"mine"))

    seen = controller.until(A.presence, b"mine")
    assert [(m.topic, m.payload) for m in seen] == [
        (A.state, b"mine"),
        (A.telemetry, b"mine"),
        (A.presence, b"mine"),
    ]


def test_a_device_offers_only_as_itself_and_cannot_answer_its_own_offer(
    peers: dict[str, Peer],
) -> None:
    controller, a = peers["controller"], peers["dev-a"]
    controller.subscribe("fogline/#")
    for topic in (B.topic("offer"), A.topic("offer-ack")):
        reason = a.publish(topic, b"forged")
        assert reason.value == NOT_AUTHORIZED, (topic, reason)
    assert delivered(a.publish(A.topic("offer"), b"mine"))
    seen = controller.until(A.topic("offer"), b"mine")
    assert [(m.topic, m.payload) for m in seen] == [(A.topic("offer"), b"mine")]


def test_devices_share_the_cluster_topics_and_still_not_each_others(
    peers: dict[str, Peer],
) -> None:
    controller, a, b = peers["controller"], peers["dev-a"], peers["dev-b"]
    controller.subscribe("fogline/cluster/+/nodes/+")
    b.subscribe("fogline/cluster/line/#")
    presence = b'{"node": "n1", "state": "online", "device": "dev-a"}'

    assert delivered(a.publish("fogline/cluster/line/nodes/n1", presence, retain=True))
    assert delivered(a.publish("fogline/cluster/line/done/n1", b"done"))
    assert a.publish(B.presence, b"forged").value == NOT_AUTHORIZED  # the fleet's rules hold

    seen = b.until("fogline/cluster/line/done/n1", b"done")
    assert [(m.topic, m.payload) for m in seen] == [
        ("fogline/cluster/line/nodes/n1", presence),
        ("fogline/cluster/line/done/n1", b"done"),
    ]
    assert controller.until("fogline/cluster/line/nodes/n1", presence)


def test_with_username_as_client_id_a_device_cannot_take_over_anothers_session(
    tmp_path: Path,
) -> None:
    config = BrokerConfig(folder=tmp_path, port=free_port(), username_as_client_id=True)
    with LocalBroker(config) as running:
        controller = Peer(running, running.add_controller())
        b = Peer(running, running.add_device("dev-b"))
        assert controller.connect().value == 0 and b.connect().value == 0
        dropped: list[ReasonCode] = []
        b.client.on_disconnect = lambda c, u, flags, reason, p: dropped.append(reason)
        b.subscribe(B.command)

        intruder = Peer(running, running.add_device("dev-a"), client_id="dev-b")
        assert intruder.connect().value == 0  # as client "dev-a", its own user name
        assert delivered(controller.publish(B.command, b"still yours"))

        b.until(B.command, b"still yours")
        assert dropped == []
        for peer in (intruder, b, controller):
            peer.close()


def test_wrong_unknown_or_missing_credentials_are_refused(
    broker: LocalBroker, peers: dict[str, Peer]
) -> None:
    for credentials in (Credentials("dev-a", "wrong"), Credentials("dev-z", "x"), None):
        reason = Peer(broker, credentials, client_id="intruder").connect()
        assert reason.value in REFUSED, (credentials, reason)


def test_a_device_added_while_the_broker_runs_connects_after_reload(
    broker: LocalBroker,
) -> None:
    folder = broker.config.folder
    assert Peer(broker, Credentials("dev-c", "guess")).connect().value in REFUSED

    credentials = broker.add_device("dev-c")  # writes the password file, then SIGHUP
    password = device_credentials(folder)("dev-d")  # as a controller in another process does

    c = Peer(broker, credentials)
    assert c.connect().value == 0
    assert delivered(c.publish(DeviceTopics("fogline", "dev-c").state, b"up"))
    c.close()
    d = Peer(broker, Credentials("dev-d", password))
    assert d.connect().value == 0
    d.close()
    broker.passwords.remove("dev-d")
    assert reload_broker(folder)
    assert Peer(broker, Credentials("dev-d", password)).connect().value in REFUSED


def test_retained_desired_state_and_queued_commands_outlive_a_restart(
    broker: LocalBroker,
) -> None:
    controller = Peer(broker, broker.add_controller(), client_id="controller-test")
    credentials = broker.add_device("dev-a")
    device = Peer(broker, credentials, session=True)
    assert controller.connect().value == 0 and device.connect().value == 0
    device.subscribe(A.command)
    device.close()  # offline; its session keeps the subscription
    assert delivered(controller.publish(A.desired, b"generation-7", retain=True))
    assert delivered(controller.publish(A.command, b"rollback"))
    controller.close()

    broker.stop()
    broker.start()

    device = Peer(broker, credentials, session=True)
    assert device.connect().value == 0
    device.until(A.command, b"rollback")  # queued while it was away, kept across the restart
    device.subscribe(A.desired)
    device.until(A.desired, b"generation-7")
    device.close()


def test_password_file_is_private_hashed_and_changed_only_by_mosquitto_passwd(
    tmp_path: Path,
) -> None:
    passwords = PasswordFile(tmp_path / "passwords")
    assert stat.S_IMODE((tmp_path / "passwords").stat().st_mode) == 0o600

    first = passwords.add("cam-1")
    passwords.set("cam-2", "chosen one")
    assert passwords.users() == ["cam-1", "cam-2"]
    assert len(first) >= 32 and first != passwords.add("cam-1")
    text = (tmp_path / "passwords").read_text()
    assert first not in text and "chosen one" not in text and "$7$" in text
    assert stat.S_IMODE((tmp_path / "passwords").stat().st_mode) == 0o600
    passwords.remove("cam-1")
    assert passwords.users() == ["cam-2"]
    with pytest.raises(ConfigError, match="not in the password file"):
        passwords.remove("cam-1")
    with pytest.raises(ConfigError, match="user name"):
        passwords.add("cam:1")
    with pytest.raises(ConfigError, match="one non-empty line"):
        passwords.set("cam-2", "two\nlines")


def test_tls_listener_takes_a_client_that_trusts_its_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = BrokerConfig(folder=tmp_path / "broker", port=free_port(), tls_cert=cert, tls_key=key)
    with LocalBroker(config) as running:
        assert running.url.startswith("mqtts://127.0.0.1:")
        device = Peer(running, running.add_device("dev-a"), tls_ca=cert)
        assert device.connect().value == 0
        assert delivered(device.publish(A.state, b"over tls"))
        device.close()


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    missing = BrokerConfig(
        folder=tmp_path, tls_cert=tmp_path / "nope.pem", tls_key=tmp_path / "nope.key"
    )
    with pytest.raises(ConfigError, match=r"certificate file .*nope\.pem does not exist"):
        LocalBroker(missing).start()
    with pytest.raises(ConfigError, match="apt-get install mosquitto"):
        LocalBroker(BrokerConfig(folder=tmp_path), binary=str(tmp_path / "no-mosquitto"))
    with pytest.raises(ConfigError, match="device id"):
        LocalBroker(BrokerConfig(folder=tmp_path)).add_device("a/b")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_amqtt_cannot_stand_in_because_it_refuses_mqtt5() -> None:
    """Why there is no embedded fallback: amqtt answers an MQTT 5 CONNECT 'unsupported'."""
    from amqtt.broker import Broker

    port = free_port()
    ready, stop = threading.Event(), threading.Event()

    def serve() -> None:
        async def main() -> None:
            listener = {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}
            broker = Broker({"listeners": listener})
            await broker.start()
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await broker.shutdown()

        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        connacks: queue.Queue[ReasonCode] = queue.Queue()
        client.on_connect = lambda c, u, f, reason, p: connacks.put(reason)
        client.connect("127.0.0.1", port)
        client.loop_start()
        reason = connacks.get(timeout=10)
        client.disconnect()
        client.loop_stop()
        assert reason.value == 0x84, reason  # unsupported protocol version
    finally:
        stop.set()
        thread.join(10)


# -- fogline broker ------------------------------------------------------------------------

CLI = "import fogline.cli._broker; from fogline.cli import main; raise SystemExit(main({args!r}))"


def fogline_broker(*args: str, cwd: Path) -> subprocess.Popen[str]:
    code = CLI.format(args=["broker", *args])
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=cwd, stderr=subprocess.PIPE, text=True, env=env
    )


def test_fogline_broker_prints_how_to_connect_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = fogline_broker("--port", str(port), cwd=tmp_path)
    lines: queue.Queue[str] = queue.Queue()
    assert process.stderr is not None
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stderr], daemon=True
    ).start()
    try:
        printed = []
        while not any("cluster" in line for line in printed):
            printed.append(lines.get(timeout=30))
        output = "".join(printed)
        assert f"mqtt://127.0.0.1:{port}" in output
        assert "EMQX or HiveMQ" in output

        secrets_file = tmp_path / "fleet-data" / "broker" / "controller.json"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        saved = json.loads(secrets_file.read_text())
        assert saved["url"] == f"mqtt://127.0.0.1:{port}" and saved["password"] not in output
        running = LocalBroker(BrokerConfig(folder=tmp_path / "fleet-data" / "broker", port=port))
        controller = Peer(running, Credentials(saved["user"], saved["password"]))
        assert controller.connect().value == 0
        assert delivered(controller.publish(A.desired, b"hello", retain=True))
        controller.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # Mosquitto is gone


def test_fogline_broker_on_a_port_in_use_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = fogline_broker("--port", str(port), "--data", str(tmp_path), cwd=tmp_path)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in stderr


def test_fogline_broker_with_a_missing_certificate_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    args = ("--tls-cert", str(missing), "--tls-key", str(missing), "--data", str(tmp_path))
    process = fogline_broker(*args, cwd=tmp_path)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.count("\n") == 1 and f"{missing} does not exist" in stderr
