"""The agent's connect and enrolment failures are the most specific TransportError.

Real sockets throughout: a closed port, an HTTP server that refuses a token,
one that accepts and never answers, and a Mosquitto with a password file.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fogline.errors import Refused, TimedOut, TransportError, Unreachable
from fogline.fleet.agent._enrol import enrol
from fogline.fleet.agent._session import AgentSession
from fogline.protocol import DeviceTopics
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttMessage, MqttUrl, Topic
from support.broker import free_port


class _Answers(http.server.BaseHTTPRequestHandler):
    """Answers every POST with the status code that starts its path: /403/api/enrol."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status = int(self.path.strip("/").split("/")[0])
        body = b'{"error": "unknown or used token"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def controller() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_enrolling_at_a_closed_port_is_unreachable(tmp_path: Path) -> None:
    controller = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(Unreachable, match="cannot enrol at") as caught:
        enrol(controller, tmp_path, "cam-7", "t", timeout=5)

    assert caught.value.__cause__ is not None
    assert not (tmp_path / "credentials.json").exists()


@pytest.mark.parametrize("status", [403, 409])
def test_a_refused_token_is_refused(controller: str, tmp_path: Path, status: int) -> None:
    with pytest.raises(Refused, match=rf"refused the enrolment of 'cam-7' \({status}\)"):
        enrol(f"{controller}/{status}", tmp_path, "cam-7", "used", timeout=5)

    assert not (tmp_path / "credentials.json").exists()


@pytest.mark.parametrize("status", [429, 503])
def test_a_busy_controller_is_a_plain_transport_error(
    controller: str, tmp_path: Path, status: int
) -> None:
    with pytest.raises(TransportError, match=rf"\({status}\)") as caught:
        enrol(f"{controller}/{status}", tmp_path, "cam-7", "t", timeout=5)

    assert type(caught.value) is TransportError


def test_a_controller_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]

        with pytest.raises(TimedOut, match="cannot enrol at") as caught:
            enrol(f"http://127.0.0.1:{port}", tmp_path, "cam-7", "t", timeout=0.5)

    assert caught.value.__cause__ is not None


def _session(url: MqttUrl) -> AgentSession:
    return AgentSession(url, DeviceTopics("fogline", "cam-7"), reconnect_min=1, reconnect_max=1)


def _telemetry() -> list[MqttMessage]:
    return [MqttMessage(Topic("fogline/devices/cam-7/telemetry"), b"{}", 1, False)]


def test_a_session_with_a_wrong_password_is_refused(tmp_path: Path) -> None:
    config = BrokerConfig(folder=tmp_path / "broker", port=free_port())
    with LocalBroker(config) as broker:
        broker.add_device("cam-7")
        url = MqttUrl("127.0.0.1", config.port, username="cam-7", password="wrong")
        with _session(url) as session:
            assert not session.wait_connected(2)

            with pytest.raises(Refused, match="not connected"):
                session.publish_and_wait(_telemetry(), timeout=1)

            assert session.error is not None and "refused the connection" in session.error


def test_a_session_without_a_broker_is_unreachable() -> None:
    with _session(MqttUrl("127.0.0.1", free_port())) as session:
        assert not session.wait_connected(0.5)

        with pytest.raises(Unreachable, match="not connected"):
            session.publish_and_wait(_telemetry(), timeout=1)

        assert session.error is None
