"""Value objects of the store: a :class:`Result`, a stored :class:`Record`, an :class:`OutboxMessage`.

And how a stored result becomes an outbox message by default (:func:`result_message`).

All are frozen dataclasses that validate themselves; they hold no
connection and are safe to share between threads. ``outputs`` is checked to
be a mapping with string keys here; whether its values are JSON is found out
when the store serialises it (see :func:`outputs_json`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Result:
    """One model output to keep: what produced it, from which input, when, and the outputs.

    ``position`` is where in its source the input was (``"cat/a.png"``,
    ``"clip.avi#frame 120"``, ``"log.csv:17"``, ``"mqtt sensors/pump1"``);
    ``None`` for a result that has none (telemetry, a row stored before
    results had positions). ``item_id`` names the input item (``"digits#17"``,
    an id the data carried, or one the pipeline made up): late labels are
    joined to results by it; ``None`` for a result without one. ``sync=True``
    also queues it in the outbox, to be delivered when online.

    >>> r = Result("cam0", 7, 1_700_000_000.0, "digits", "3", {"label": 4}, position="a.png")
    >>> r.sync, r.to_dict()["outputs"]["label"], r.to_dict()["position"]
    (False, 4, 'a.png')
    >>> Result.from_dict(r.to_dict()) == r
    True
    >>> Result("", 7, 0.0, "digits", "3", {})
    Traceback (most recent call last):
    ...
    ValueError: a result needs a non-empty source
    """

    source: str
    sequence: int
    captured_at: float
    model: str
    model_version: str
    outputs: Mapping[str, Any] = field(hash=False)
    sync: bool = False
    position: str | None = None
    item_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise ValueError("a result needs a non-empty source")
        if isinstance(self.sequence, bool) or not isinstance(self.sequence, int):
            raise ValueError(f"sequence must be an int, got {self.sequence!r}")
        if isinstance(self.captured_at, bool) or not isinstance(self.captured_at, int | float):
            raise ValueError(f"captured_at must be epoch seconds, got {self.captured_at!r}")
        if not math.isfinite(self.captured_at):
            raise ValueError(f"captured_at must be finite, got {self.captured_at!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("a result needs a non-empty model name")
        if not isinstance(self.model_version, str):
            raise ValueError(f"model_version must be a str, got {self.model_version!r}")
        if not isinstance(self.outputs, Mapping):
            raise ValueError(f"outputs must be a mapping, got {type(self.outputs).__name__}")
        if not all(isinstance(k, str) for k in self.outputs):
            raise ValueError("outputs must have string keys")
        if not isinstance(self.sync, bool):
            raise ValueError(f"sync must be a bool, got {self.sync!r}")
        if self.position is not None and (not isinstance(self.position, str) or not self.position):
            raise ValueError(f"position must be a non-empty str or None, got {self.position!r}")
        if self.item_id is not None and (not isinstance(self.item_id, str) or not self.item_id):
            raise ValueError(f"item_id must be a non-empty str or None, got {self.item_id!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``outputs`` as given); ``position`` is always there, maybe ``None``.

        ``item_id`` is there when the result has one (so a result without one
        reads, and is sent, exactly as before results had ids).
        """
        data: dict[str, Any] = {
            "source": self.source,
            "sequence": self.sequence,
            "position": self.position,
            "captured_at": self.captured_at,
            "model": self.model,
            "model_version": self.model_version,
            "outputs": dict(self.outputs),
            "sync": self.sync,
        }
        if self.item_id is not None:
            data["item_id"] = self.item_id
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """The inverse of :meth:`to_dict`; a dict from before positions (no key) reads as ``None``."""
        return cls(
            source=data["source"],
            sequence=data["sequence"],
            captured_at=float(data["captured_at"]),
            model=data["model"],
            model_version=data["model_version"],
            outputs=data["outputs"],
            sync=bool(data.get("sync", False)),
            position=data.get("position"),
            item_id=data.get("item_id"),
        )


@dataclass(frozen=True)
class Record:
    """A result as stored: its id in the store and the result.

    >>> Record(1, Result("cam0", 0, 0.0, "digits", "3", {})).id
    1
    """

    id: int
    result: Result

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id < 1:
            raise ValueError(f"a record id is a positive int, got {self.id!r}")


