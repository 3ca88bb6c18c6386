"""The webhook sink and the HTTP outbox transport against a real local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from fogline.errors import ConfigError, TransportError
from fogline.pipeline.sinks._http import HttpSinkSpec, HttpTransport, HttpTransportSpec
from fogline.store import OutboxMessage, OutboxSender, Record, Result, ResultStore, envelope


class Endpoint:
    """A real HTTP server in a thread: records each POST, answers from a script, then 200."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.script: list[tuple[int, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                endpoint.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
                )
                status, text = endpoint.script.pop(0) if endpoint.script else (200, "ok")
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

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
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    yield server
    server.close()


def make_results(count: int, sync: bool = False) -> list[Result]:
    return [
        Result("cam0", i, 1.0 + i, "digits", "3", {"label": i}, sync, f"scans/{i}.png")
        for i in range(count)
    ]


def test_sink_posts_each_batch_as_one_json_array(endpoint: Endpoint) -> None:
    # Prepare
    sink = HttpSinkSpec(url=endpoint.url, headers={"Authorization": "Bearer t"}).build()
    # Execute
    sink.write(make_results(3))
    sink.write([])
    sink.close()
    # Assert
    assert len(endpoint.requests) == 1
    request = endpoint.requests[0]
    assert request["headers"]["Authorization"] == "Bearer t"
    assert request["headers"]["Content-Type"] == "application/json"
    assert [Result.from_dict(r) for r in request["json"]] == make_results(3)


def test_sink_failure_is_a_transport_error_with_the_status(endpoint: Endpoint) -> None:
    endpoint.script = [(500, "database on fire")]
    sink = HttpSinkSpec(url=endpoint.url).build()
    with pytest.raises(TransportError, match=r"500 .*database on fire"):
        sink.write(make_results(1))
    sink.write(make_results(1))  # the next batch goes through
    assert len(endpoint.requests) == 2


def test_transport_keys_requests_and_the_sender_retries_a_500(
    endpoint: Endpoint, tmp_path: Path
) -> None:
    # Prepare
    endpoint.script = [(500, "try later"), (503, "still busy")]
    with ResultStore(tmp_path / "r.db") as store:
        ids = store.add(make_results(3, sync=True))
        transport = HttpTransportSpec(url=endpoint.url, timeout=2).build()
        sender = OutboxSender(store, transport, backoff_initial=0.01, backoff_max=0.01)
        # Execute
        delivered = 0
        for _ in range(50):
            delivered += sender.deliver_once()
            if store.stats().pending == 0:
                break
            threading.Event().wait(0.02)
        transport.close()
        # Assert
        assert delivered == 3
        assert store.stats().delivered == 3
    bodies = [r["json"] for r in endpoint.requests]
    assert [b["result_id"] for b in bodies] == [ids[0], ids[0], ids[0], ids[1], ids[2]]
    assert [b["result"]["position"] for b in bodies[2:]] == [f"scans/{i}.png" for i in range(3)]
    assert all(r["headers"]["Idempotency-Key"] == r["json"]["key"] for r in endpoint.requests)
    assert len({b["key"] for b in bodies}) == 3


@pytest.mark.parametrize(
    ("status", "kind"), [(400, "rejected"), (404, "rejected"), (429, "failed"), (408, "failed")]
)
def test_transport_says_whether_the_endpoint_rejected_or_failed(
    endpoint: Endpoint, status: int, kind: str
) -> None:
    endpoint.script = [(status, "x" * 1000)]
    message = _message()
    with HttpTransport(endpoint.url) as transport, pytest.raises(TransportError) as caught:
        transport.send(message)
    assert f"{kind}" in str(caught.value)
    assert f": {status} " in str(caught.value)
    assert len(str(caught.value)) < 400  # an excerpt of the body, not all of it


def test_unreachable_endpoint_is_a_transport_error_from_httpx() -> None:
    transport = HttpTransport("http://127.0.0.1:1/x", timeout=1)
    with pytest.raises(TransportError, match="cannot connect") as caught:
        transport.send(_message())
    transport.close()
    assert caught.value.__cause__ is not None


@pytest.mark.parametrize("url", ["ftp://h/x", "h/x", "http://"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        HttpSinkSpec(url=url)
    with pytest.raises(ConfigError):
        HttpTransport(url)


def _message() -> OutboxMessage:
    record = Record(1, make_results(1, sync=True)[0])
    return OutboxMessage("fogline/cam/outbox", envelope(record, "k-1"), "k-1", id=1)
