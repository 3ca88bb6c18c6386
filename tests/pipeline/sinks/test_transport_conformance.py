"""Every outbox transport in TRANSPORT_SPECS against the one contract of a transport.

The messages are real: results added to a real store with ``sync=True``,
read back with ``pending()`` and handed over by a real ``OutboxSender``
(``send`` one at a time with ``batch=1``, ``send_many`` for a round when the
transport has it). The far ends are real: a file, a Mosquitto on loopback,
an HTTP server. Each message must arrive in order, once per send, carrying
its idempotency key so the receiver can dedupe a redelivery. A destination
that cannot be reached is a ``TransportError`` and the message stays
pending until it can be sent.

A spec added to ``TRANSPORT_SPECS`` fails ``test_every_transport_has_an_example``
until it gets an example here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fogline.errors import TransportError
from fogline.pipeline._base import TransportSpec
from fogline.pipeline.sinks import TRANSPORT_SPECS
from fogline.store import OutboxMessage, OutboxSender, Result, ResultStore

T0 = 1_700_000_000.5

RESULTS = [
    Result("cam-0", 0, T0, "digits", "3", {"label": 4, "box": [1, 2, 3, 4]}, True, "a/0.png"),
    Result("caméra-ü", 1, T0 + 1, "dígits", "β", {"label": "ключ ☃", "n": None}, True, "clip 📹"),
    Result("cam-0", 2, T0 + 2, "digits", "3", {"label": 1}),  # not sync: never sent
    Result("cam-0", 3, T0 + 3, "digits", "3", {"nested": {"a": [-1.5]}}, True),  # no position
    Result("caméra-ü", 4, T0 + 4, "digits", "3", {"text": "line\nbreak"}, True, "log.csv:9"),
]
SYNCED = [r for r in RESULTS if r.sync]


@dataclass(frozen=True)
class Receiver:
    """A running far end: the config that reaches it and what it got, in arrival order."""

    config: dict[str, Any]
    received: Callable[[int], list[Any]]  # deliveries (``.body``, ``.key``), once ``n`` came


@dataclass(frozen=True)
class Example:
    valid: dict[str, Any]  # a config that validates (nothing is opened)
    wrong: tuple[str, Any]  # a key of the spec and a value of the wrong type for it
    open: Callable[[Path, pytest.FixtureRequest], Receiver]
    unreachable: Callable[[Path, int], dict[str, Any]]  # a config nothing answers at
    keyed_outside: bool  # the key also travels outside the body (a header, a user property)


@dataclass(frozen=True)
class Line:
    body: Any
    key: str | None = None


def _jsonl(tmp: Path, request: pytest.FixtureRequest) -> Receiver:
    path = tmp / "outbox.jsonl"

    def received(n: int) -> list[Any]:
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return [Line(json.loads(line)) for line in lines]

    return Receiver({"type": "jsonl", "path": "outbox.jsonl"}, received)


def _mqtt(tmp: Path, request: pytest.FixtureRequest) -> Receiver:
    broker = request.getfixturevalue("mosquitto")
    listener = request.getfixturevalue("mqtt_listener")("fogline/#")
    return Receiver({"type": "mqtt", "url": broker.url, "timeout": 5}, listener.wait_for)


def _http(tmp: Path, request: pytest.FixtureRequest) -> Receiver:
    endpoint = request.getfixturevalue("http_endpoint")
    return Receiver(
        {"type": "http", "url": endpoint.url, "timeout": 5}, lambda n: list(endpoint.deliveries)
    )


EXAMPLES: dict[str, Example] = {
    "jsonl": Example(
        {"type": "jsonl", "path": "outbox.jsonl"},
        ("path", 17),
        _jsonl,
        lambda tmp, port: {"type": "jsonl", "path": str(tmp / "no such folder" / "o.jsonl")},
        keyed_outside=False,
    ),
    "mqtt": Example(
        {"type": "mqtt", "url": "mqtt://127.0.0.1:1883"},
        ("qos", "exactly once"),
        _mqtt,
        lambda tmp, port: {"type": "mqtt", "url": f"mqtt://127.0.0.1:{port}", "timeout": 2},
        keyed_outside=True,
    ),
    "http": Example(
        {"type": "http", "url": "http://127.0.0.1:8080/outbox"},
        ("headers", ["Authorization"]),
        _http,
        lambda tmp, port: {"type": "http", "url": f"http://127.0.0.1:{port}/o", "timeout": 2},
        keyed_outside=True,
    ),
}


def _spec_type(cls: type[TransportSpec]) -> str:
    return str(cls.model_fields["type"].annotation.__args__[0])


BY_TYPE = {_spec_type(cls): cls for cls in TRANSPORT_SPECS}


def _spec(kind: str, config: dict[str, Any], tmp: Path) -> TransportSpec:
    return BY_TYPE[kind].model_validate(config, context={"base": tmp, "outputs": tmp})


def _sent(message: OutboxMessage) -> Any:
    """What the far end must get for ``message``: its payload, as JSON reads it back."""
    return json.loads(message.payload)


def _envelope(store: ResultStore, message: OutboxMessage) -> Any:
    """The payload a sync result's message must have: its key, its store id, its record."""
    (record,) = [r for r in store.query(limit=100) if r.id == _sent(message)["result_id"]]
    body = {"key": message.key, "result_id": record.id, "result": record.result.to_dict()}
    return json.loads(json.dumps(body))


def _drain(sender: OutboxSender, store: ResultStore) -> int:
    delivered = 0
    for _ in range(20):
        delivered += sender.deliver_once()
        if store.stats().pending == 0:
            break
    return delivered


