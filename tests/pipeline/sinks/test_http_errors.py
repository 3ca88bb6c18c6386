"""The HTTP sink and transport fail with the TransportError subclass that says why.

Against real endpoints: a closed loopback port (:class:`Unreachable`), a
real ``http.server`` answering a status (a 4xx is :class:`Refused`, but 408,
425 and 429 ask to come back later, as a 5xx does), one that answers too
late (:class:`TimedOut`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fogline.errors import Refused, TimedOut, TransportError, Unreachable
from fogline.pipeline.sinks import HttpSink, HttpTransport
from fogline.store import Result

RESULT = Result("cam-0", 0, 1_700_000_000.0, "digits", "3", {"label": 4})


class Answering:
    """A real HTTP server in a thread that answers every POST ``status`` after ``delay`` s."""

    def __init__(self, status: int, delay: float = 0.0) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(delay)
                body = b"no such hook"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def answering() -> Iterator[Callable[..., Answering]]:
    started: list[Answering] = []

    def start(status: int, delay: float = 0.0) -> Answering:
        started.append(Answering(status, delay))
        return started[-1]

    yield start
    for server in started:
        server.close()


def write(url: str, timeout: float = 5.0) -> None:
    """One batch through a webhook sink to ``url``."""
    sink = HttpSink(url, timeout=timeout)
    try:
        sink.write([RESULT])
    finally:
        sink.close()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_a_4xx_answer_is_refused(status: int, answering: Callable[..., Answering]) -> None:
    server = answering(status)
    with pytest.raises(Refused, match=f"rejected it: {status}"):
        write(server.url)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 503])
def test_an_answer_that_asks_to_come_back_later_is_not_refused(
    status: int, answering: Callable[..., Answering]
) -> None:
    server = answering(status)
    with pytest.raises(TransportError, match=f"failed: {status}") as caught:
        write(server.url)
    assert not isinstance(caught.value, Refused | Unreachable | TimedOut)


def test_a_closed_port_is_unreachable(closed_port: int) -> None:
    with pytest.raises(Unreachable, match="cannot connect"):
        write(f"http://127.0.0.1:{closed_port}/hook")


def test_an_answer_too_late_is_timed_out(answering: Callable[..., Answering]) -> None:
    server = answering(200, delay=2.0)
    with pytest.raises(TimedOut, match=r"no answer within 0\.5 s"):
        write(server.url, timeout=0.5)


def test_the_outbox_transport_maps_the_same_way(
    answering: Callable[..., Answering], closed_port: int
) -> None:
    # Through its poster: what send() POSTs is another test's business (the message type).
    refusing = answering(404)
    for url, error in [(refusing.url, Refused), (f"http://127.0.0.1:{closed_port}/o", Unreachable)]:
        with HttpTransport(url, timeout=5) as transport, pytest.raises(error):
            transport.poster.post({"key": "k-1"}, {"Idempotency-Key": "k-1"})
