"""Where late labels come from: ``mqtt``, ``csv`` (optionally followed), ``stdin``, ``http``, ``delayed``.

Each is a spec (``labels.source`` in a pipeline file, picked by ``type:``)
that builds a :class:`LabelSource`: ``read(stop)`` yields one
:class:`LabelMessage` per label, or a :class:`BadLabel` for input that
names no item or carries no label (the joiner counts it ``invalid`` and logs
it), until the source ends or ``stop`` is set. Each source runs on its own
thread; none of them touches the pipeline's data path.

A source that loses input it had taken (an MQTT client's full queue) yields a
:class:`LostLabels`, counted ``dropped``. On ``stop`` a source stops taking
input first, then hands on what it had already taken.

A message carries a label under ``label_field`` for the item named under
``id_field`` (``id`` and ``label`` unless the ``labels:`` section says
otherwise): a JSON object ``{"id": "digits#17", "label": "7"}`` or a list of
them (mqtt, stdin, http), a CSV row with those columns (csv).
"""

from __future__ import annotations

import csv
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, model_validator

from fogline.errors import ConfigError
from fogline.pipeline._base import ExistingPath, Spec, _resolve
from fogline.pipeline.sources._dataset import DatasetSpec
from fogline.pipeline.sources._stdin import _lines
from fogline.transport.mqtt import BrokerUrl, MqttSubscriber, TopicFilterField

log = logging.getLogger("fogline.pipeline.labels")

#: How often a waiting source looks at ``stop`` (seconds).
POLL_S = 0.1
#: The largest HTTP body the labels endpoint reads.
MAX_BODY = 4 << 20
#: How many labels a source holds for the joiner before it answers "retry later" (http)
#: or drops the oldest message (mqtt).
MAX_QUEUED = 4096


@dataclass(frozen=True, slots=True)
class LabelMessage:
    """A label for the item ``item_id``, read at ``received_at`` (epoch s) from ``position``."""

    item_id: str
    label: Any
    received_at: float
    position: str


@dataclass(frozen=True, slots=True)
class BadLabel:
    """Input at ``position`` that is not a usable label, and why."""

    position: str
    reason: str


@dataclass(frozen=True, slots=True)
class LostLabels:
    """``count`` messages at ``position`` that were dropped before they were read, and why."""

    position: str
    reason: str
    count: int


#: What a message or row reads as.
Parsed = LabelMessage | BadLabel
#: What a source yields.
Incoming = LabelMessage | BadLabel | LostLabels


class LabelSource:
    """Yields labels until it ends or ``stop`` is set; ``ready`` is set once it listens."""

    ready: threading.Event

    def read(self, stop: threading.Event) -> Iterator[Incoming]:
        raise NotImplementedError


@dataclass(frozen=True)
class Fields:
    """Which fields of a message hold the item id and the label."""

    id: str = "id"
    label: str = "label"

    def take(self, body: object, position: str) -> Parsed:
        """One label from one decoded JSON object or CSV row.

        >>> Fields().take({"id": 17, "label": "7"}, "stdin:1")  # doctest: +ELLIPSIS
        LabelMessage(item_id='17', label='7', received_at=..., position='stdin:1')
        >>> Fields().take({"label": "7"}, "stdin:2")
        BadLabel(position='stdin:2', reason='no "id" (the item the label is for)')
        """
        if not isinstance(body, dict):
            return BadLabel(position, f"expected a JSON object, got {type(body).__name__}")
        item_id = body.get(self.id)
        if isinstance(item_id, int) and not isinstance(item_id, bool):
            item_id = str(item_id)
        if not isinstance(item_id, str) or not item_id.strip():
            what = "no" if item_id is None or item_id == "" else f"a bad ({item_id!r})"
            return BadLabel(position, f'{what} "{self.id}" (the item the label is for)')
        label = body.get(self.label)
        if label is None or label == "":
            return BadLabel(position, f'no "{self.label}" for item {item_id!r}')
        return LabelMessage(item_id.strip(), label, time.time(), position)

    def json(self, text: str | bytes, position: str) -> list[Parsed]:
        """The labels in a JSON text: one object, or a list of them."""
        try:
            body = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            return [BadLabel(position, f"not JSON: {exc}")]
        if isinstance(body, list):
            return [self.take(one, f"{position}[{i}]") for i, one in enumerate(body)]
        return [self.take(body, position)]


