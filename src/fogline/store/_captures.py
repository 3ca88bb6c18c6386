"""Hard examples in the store: the model's input for an item and its answer, kept for retraining.

A :class:`Capture` is what a pipeline's ``capture:`` section decided to keep:
the array the model saw (stored as ``.npy`` bytes, read back with
``allow_pickle=False``), the answer it gave (the result's outputs, as JSON),
and what names the item (its id, source, position, time, model). Captures
live in the same SQLite file as the results, so the same retention (and,
later, encryption at rest) applies to them.

numpy is imported only by the two functions that turn arrays into bytes and
back, so importing the store (as the controller does) stays free of it.

The late label of a captured item, when one arrived, is read from the
``labels`` table (item id → JSON label) when the store has one.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fogline.errors import ConfigError, StoreError
from fogline.store._result import outputs_json

if TYPE_CHECKING:
    import numpy as np

#: The ``captures`` table, added by the store migration of that name.
CAPTURES_TABLE = """
CREATE TABLE captures (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id       TEXT    NOT NULL,
    source        TEXT    NOT NULL,
    position      TEXT,
    captured_at   REAL    NOT NULL,
    model         TEXT    NOT NULL,
    model_version TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    input_name    TEXT    NOT NULL,
    input         BLOB    NOT NULL,
    answer        TEXT    NOT NULL,
    bytes         INTEGER NOT NULL,
    result_id     INTEGER
);
CREATE INDEX captures_captured_at ON captures (captured_at);
CREATE INDEX captures_item_id ON captures (item_id)
"""

_COLUMNS = (
    "c.id, c.item_id, c.source, c.position, c.captured_at, c.model, c.model_version,"
    " c.reason, c.input_name, c.input, c.answer, c.result_id"
)


def npy_bytes(array: Any) -> bytes:
    """``array`` as the bytes of an ``.npy`` file (``np.save``; no pickled objects).

    >>> import numpy as np
    >>> npy_bytes(np.zeros((1, 8, 8), np.float32))[:6]
    b'\\x93NUMPY'
    """
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def npy_array(data: bytes) -> np.ndarray:
    """The array in ``.npy`` bytes; :class:`StoreError` when they are not one."""
    import numpy as np

    try:
        value = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise StoreError(f"a capture's input is not a readable .npy array: {exc}") from exc
    if not isinstance(value, np.ndarray):
        raise StoreError("a capture's input is not a single .npy array")
    return value


@dataclass(frozen=True)
class Capture:
    """One hard example: the model's ``input`` (``.npy`` bytes) for an item and its ``answer``.

    ``reason`` says why it was kept (the ``capture.when`` condition);
    ``input_name`` is the model input the array was fed to, the key it is
    exported under. ``result_id`` links it to the stored result, when known.
    :attr:`bytes` is what it takes in the store (input plus answer).

    >>> import numpy as np
    >>> c = Capture.of(np.ones((2, 2), np.float32), item_id="scanner#3", source="scanner",
    ...     captured_at=1.0, model="digits", model_version="1", reason="score < 0.6",
    ...     input_name="pixels", answer={"label": "3", "score": 0.41})
    >>> float(c.array().sum()), c.bytes
    (4.0, 170)
    >>> Capture.of(np.ones(2), item_id="", source="s", captured_at=0.0, model="m",
    ...     model_version="1", reason="r", input_name="x", answer={})
    Traceback (most recent call last):
    ...
    ValueError: a capture needs a non-empty item_id
    """

    item_id: str
    source: str
    captured_at: float
    model: str
    model_version: str
    reason: str
    input_name: str
    input: bytes = field(repr=False)
    answer: Mapping[str, Any] = field(hash=False)
    position: str | None = None
    result_id: int | None = None
    _answer_json: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("item_id", "source", "model", "reason", "input_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"a capture needs a non-empty {name}")
        if not isinstance(self.model_version, str):
            raise ValueError(f"model_version must be a str, got {self.model_version!r}")
        if isinstance(self.captured_at, bool) or not isinstance(self.captured_at, int | float):
            raise ValueError(f"captured_at must be epoch seconds, got {self.captured_at!r}")
        if not math.isfinite(self.captured_at):
            raise ValueError(f"captured_at must be finite, got {self.captured_at!r}")
        if not isinstance(self.input, bytes) or not self.input:
            raise ValueError("a capture's input is the non-empty bytes of an .npy array")
        if not isinstance(self.answer, Mapping):
            raise ValueError(f"answer must be a mapping, got {type(self.answer).__name__}")
        if self.position is not None and (not isinstance(self.position, str) or not self.position):
            raise ValueError(f"position must be a non-empty str or None, got {self.position!r}")
        try:
            text = outputs_json(self.answer)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a capture's answer is not JSON: {exc}") from exc
        object.__setattr__(self, "_answer_json", text)

    @classmethod
    def of(cls, array: Any, **fields: Any) -> Capture:
        """A capture of ``array`` (saved as ``.npy`` bytes) with the other ``fields``."""
        return cls(input=npy_bytes(array), **fields)

    def array(self) -> np.ndarray:
        """The model input, read back from its ``.npy`` bytes."""
        return npy_array(self.input)

    @property
    def bytes(self) -> int:
        """What the capture takes in the store: the input's ``.npy`` bytes and the answer's JSON."""
        return len(self.input) + len(self._answer_json.encode())


@dataclass(frozen=True)
class CaptureRecord:
    """A stored capture: its id, the capture, and its late label when one arrived (else None)."""

    id: int
    capture: Capture
    label: Any = None

    @property
    def labelled(self) -> bool:
        return self.label is not None


class CaptureStore:
    """The :class:`~fogline.store.ResultStore` methods for captures (a mixin: it needs the
    store's ``_read``/``_write`` transactions)."""

    path: Any

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _write(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def add_captures(self, captures: Iterable[Capture]) -> list[int]:
        """Store ``captures`` in one transaction; their ids once it is durable (all or none).

        >>> import pathlib, tempfile, numpy as np
        >>> from fogline.store import ResultStore
        >>> with ResultStore(pathlib.Path(tempfile.mkdtemp()) / "r.db") as store:
        ...     ids = store.add_captures([Capture.of(np.arange(4), item_id="a", source="s",
        ...         captured_at=1.0, model="m", model_version="1", reason="r",
        ...         input_name="x", answer={"label": "1"})])
        ...     (record,) = store.captures()
        ...     record.capture.array().tolist(), store.capture_count(), record.labelled
        ([0, 1, 2, 3], 1, False)
        """
        batch = list(captures)
        for index, capture in enumerate(batch):
            if not isinstance(capture, Capture):
                raise TypeError(f"item {index} is a {type(capture).__name__}, not a Capture")
        if not batch:
            return []
        rows = [
            (
                c.item_id,
                c.source,
                c.position,
                float(c.captured_at),
                c.model,
                c.model_version,
                c.reason,
                c.input_name,
                c.input,
                c._answer_json,
                c.bytes,
                c.result_id,
            )
            for c in batch
        ]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO captures (item_id, source, position, captured_at, model,"
                " model_version, reason, input_name, input, answer, bytes, result_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
        return list(range(last - len(batch) + 1, last + 1))

    def captures(
        self,
        *,
        since: float | None = None,
        labelled_only: bool = False,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[CaptureRecord]:
        """Stored captures in id order (``newest_first``: the reverse), with their late labels.

        ``since`` keeps those captured at or after it (epoch seconds);
        ``labelled_only`` those whose item has a late label; ``limit`` caps how many.
        """
        if limit is not None and limit < 0:
            raise ConfigError(f"limit must be zero or more, got {limit}")
        with self._read() as conn:
            labels = _has_labels(conn)
            sql = f"SELECT {_COLUMNS}, " + ("l.label" if labels else "NULL") + " FROM captures c"
            if labels:
                sql += " LEFT JOIN labels l ON l.item_id = c.item_id"
            where: list[str] = []
            params: list[Any] = []
            if since is not None:
                where.append("c.captured_at >= ?")
                params.append(since)
            if labelled_only:
                where.append("l.label IS NOT NULL" if labels else "0")
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY c.id" + (" DESC" if newest_first else "")
            if limit is not None:
                sql += " LIMIT ?"
                params.append(limit)
            rows = conn.execute(sql, params).fetchall()
        return [_record(row, self.path) for row in rows]

    def get_capture(self, id: int) -> CaptureRecord | None:
        """The capture stored under ``id``, or ``None`` (never stored, or removed by retention)."""
        with self._read() as conn:
            labels = _has_labels(conn)
            sql = f"SELECT {_COLUMNS}, " + ("l.label" if labels else "NULL") + " FROM captures c"
            if labels:
                sql += " LEFT JOIN labels l ON l.item_id = c.item_id"
            row = conn.execute(sql + " WHERE c.id = ?", (id,)).fetchone()
        return None if row is None else _record(row, self.path)

    def capture_count(self) -> int:
        """How many captures the store holds."""
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM captures").fetchone()[0])

    def capture_bytes(self) -> int:
        """What the stored captures take, summed (:attr:`Capture.bytes` of each)."""
        with self._read() as conn:
            return int(conn.execute("SELECT coalesce(sum(bytes), 0) FROM captures").fetchone()[0])

    def capture_times(self, since: float) -> list[float]:
        """``captured_at`` of the captures made at or after ``since``, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT captured_at FROM captures WHERE captured_at >= ? ORDER BY captured_at",
                (since,),
            ).fetchall()
        return [float(t) for (t,) in rows]


def retain_captures(
    conn: sqlite3.Connection, max_age_s: float | None, max_rows: int | None, now: float
) -> int:
    """Delete captures older than ``max_age_s`` and beyond ``max_rows`` (oldest first); how many.

    Runs inside the store's retention transaction, under the same rules as results.
    """
    deleted = 0
    if max_age_s is not None:
        deleted += conn.execute(
            "DELETE FROM captures WHERE captured_at < ?", (now - max_age_s,)
        ).rowcount
    if max_rows is not None:
        excess = conn.execute("SELECT count(*) FROM captures").fetchone()[0] - max_rows
        if excess > 0:
            deleted += conn.execute(
                "DELETE FROM captures WHERE id IN (SELECT id FROM captures ORDER BY id LIMIT ?)",
                (excess,),
            ).rowcount
    return deleted


def _has_labels(conn: sqlite3.Connection) -> bool:
    """Whether the store has a ``labels`` table (late labels) to join captures with."""
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'labels'"
    ).fetchone()
    return row is not None


def _record(row: Any, path: Any) -> CaptureRecord:
    (
        id_,
        item_id,
        source,
        position,
        captured_at,
        model,
        model_version,
        reason,
        input_name,
        data,
        answer,
        result_id,
        label,
    ) = row
    try:
        capture = Capture(
            item_id,
            source,
            captured_at,
            model,
            model_version,
            reason,
            input_name,
            bytes(data),
            json.loads(answer),
            position,
            result_id,
        )
        value = None if label is None else json.loads(label)
    except ValueError as exc:  # also json.JSONDecodeError
        raise StoreError(f"{path}: capture {id_} cannot be read: {exc}") from exc
    return CaptureRecord(id_, capture, value)
