"""A file transport for the outbox and its receiver side: JSON lines, deduplicated on the key.

:class:`JsonlTransport` appends one line per message (its payload, which
is a JSON object, with sorted keys) and fsyncs before ``send`` returns, so a
returned send is durable. :func:`read_deduplicated`
is the receiver: it keeps the first line of each idempotency key, which turns
at-least-once delivery into an exactly-once effect.

Concurrency: one :class:`JsonlTransport` per file, used by one thread (the
sender's); it holds a lock so sharing it is safe but serial.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fogline.errors import StoreError, TransportError
from fogline.store._result import OutboxMessage


class JsonlTransport:
    """Append each message to ``path`` as one JSON line and fsync it.

    A line torn by a crash mid-write is closed with a newline when the file
    is next opened, so it cannot merge with the next message; the receiver
    skips it, and the message is sent again because its send never returned.

    The topic is not written: a file has one destination. The payload is
    written as one line of JSON with sorted keys (so a result's envelope reads
    as it always did); a payload that is not a JSON object raises
    :class:`~fogline.errors.TransportError` and stays in the outbox.

    >>> import pathlib, tempfile
    >>> from fogline.store import OutboxMessage
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> message = OutboxMessage("fogline/cam0/outbox", b'{"key":"k-1","result_id":9}', "k-1", id=1)
    >>> with JsonlTransport(path) as transport:
    ...     transport.send(message); transport.send(message)
    >>> [m["result_id"] for m in read_deduplicated(path)]
    [9]
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot open for appending: {exc}") from exc
            try:
                size = os.fstat(fd).st_size
                if size:
                    with open(self.path, "rb") as fh:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            os.write(fd, b"\n")  # close a line torn by a crash
            except OSError as exc:
                os.close(fd)
                raise StoreError(f"{self.path}: cannot open for appending: {exc}") from exc
            self._fd = fd
        return self._fd

    def send(self, message: OutboxMessage) -> None:
        self.send_many([message])

    def send_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Append one line per message, then one fsync: all are durable when this returns."""
        data = "".join(_line(m) + "\n" for m in messages).encode()
        with self._lock:
            fd = self._open()
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> JsonlTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _line(message: OutboxMessage) -> str:
    try:
        body = json.loads(message.payload)
    except ValueError as exc:
        raise TransportError(
            f"outbox message {message.id}: the payload is not JSON ({exc})"
        ) from exc
    if not isinstance(body, dict):
        raise TransportError(f"outbox message {message.id}: the payload is not a JSON object")
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def read_deduplicated(path: str | Path) -> list[dict[str, Any]]:
    """The messages in a JSON-lines file, first line per idempotency ``key`` only.

    Lines that are not a JSON object with a ``key`` (torn by a crash) are skipped.
    """
    path = Path(path)
    seen: set[str] = set()
    messages: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(message, dict) or not isinstance(message.get("key"), str):
                    continue
                if message["key"] not in seen:
                    seen.add(message["key"])
                    messages.append(message)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read received messages: {exc}") from exc
    return messages