@dataclass(frozen=True)
class OutboxMessage:
    """One outbox message: ``payload`` bytes for ``topic``, delivered under idempotency ``key``.

    The outbox does not look inside a message: what ``topic`` and ``payload``
    mean is up to whoever queued it (the pipeline queues each ``sync``
    result's :func:`envelope`, the agent its telemetry body). ``id`` orders
    delivery (0 for a message not queued yet); ``attempts`` counts failed
    deliveries so far. Receivers dedupe on ``key``, which is fixed when the
    message is queued and the same on every redelivery.

    >>> m = OutboxMessage("fogline/cam0/outbox", b'{"label":4}', "0b6f…", id=1)
    >>> m.topic, m.payload, m.attempts
    ('fogline/cam0/outbox', b'{"label":4}', 0)
    >>> OutboxMessage("t", "text", "k")
    Traceback (most recent call last):
    ...
    ValueError: an outbox payload is bytes, got str
    """

    topic: str
    payload: bytes
    key: str
    id: int = 0
    attempts: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not self.topic:
            raise ValueError("an outbox message needs a non-empty topic")
        if not isinstance(self.payload, bytes):
            raise ValueError(f"an outbox payload is bytes, got {type(self.payload).__name__}")
        if not isinstance(self.key, str) or not self.key:
            raise ValueError("an outbox message needs an idempotency key")
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id < 0:
            raise ValueError(f"an outbox id is zero or more, got {self.id!r}")
        if self.attempts < 0:
            raise ValueError(f"attempts cannot be negative, got {self.attempts}")


#: How a store turns a stored ``sync`` result and its key into an outbox ``(topic, payload)``.
ResultEncoder = Callable[[Record, str], tuple[str, bytes]]


def envelope(record: Record, key: str) -> bytes:
    """The outbox payload of a stored result: ``{"key", "result_id", "result"}`` as compact JSON.

    ``record`` is the result as the store reads it back (outputs sorted, numpy
    values as lists), so the bytes are the same however the result was made.

    >>> envelope(Record(9, Result("cam0", 0, 1.0, "m", "1", {"b": 2, "a": 1}, sync=True)), "k-1")[:40]
    b'{"key":"k-1","result_id":9,"result":{"so'
    """
    body = {"key": key, "result_id": record.id, "result": record.result.to_dict()}
    return json.dumps(body, separators=(",", ":"), default=_jsonable).encode()


def outbox_topic(result: Result) -> str:
    """The default topic of a result's outbox message: ``fogline/{source}/outbox``.

    The source is one topic level: ``/``, ``+``, ``#`` and NUL in it become ``_``.

    >>> outbox_topic(Result("line 1/cam+0", 0, 0.0, "m", "1", {}))
    'fogline/line 1_cam_0/outbox'
    """
    level = result.source
    for char in "/+#\x00":
        level = level.replace(char, "_")
    return f"fogline/{level}/outbox"


def result_message(record: Record, key: str) -> tuple[str, bytes]:
    """The store's default :data:`ResultEncoder`: :func:`outbox_topic` and :func:`envelope`."""
    return outbox_topic(record.result), envelope(record, key)


def _jsonable(value: object) -> object:
    # numpy scalars and arrays (and anything else with tolist) without importing numpy.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def outputs_json(outputs: Mapping[str, Any]) -> str:
    """Serialise ``outputs``; numpy values become lists/numbers; raises TypeError/ValueError."""
    return json.dumps(outputs, sort_keys=True, separators=(",", ":"), default=_jsonable)


def record_from_row(row: Sequence[Any]) -> Record:
    """A :class:`Record` from a ``results`` row: id, source, sequence, captured_at, model,
    model_version, outputs (JSON text), sync, position, then item_id (absent in rows read
    from a store older than item ids)."""
    id_, source, sequence, captured_at, model, model_version, outputs, sync, position = row[:9]
    item_id = row[9] if len(row) > 9 else None
    value = json.loads(outputs)
    assert isinstance(value, dict)
    result = Result(
        source, sequence, captured_at, model, model_version, value, bool(sync), position, item_id
    )
    return Record(id_, result)
