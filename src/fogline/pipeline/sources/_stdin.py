"""JSON lines on standard input as a source: ``[1, 2, 3]`` or ``{"data": [...], "label": "a"}``.

Reading a real stdin waits with ``select`` on its file descriptor and reads
raw bytes, so the source notices ``stop`` within a fraction of a second even
when nothing arrives (POSIX pipes and terminals). A stream without a file
descriptor (a list of lines, ``io.StringIO``) is simply iterated.
"""

from __future__ import annotations

import io
import json
import os
import select
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import numpy as np
from pydantic import Field

from fogline.pipeline._base import ArraySpec, SourceSpec
from fogline.pipeline._item import Corrupt, Item

#: How often a blocked read looks at ``stop``.
POLL_S = 0.1


class StdinSpec(SourceSpec):
    """Float32 vectors from JSON lines on stdin, reshaped to ``shape`` when given.

    Each line is a JSON list of numbers or an object with ``"data"`` (and an
    optional ``"label"`` and ``"id"``, the item id late labels name). A line that is not valid JSON, or whose data does
    not fit, is reported as :class:`Corrupt` at ``"stdin:LINE"``.

    >>> StdinSpec(shape=[2, 3]).output().describe()
    '(2, 3) float32'
    """

    type: Literal["stdin"] = "stdin"
    shape: list[int] | None = Field(None, min_length=1)

    def output(self) -> ArraySpec:
        return ArraySpec(tuple(self.shape) if self.shape else (None,), "float32")

    def build(self, name: str) -> StdinSource:
        return StdinSource(name, None if self.shape is None else tuple(self.shape))


class StdinSource:
    """Parses JSON lines from ``stream`` (default: ``sys.stdin`` when reading starts).

    >>> lines = ['[1, 2]', 'oops', '{"data": [3, 4], "label": "x"}']
    >>> [type(i).__name__ for i in StdinSource("in", (2,), lines).read(threading.Event())]
    ['Item', 'Corrupt', 'Item']
    """

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...] | None = None,
        stream: io.TextIOBase | Iterable[str] | None = None,
    ) -> None:
        self.name = name
        self.shape = shape
        self.stream = stream

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        stream = sys.stdin if self.stream is None else self.stream
        sequence = 0
        for number, line in enumerate(_lines(stream, stop), start=1):
            if stop.is_set():
                return
            if not line.strip():
                continue
            position = f"stdin:{number}"
            try:
                data, label, id_ = self._parse(line)
            except ValueError as exc:
                yield Corrupt(self.name, position, str(exc))
                continue
            meta: dict[str, Any] = {"position": position}
            if label is not None:
                meta["label"] = label
            if id_ is not None:
                meta["id"] = id_
            yield Item(self.name, sequence, time.time(), data, meta)
            sequence += 1

    def _parse(self, line: str) -> tuple[np.ndarray, str | None, str | None]:
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        label = id_ = None
        if isinstance(value, dict):
            if "data" not in value:
                raise ValueError('an object needs a "data" list')
            label = None if value.get("label") is None else str(value["label"])
            if isinstance(value.get("id"), str | int) and not isinstance(value["id"], bool):
                id_ = str(value["id"]) or None
            value = value["data"]
        if not isinstance(value, list):
            raise ValueError(f"expected a list of numbers, got {type(value).__name__}")
        try:
            data = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError("expected a list of numbers") from None
        if self.shape is not None:
            if data.size != int(np.prod(self.shape)):
                raise ValueError(f"{data.size} numbers do not fill shape {list(self.shape)}")
            return data.reshape(self.shape), label, id_
        if data.ndim != 1:
            raise ValueError(f"got shape {list(data.shape)}; set `shape` for non-flat data")
        return data, label, id_


def _lines(stream: io.TextIOBase | Iterable[str], stop: threading.Event) -> Iterator[str]:
    """The stream's lines; from a file descriptor without ever blocking past ``POLL_S``."""
    try:
        fd = stream.fileno()  # type: ignore[union-attr]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        yield from stream
        return
    pending = b""
    while not stop.is_set():
        ready, _, _ = select.select([fd], [], [], POLL_S)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *complete, pending = (pending + chunk).split(b"\n")
        for raw in complete:
            yield raw.decode("utf-8", errors="replace")
    if pending and not stop.is_set():
        yield pending.decode("utf-8", errors="replace")