# --- mqtt ----------------------------------------------------------------------------------------


class MqttLabelsSpec(Spec):
    """``type: mqtt``: labels as JSON messages on ``topic`` (``+``/``#`` allowed) at ``url``."""

    type: Literal["mqtt"] = "mqtt"
    url: BrokerUrl
    topic: TopicFilterField
    qos: Literal[0, 1, 2] = 1
    client_id: str | None = None

    def build(self, fields: Fields) -> LabelSource:
        return MqttLabels(self, fields)


class MqttLabels(LabelSource):
    def __init__(self, spec: MqttLabelsSpec, fields: Fields) -> None:
        self.spec, self.fields = spec, fields
        self.ready = threading.Event()
        self.subscriber: MqttSubscriber | None = None

    def read(self, stop: threading.Event) -> Iterator[Incoming]:
        spec = self.spec
        subscriber = MqttSubscriber(
            spec.url, spec.topic, qos=spec.qos, client_id=spec.client_id, maxsize=MAX_QUEUED
        )
        self.subscriber = subscriber  # its ``dropped`` is counted here as LostLabels
        closed = False
        lost = 0
        try:
            while not stop.is_set():
                if subscriber.error is not None:
                    raise ConfigError(subscriber.error)
                message = subscriber.get(timeout=POLL_S)
                if subscriber.wait_subscribed(0):
                    self.ready.set()
                if message is not None:
                    yield from self.fields.json(message.payload, f"mqtt {message.topic}")
                if subscriber.dropped > lost:
                    yield self._lost(subscriber.dropped - lost)
                    lost = subscriber.dropped
            # Stop taking messages, then hand on those already taken.
            subscriber.close()
            closed = True
            while (message := subscriber.get(timeout=0)) is not None:
                yield from self.fields.json(message.payload, f"mqtt {message.topic}")
            if subscriber.dropped > lost:
                yield self._lost(subscriber.dropped - lost)
        finally:
            if not closed:
                subscriber.close()

    def _lost(self, count: int) -> LostLabels:
        return LostLabels(
            f"mqtt {self.spec.topic}",
            f"{count} messages dropped unread: more than {MAX_QUEUED} were waiting "
            "(labels come faster than they are joined)",
            count,
        )


# --- csv -----------------------------------------------------------------------------------------


