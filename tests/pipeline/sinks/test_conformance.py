"""Every sink spec in SPECS against the one contract of a sink.

Each kind is built from the dict a pipeline file would hold and writes the
same batches of real results (positions, unicode, nested JSON outputs, an
empty batch) to a real destination: a file, the captured stdout, a shell
command appending to a file, a Mosquitto on loopback, an HTTP server. What
arrives must be each result's record (its ``Result.to_dict()`` as JSON; for
the shell sink, the arguments filled from its fields), in order, once.

A spec added to ``SPECS`` fails ``test_every_spec_has_an_example`` until it
gets an example here, and is then held to the same checks as the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from pydantic import ValidationError

from fogline.errors import TransportError
from fogline.pipeline._base import SinkSpec
from fogline.pipeline.sinks import SPECS
from fogline.store import Result

T0 = 1_700_000_000.25

RESULTS = [
    Result(
        "cam-0",
        0,
        T0,
        "digits",
        "3",
        {"label": 4, "score": 0.875, "boxes": [[1, 2, 30, 40]], "seen": True, "note": None},
        position="scans/0.png",
    ),
    Result(
        "caméra-ü",
        1,
        T0 + 0.5,
        "dígits",
        "3.1-β",
        {"label": "ключ", "text": '雪 ☃ \u2028 "quoted"\nsecond line', "nested": {"a": [-1.5, 0]}},
        sync=True,
        position="clip 📹.avi#frame 120",
    ),
    Result("cam-0", 2, T0 + 1, "digits", "3", {"label": 0}),  # no position
    Result("cam-0", 3, T0 + 2, "digits", "3", {"label": 9, "scores": []}, position="log.csv:17"),
    Result("caméra-ü", 4, T0 + 3, "digits", "3", {"label": "", "empty": {}}, position="b.png"),
]

#: Written in this order: two results, an empty batch, then three.
BATCHES: list[list[Result]] = [RESULTS[:2], [], RESULTS[2:]]


def json_record(result: Result) -> Any:
    """What a JSON sink must deliver for ``result``: its ``to_dict()``, as JSON reads it back."""
    return json.loads(json.dumps(result.to_dict()))


#: The fields the shell example's command passes on, one argument each.
SHELL_FIELDS = ("source", "sequence", "position", "model", "label")


def shell_record(result: Result) -> list[str]:
    """What the shell example appends for ``result``: its fields as ``str.format`` renders them."""
    fields = {**result.to_dict(), **result.outputs}
    return [format(fields[name]) for name in SHELL_FIELDS]


@dataclass(frozen=True)
class Destination:
    """A running far end and how to read it."""

    config: dict[str, Any]  # the sink's entry in a pipeline file, ``type`` included
    arrived: Callable[[int], list[Any]]  # what arrived, once ``n`` did (or a timeout passed)
    record: Callable[[Result], Any] = json_record  # what one result looks like there


Open = Callable[[Path, pytest.FixtureRequest], Destination]


@dataclass(frozen=True)
class Example:
    valid: dict[str, Any]  # a config that validates (nothing is opened)
    wrong: tuple[str, Any]  # a key of the spec and a value of the wrong type for it
    open: Open  # a real destination and the config that writes to it
    failing: Callable[[Path, int], dict[str, Any]] | None = None  # a config that cannot deliver


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _jsonl(tmp: Path, request: pytest.FixtureRequest) -> Destination:
    path = tmp / "out" / "results.jsonl"  # the sink makes the folder
    return Destination(
        {"type": "jsonl", "path": "out/results.jsonl"},  # relative: resolved against outputs
        lambda n: [json.loads(line) for line in _lines(path)],
    )


def _stdout(tmp: Path, request: pytest.FixtureRequest) -> Destination:
    capsys: pytest.CaptureFixture[str] = request.getfixturevalue("capsys")
    printed: list[str] = []

    def arrived(n: int) -> list[Any]:
        printed.extend(capsys.readouterr().out.splitlines())
        return [json.loads(line) for line in printed]

    return Destination({"type": "stdout"}, arrived)


def _shell(tmp: Path, request: pytest.FixtureRequest) -> Destination:
    path = tmp / "commands.tsv"
    script = 'printf "%s\\t%s\\t%s\\t%s\\t%s\\n" "$1" "$2" "$3" "$4" "$5" >> "$0"'
    command = ["sh", "-c", script, str(path), *(f"{{{name}}}" for name in SHELL_FIELDS)]
    return Destination(
        {"type": "shell", "command": command, "timeout": 10},
        lambda n: [line.split("\t") for line in _lines(path)],
        shell_record,
    )


def _mqtt(tmp: Path, request: pytest.FixtureRequest) -> Destination:
    broker = request.getfixturevalue("mosquitto")
    listener = request.getfixturevalue("mqtt_listener")("fogline/#")

    def arrived(n: int) -> list[Any]:
        deliveries = listener.wait_for(n)
        for delivery, result in zip(deliveries, RESULTS, strict=False):
            assert delivery.where == f"fogline/{result.source}/results"
        return [delivery.body for delivery in deliveries]

    return Destination({"type": "mqtt", "url": broker.url, "timeout": 5}, arrived)


def _http(tmp: Path, request: pytest.FixtureRequest) -> Destination:
    endpoint = request.getfixturevalue("http_endpoint")

    def arrived(n: int) -> list[Any]:  # one POST per non-empty batch, a JSON array each
        return [record for delivery in endpoint.deliveries for record in delivery.body]

    return Destination({"type": "http", "url": endpoint.url, "timeout": 5}, arrived)


def _zmq(tmp: Path, request: pytest.FixtureRequest) -> Destination:
    from fogline.transport.zmq import ZmqEndpoint, ZmqSocket
    from support.ports import free_port

    endpoint = ZmqEndpoint("tcp", host="127.0.0.1", port=free_port())
    worker = ZmqSocket("pull", endpoint, bind=True)  # a neighbour that takes the work
    request.addfinalizer(worker.close)
    got: list[Any] = []

    def arrived(n: int) -> list[Any]:
        while len(got) < n and (frames := worker.receive(timeout=5.0)) is not None:
            got.append(json.loads(frames[-1]))
        return got

    return Destination({"type": "zmq", "endpoint": str(endpoint), "timeout": 5}, arrived)


EXAMPLES: dict[str, Example] = {
    "jsonl": Example(
        {"type": "jsonl", "path": "results.jsonl"},
        ("path", 17),
        _jsonl,
        lambda tmp, port: {"type": "jsonl", "path": "/dev/full"},  # a full disk
    ),
    "stdout": Example({"type": "stdout"}, ("format", ["{source}"]), _stdout),
    "shell": Example(
        {"type": "shell", "command": ["true"]},
        ("command", "notify-send {label}"),  # one string, not the argument list
        _shell,
        lambda tmp, port: {"type": "shell", "command": ["sh", "-c", "exit 3"]},
    ),
    "mqtt": Example(
        {"type": "mqtt", "url": "mqtt://127.0.0.1:1883"},
        ("qos", "at least once"),
        _mqtt,
        lambda tmp, port: {"type": "mqtt", "url": f"mqtt://127.0.0.1:{port}", "timeout": 2},
    ),
    "http": Example(
        {"type": "http", "url": "http://127.0.0.1:8080/hook"},
        ("timeout", "soon"),
        _http,
        lambda tmp, port: {"type": "http", "url": f"http://127.0.0.1:{port}/hook", "timeout": 2},
    ),
    "zmq": Example(
        {"type": "zmq", "endpoint": "tcp://127.0.0.1:5557"},
        ("hwm", "plenty"),
        _zmq,
        lambda tmp, port: {"type": "zmq", "endpoint": f"tcp://127.0.0.1:{port}", "timeout": 0.5},
    ),
}


def _spec_type(cls: type[SinkSpec]) -> str:
    return str(cls.model_fields["type"].annotation.__args__[0])


BY_TYPE = {_spec_type(cls): cls for cls in SPECS}

#: The kinds whose sink has a ``close`` (it is optional in the Sink role), read off ``build()``.
CLOSABLE = sorted(
    kind for kind, cls in BY_TYPE.items() if hasattr(get_type_hints(cls.build)["return"], "close")
)


def _spec(kind: str, config: dict[str, Any], tmp: Path) -> SinkSpec:
    return BY_TYPE[kind].model_validate(config, context={"base": tmp, "outputs": tmp})


def _close(sink: Any) -> None:
    close = getattr(sink, "close", None)
    if close is not None:
        close()


def _write_all(sink: Any, batches: Sequence[Sequence[Result]]) -> None:
    for batch in batches:
        sink.write(batch)


def test_every_spec_has_an_example() -> None:
    assert set(EXAMPLES) == set(BY_TYPE)
    assert len(BY_TYPE) == len(SPECS)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_every_result_arrives_once_in_order_as_its_record(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Prepare
    destination = EXAMPLES[kind].open(tmp_path, request)
    sink = _spec(kind, destination.config, tmp_path).build()
    # Execute
    _write_all(sink, BATCHES)
    _close(sink)
    arrived = destination.arrived(len(RESULTS))
    # Assert
    assert arrived == [destination.record(result) for result in RESULTS]
    if destination.record is json_record:
        assert all(set(record) == set(RESULTS[0].to_dict()) for record in arrived)
        assert [Result.from_dict(record) for record in arrived] == RESULTS


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_an_empty_batch_delivers_nothing(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    destination = EXAMPLES[kind].open(tmp_path, request)
    sink = _spec(kind, destination.config, tmp_path).build()
    sink.write([])
    sink.write(RESULTS[:1])  # then one result: the far end is working
    _close(sink)
    assert destination.arrived(1) == [destination.record(RESULTS[0])]


@pytest.mark.parametrize("kind", CLOSABLE)
def test_close_is_idempotent_and_a_closed_sink_refuses_to_write(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Prepare
    destination = EXAMPLES[kind].open(tmp_path, request)
    sink = _spec(kind, destination.config, tmp_path).build()
    sink.write(RESULTS[:1])
    # Execute
    sink.close()  # type: ignore[attr-defined]
    sink.close()  # type: ignore[attr-defined]
    # Assert
    with pytest.raises(TransportError, match="closed"):
        sink.write(RESULTS[1:2])
    assert destination.arrived(1) == [destination.record(RESULTS[0])]


def test_closable_kinds_are_found() -> None:
    # The generated list above must see the sinks that do have a close().
    assert {"jsonl", "mqtt", "http"} <= set(CLOSABLE)
    assert "stdout" not in CLOSABLE


@pytest.mark.parametrize("kind", sorted(k for k in EXAMPLES if EXAMPLES[k].failing is not None))
def test_a_failed_delivery_is_a_transport_error(
    kind: str, tmp_path: Path, closed_port: int
) -> None:
    failing = EXAMPLES[kind].failing
    assert failing is not None
    sink = _spec(kind, failing(tmp_path, closed_port), tmp_path).build()
    try:
        with pytest.raises(TransportError):
            sink.write(RESULTS[:2])
    finally:
        _close(sink)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_an_unknown_key_is_refused_by_name(kind: str, tmp_path: Path) -> None:
    valid = EXAMPLES[kind].valid
    _spec(kind, valid, tmp_path)  # the base config is fine: the refusal is the key's
    with pytest.raises(ValidationError) as caught:
        _spec(kind, {**valid, "colour_of_the_sky": "blue"}, tmp_path)
    assert [error["loc"] for error in caught.value.errors()] == [("colour_of_the_sky",)]


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_a_value_of_the_wrong_type_is_refused_by_name(kind: str, tmp_path: Path) -> None:
    key, value = EXAMPLES[kind].wrong
    assert key in BY_TYPE[kind].model_fields, f"{key!r} is not a key of the {kind} sink"
    with pytest.raises(ValidationError) as caught:
        _spec(kind, {**EXAMPLES[kind].valid, key: value}, tmp_path)
    assert {error["loc"][0] for error in caught.value.errors()} == {key}