def _check_keys(kind: str, deliveries: list[Any]) -> None:
    for delivery in deliveries:
        assert isinstance(delivery.body["key"], str) and delivery.body["key"]
        if EXAMPLES[kind].keyed_outside:
            assert delivery.key == delivery.body["key"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResultStore]:
    with ResultStore(tmp_path / "results.db") as opened:
        opened.add(RESULTS)
        yield opened


def test_every_transport_has_an_example() -> None:
    assert set(EXAMPLES) == set(BY_TYPE)
    assert len(BY_TYPE) == len(TRANSPORT_SPECS)


@pytest.mark.parametrize("batch", [1, 100], ids=["send", "send_many"])
@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_the_sender_delivers_each_message_once_in_order_with_its_key(
    kind: str, batch: int, store: ResultStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Prepare
    receiver = EXAMPLES[kind].open(tmp_path, request)
    messages = store.pending()
    transport = _spec(kind, receiver.config, tmp_path).build()
    # Execute
    delivered = _drain(OutboxSender(store, transport, batch=batch), store)
    transport.close()
    # Assert
    deliveries = receiver.received(len(messages))
    assert [Result.from_dict(_sent(m)["result"]) for m in messages] == SYNCED
    assert [_sent(m) for m in messages] == [_envelope(store, m) for m in messages]
    assert [d.body for d in deliveries] == [_sent(m) for m in messages]
    assert [Result.from_dict(d.body["result"]) for d in deliveries] == SYNCED
    _check_keys(kind, deliveries)
    assert delivered == len(SYNCED) == store.stats().delivered
    assert store.pending() == []


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_a_redelivery_carries_the_same_key_so_the_receiver_dedupes(
    kind: str, store: ResultStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Prepare: every message sent, but the marks lost (a crash before mark_delivered)
    receiver = EXAMPLES[kind].open(tmp_path, request)
    messages = store.pending()
    transport = _spec(kind, receiver.config, tmp_path).build()
    for message in messages:
        transport.send(message)
    # Execute: a new sender finds them still pending and sends them again
    _drain(OutboxSender(store, transport), store)
    transport.close()
    # Assert
    deliveries = receiver.received(2 * len(messages))
    assert len(deliveries) == 2 * len(messages)
    _check_keys(kind, deliveries)
    first: dict[str, Any] = {}
    for delivery in deliveries:
        first.setdefault(delivery.body["key"], delivery.body)
    assert list(first.values()) == [_sent(m) for m in messages]
    assert len({m.key for m in messages}) == len(messages)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_an_unreachable_destination_is_a_transport_error(
    kind: str, store: ResultStore, tmp_path: Path, closed_port: int
) -> None:
    messages = store.pending()
    transport = _spec(kind, EXAMPLES[kind].unreachable(tmp_path, closed_port), tmp_path).build()
    try:
        with pytest.raises(TransportError):
            transport.send(messages[0])
        send_many = getattr(transport, "send_many", None)
        if send_many is not None:
            with pytest.raises(TransportError):
                send_many(messages)
    finally:
        transport.close()


@pytest.mark.parametrize("batch", [1, 100], ids=["send", "send_many"])
@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_an_undelivered_message_stays_pending_and_goes_when_it_can(
    kind: str,
    batch: int,
    store: ResultStore,
    tmp_path: Path,
    closed_port: int,
    request: pytest.FixtureRequest,
) -> None:
    # Prepare
    before = store.pending()
    down = _spec(kind, EXAMPLES[kind].unreachable(tmp_path, closed_port), tmp_path).build()
    # Execute: a round while the destination cannot be reached
    sender = OutboxSender(store, down, batch=batch)
    delivered = sender.deliver_once()
    down.close()
    # Assert: nothing lost, the failure counted on the first message
    after = store.pending()
    assert delivered == 0 and store.stats().delivered == 0
    assert [(m.id, m.key, m.topic, m.payload) for m in after] == [
        (m.id, m.key, m.topic, m.payload) for m in before
    ]
    assert after[0].attempts == 1
    assert sender.last_error is not None
    # Execute: the destination is there now
    receiver = EXAMPLES[kind].open(tmp_path, request)
    up = _spec(kind, receiver.config, tmp_path).build()
    delivered = _drain(OutboxSender(store, up, batch=batch), store)
    up.close()
    # Assert: each delivered once, under the key it had from the start
    deliveries = receiver.received(len(before))
    assert delivered == len(before)
    assert [d.body["key"] for d in deliveries] == [m.key for m in before]
    assert [d.body["result"] for d in deliveries] == [_sent(m)["result"] for m in before]


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_close_is_idempotent(
    kind: str, store: ResultStore, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    receiver = EXAMPLES[kind].open(tmp_path, request)
    transport = _spec(kind, receiver.config, tmp_path).build()
    message = store.pending()[0]
    transport.send(message)
    transport.close()
    transport.close()
    assert [d.body for d in receiver.received(1)] == [_sent(message)]


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_an_unknown_key_is_refused_by_name(kind: str, tmp_path: Path) -> None:
    valid = EXAMPLES[kind].valid
    _spec(kind, valid, tmp_path)  # the base config is fine: the refusal is the key's
    with pytest.raises(ValidationError) as caught:
        _spec(kind, {**valid, "retries": 3}, tmp_path)
    assert [error["loc"] for error in caught.value.errors()] == [("retries",)]


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_a_value_of_the_wrong_type_is_refused_by_name(kind: str, tmp_path: Path) -> None:
    key, value = EXAMPLES[kind].wrong
    assert key in BY_TYPE[kind].model_fields, f"{key!r} is not a key of the {kind} transport"
    with pytest.raises(ValidationError) as caught:
        _spec(kind, {**EXAMPLES[kind].valid, key: value}, tmp_path)
    assert {error["loc"][0] for error in caught.value.errors()} == {key}
