"""Value objects of the store: a :class:`Result`, a stored :class:`Record`, an :class:`OutboxMessage`.

All are frozen dataclasses that validate themselves; they hold no
connection and are safe to share between threads. ``outputs`` is checked to
be a mapping with string keys here; whether its values are JSON is found out
when the store serialises it (see :func:`outputs_json`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Result:
    """One model output to keep: what produced it, from which input, when, and the outputs.

    ``position`` is where in its source the input was (``"cat/a.png"``,
    ``"clip.avi#frame 120"``, ``"log.csv:17"``, ``"mqtt sensors/pump1"``);
    ``None`` for a result that has none (telemetry, a row stored before
    results had positions). ``sync=True`` also queues it in the outbox, to be
    delivered when online.

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

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``outputs`` as given); ``position`` is always there, maybe ``None``."""
        return {
            "source": self.source,
            "sequence": self.sequence,
            "position": self.position,
            "captured_at": self.captured_at,
            "model": self.model,
            "model_version": self.model_version,
            "outputs": dict(self.outputs),
            "sync": self.sync,
        }

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
    """A pending outbox entry: deliver ``result`` under idempotency ``key``.

    ``id`` orders delivery; ``attempts`` counts failed deliveries so far.
    Receivers dedupe on ``key``, which is fixed when the result is added and
    the same on every redelivery.

    >>> m = OutboxMessage(1, "0b6f…", 5, Result("cam0", 0, 0.0, "digits", "3", {}, sync=True))
    >>> sorted(m.to_dict())
    ['key', 'result', 'result_id']
    """

    id: int
    key: str
    result_id: int
    result: Result
    attempts: int = 0

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("an outbox message needs an idempotency key")
        if self.attempts < 0:
            raise ValueError(f"attempts cannot be negative, got {self.attempts}")

    def to_dict(self) -> dict[str, Any]:
        """What a transport sends: the key, the result's store id and the result."""
        return {"key": self.key, "result_id": self.result_id, "result": self.result.to_dict()}


def _jsonable(value: object) -> object:
    # numpy scalars and arrays (and anything else with tolist) without importing numpy.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def outputs_json(outputs: Mapping[str, Any]) -> str:
    """Serialise ``outputs``; numpy values become lists/numbers; raises TypeError/ValueError."""
    return json.dumps(outputs, sort_keys=True, separators=(",", ":"), default=_jsonable)