class CsvLabelsSpec(Spec):
    """``type: csv``: a CSV file with a header naming the id and label columns.

    ``follow: true`` keeps reading as lines are appended (like ``tail -f``),
    and waits for the file if it does not exist yet; otherwise the file is
    read once, to its end.
    """

    type: Literal["csv"] = "csv"
    path: Path
    follow: bool = False

    @model_validator(mode="before")
    @classmethod
    def _resolved(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and isinstance(data.get("path"), str | Path):
            data = {**data, "path": _resolve(Path(data["path"]), info)}
        return data

    @model_validator(mode="after")
    def _exists_unless_followed(self) -> CsvLabelsSpec:
        if not self.follow and not self.path.exists():
            raise ValueError(
                f"no such labels file: {self.path} (set `follow: true` to wait for it)"
            )
        return self

    def check(self, fields: Fields) -> None:
        """The header names both columns (when the file is there to read)."""
        if not self.path.exists():
            return
        with self.path.open(newline="", encoding="utf-8-sig") as file:
            header = [name.strip() for name in next(csv.reader(file), [])]
        if not header:
            return  # empty so far: a followed file may get its header later
        for column in (fields.id, fields.label):
            if column not in header:
                raise ConfigError(
                    f"{self.path.name} has no column {column!r}; it has: {', '.join(header)}"
                )

    def build(self, fields: Fields) -> LabelSource:
        return CsvLabels(self, fields)


class CsvLabels(LabelSource):
    def __init__(self, spec: CsvLabelsSpec, fields: Fields) -> None:
        self.spec, self.fields = spec, fields
        self.ready = threading.Event()

    def read(self, stop: threading.Event) -> Iterator[Incoming]:
        path, follow = self.spec.path, self.spec.follow
        self.ready.set()
        while not path.exists():
            if stop.wait(POLL_S):
                return
        header: list[str] | None = None
        pending = ""
        number = 0
        with path.open(encoding="utf-8-sig", newline="") as file:
            while not stop.is_set():
                chunk = file.readline()
                if not chunk:
                    if not follow:
                        break
                    stop.wait(POLL_S)
                    continue
                pending += chunk
                if not pending.endswith("\n") and follow:
                    continue  # a line still being written
                line, pending = pending, ""
                number += 1
                if not line.strip():
                    continue
                cells = next(csv.reader([line]))
                if header is None:
                    header = [c.strip() for c in cells]
                    continue
                position = f"{path.name}:{number}"
                if len(cells) != len(header):
                    yield BadLabel(position, f"{len(cells)} fields, the header has {len(header)}")
                    continue
                yield self.fields.take(dict(zip(header, cells, strict=True)), position)


# --- stdin ---------------------------------------------------------------------------------------


class StdinLabelsSpec(Spec):
    """``type: stdin``: JSON lines on standard input, each one label object (or a list)."""

    type: Literal["stdin"] = "stdin"

    def build(self, fields: Fields) -> LabelSource:
        return StdinLabels(fields)


class StdinLabels(LabelSource):
    def __init__(self, fields: Fields, stream: Any = None) -> None:
        self.fields = fields
        self.stream = stream
        self.ready = threading.Event()

    def read(self, stop: threading.Event) -> Iterator[Incoming]:
        import sys

        self.ready.set()
        stream = sys.stdin if self.stream is None else self.stream
        for number, line in enumerate(_lines(stream, stop), start=1):
            if line.strip():
                yield from self.fields.json(line, f"stdin:{number}")


# --- http ----------------------------------------------------------------------------------------


class HttpLabelsSpec(Spec):
    """``type: http``: an endpoint the pipeline serves; POST one label object or a list.

    A body that is not JSON, or holds an entry without an id or a label (or
    one of the wrong type), is answered ``400`` naming each problem, and none
    of it is taken; a good one ``202`` with ``{"accepted": n}``, all of it
    taken, or ``503`` (retry later) with ``{"accepted": 0}``, none of it, when
    the pipeline is behind on labels. ``port: 0`` takes a free port; the
    pipeline logs the URL it listens on.
    """

    type: Literal["http"] = "http"
    host: str = "127.0.0.1"
    port: int = Field(default=8077, ge=0, le=65535)
    path: str = Field(default="/labels", pattern=r"^/")

    def build(self, fields: Fields) -> LabelSource:
        return HttpLabels(self, fields)


class HttpLabels(LabelSource):
    """Serves ``POST {path}`` on its own threads while :meth:`read` runs; ``url`` once ready.

    ``problem`` checks each label's type before the endpoint accepts it (the
    joiner sets it to its own check), so a client hears at once what is wrong.
    """

    def __init__(self, spec: HttpLabelsSpec, fields: Fields) -> None:
        self.spec, self.fields = spec, fields
        self.problem: Callable[[Any], str | None] = _no_problem
        self.ready = threading.Event()
        self.url: str | None = None
        # Unbounded: the handlers reserve room under _room (a body is queued whole or not at all).
        self._queue: queue.Queue[Incoming] = queue.Queue()
        self._room = threading.Condition()
        self._closing = False

    def read(self, stop: threading.Event) -> Iterator[Incoming]:
        try:
            server = ThreadingHTTPServer((self.spec.host, self.spec.port), self._handler())
        except OSError as exc:
            raise ConfigError(
                f"labels.source: cannot listen on {self.spec.host}:{self.spec.port}: "
                f"{exc.strerror or exc}"
            ) from exc
        server.daemon_threads = False  # server_close waits for the requests being answered
        port = server.server_address[1]
        self.url = f"http://{self.spec.host}:{port}{self.spec.path}"
        log.info("labels: POST them to %s", self.url)
        thread = threading.Thread(target=server.serve_forever, name="fogline-labels-http")
        thread.daemon = True
        thread.start()
        self.ready.set()
        stopped = False
        try:
            while not stop.is_set():
                try:
                    yield self._taken(self._queue.get(timeout=POLL_S))
                except queue.Empty:
                    continue
            # Stop taking requests, let those being answered finish, then hand on all
            # that was accepted (each was answered 202).
            self._stop(server, thread)
            stopped = True
            while True:
                try:
                    yield self._taken(self._queue.get_nowait())
                except queue.Empty:
                    break
        finally:
            if not stopped:
                self._stop(server, thread)

    def _stop(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        with self._room:
            self._closing = True
            self._room.notify_all()
        server.shutdown()
        server.server_close()
        thread.join()

    def _taken(self, entry: Incoming) -> Incoming:
        with self._room:
            self._room.notify_all()
        return entry

    def _reserve(self, entries: Sequence[Incoming], wait_s: float) -> bool:
        """Queue ``entries`` whole when there is room (or the queue is empty) within ``wait_s``."""
        deadline = time.monotonic() + wait_s
        with self._room:
            while True:
                if self._closing:
                    return False
                waiting = self._queue.qsize()
                if waiting == 0 or waiting + len(entries) <= MAX_QUEUED:
                    for entry in entries:
                        self._queue.put_nowait(entry)
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._room.wait(min(left, POLL_S))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10.0  # a client that stalls mid-body cannot hold up shutdown for long

            def do_POST(self) -> None:
                if self.path.split("?", 1)[0] != owner.spec.path:
                    self._answer(404, {"error": f"POST labels to {owner.spec.path}"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, {"error": f"a body of at most {MAX_BODY} bytes"})
                    return
                where = f"http {self.client_address[0]}"
                found = owner.fields.json(self.rfile.read(length), where)
                bad: list[BadLabel] = []
                for entry in found:
                    if isinstance(entry, BadLabel):
                        bad.append(entry)
                    elif (wrong := owner.problem(entry.label)) is not None:
                        bad.append(BadLabel(entry.position, f"item {entry.item_id!r}: {wrong}"))
                if bad:
                    for entry in bad:  # counted as invalid, like any other source's
                        owner._queue.put(entry)
                    # The client hears each problem by its index in the body ([3]: ...).
                    told = [
                        f"{b.position[len(where) :]}: {b.reason}".lstrip(": ") for b in bad[:20]
                    ]
                    self._answer(400, {"error": "; ".join(told), "accepted": 0})
                    return
                if not owner._reserve(found, 5.0):
                    self._answer(
                        503,
                        {"error": "the pipeline is behind on labels; retry later", "accepted": 0},
                    )
                    return
                self._answer(202, {"accepted": len(found)})

            def do_GET(self) -> None:
                self._answer(405, {"error": f"POST labels to {owner.spec.path}"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the pipeline logs bad labels itself

        return Handler


def _no_problem(label: Any) -> str | None:
    return None


# --- delayed (a replay for demos and tests) ------------------------------------------------------


class DelayedLabelsSpec(Spec):
    """``type: delayed``: a data set's own labels, replayed late (demos and tests).

    Label ``i`` names the item ``{data set}#{i}`` (the id a ``dataset`` source
    gives it) and arrives ``delay_s`` after the run starts plus ``i / rate``
    seconds (all at once without ``rate``); ``fraction`` < 1 labels only that
    share of the items (a seeded random choice).
    """

    type: Literal["delayed"] = "delayed"
    path: ExistingPath | None = None
    function: str | None = None
    delay_s: float = Field(default=5.0, ge=0)
    rate: float | None = Field(default=None, gt=0)
    fraction: float = Field(default=1.0, gt=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _one(self) -> DelayedLabelsSpec:
        if (self.path is None) == (self.function is None):
            raise ValueError("delayed takes either `path` (an .npz file) or `function`")
        return self

    def dataset(self) -> DatasetSpec:
        return DatasetSpec(path=self.path, function=self.function)

    def build(self, fields: Fields) -> LabelSource:
        return DelayedLabels(self)


class DelayedLabels(LabelSource):
    def __init__(self, spec: DelayedLabelsSpec) -> None:
        self.spec = spec
        self.ready = threading.Event()

    def read(self, stop: threading.Event) -> Iterator[Incoming]:
        dataset = self.spec.dataset()
        _, labels = dataset.arrays()
        if labels is None:
            raise ConfigError(f"labels.source: {dataset.where} has no labels to replay")
        chosen = np.arange(len(labels))
        if self.spec.fraction < 1:
            rng = np.random.default_rng(self.spec.seed)
            keep = rng.random(len(labels)) < self.spec.fraction
            chosen = chosen[keep]
        start = time.monotonic() + self.spec.delay_s
        self.ready.set()
        for i in chosen:
            due = start + (i / self.spec.rate if self.spec.rate else 0.0)
            if stop.wait(max(0.0, due - time.monotonic())):
                return
            where = f"{dataset.where}#{i}"
            yield LabelMessage(where, str(labels[i]), time.time(), f"delayed {where}")
