"""Replaying a recorded table (CSV or Parquet) row by row, on its recorded clock.

The two formats share everything but reading: :class:`TableSpec` checks the
columns against the file's header when the spec is loaded, and
:class:`TableReplay` turns rows into items, pacing them by ``time_column``
scaled by ``speed``. Each format supplies a header reader and a row reader
that yields :class:`Row` or :class:`BadRow`, so one malformed row becomes a
:class:`Corrupt` marker and the replay goes on.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, PrivateAttr, model_validator

from fogline.pipeline._base import ArraySpec, ExistingPath, SourceSpec
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline.sources._pacing import Pacer

#: Recorded times at or above this many seconds are epoch times (after Sep 2001):
#: they become the items' ``captured_at``. Smaller ones count from the recording's start.
EPOCH_FROM = 1e9


@dataclass(frozen=True, slots=True)
class Row:
    """One good row: its position, channel values, recorded time and label."""

    position: str
    values: np.ndarray
    time: float | None = None
    label: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot be used, and why."""

    position: str
    reason: str


@dataclass(frozen=True, slots=True)
class Header:
    """A table's column names, and which of them hold numbers."""

    names: tuple[str, ...]
    numeric: frozenset[str]


def parse_time(value: Any) -> float:
    """Seconds from a number, an ISO 8601 string or a datetime (naive = local time).

    >>> parse_time("1.5"), parse_time("2024-01-01T00:00:00+00:00")
    (1.5, 1704067200.0)
    """
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(value.strip()).timestamp()
        except ValueError:
            raise ValueError(f"{value!r} is neither seconds nor an ISO 8601 time") from None
    raise ValueError(f"{value!r} is not a time")


class TableSpec(SourceSpec):
    """A recorded table: which columns feed the items, and how fast to replay it.

    ``columns`` default to the numeric columns other than ``time_column``,
    ``label_column`` and ``id_column`` (each row's item id, which late labels
    name; rows without one get the pipeline's). ``speed`` 2 replays twice as fast as recorded, 0 as fast
    as possible; without ``time_column`` rows come as fast as possible.
    Subclasses read the header (:meth:`header`) and the rows (:meth:`rows`).
    """

    path: ExistingPath
    columns: list[str] | None = None
    time_column: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    speed: float = Field(1.0, ge=0)

    _header: Header = PrivateAttr()
    _columns: tuple[str, ...] = PrivateAttr()

    def header(self) -> Header:
        """The file's column names and which are numeric (read at validation)."""
        raise NotImplementedError

    def rows(self, columns: tuple[str, ...]) -> Iterator[Row | BadRow]:
        """Every row in file order, ``columns`` as a float32 vector; closes the file when done."""
        raise NotImplementedError

    @model_validator(mode="after")
    def _check_columns(self) -> TableSpec:
        header = self.header()
        available = ", ".join(header.names) or "none"
        named = {
            "time_column": self.time_column,
            "label_column": self.label_column,
            "id_column": self.id_column,
        }
        for field, column in named.items():
            if column is not None and column not in header.names:
                raise ValueError(
                    f"{field} {column!r} is not a column of {self.path.name}; it has: {available}"
                )
        if self.columns is not None:
            missing = [c for c in self.columns if c not in header.names]
            if missing:
                raise ValueError(
                    f"column(s) {', '.join(map(repr, missing))} not in {self.path.name}; "
                    f"it has: {available}"
                )
            if not self.columns:
                raise ValueError("columns: name at least one column")
            columns = tuple(self.columns)
        else:
            skip = {self.time_column, self.label_column, self.id_column}
            columns = tuple(c for c in header.names if c in header.numeric and c not in skip)
            if not columns:
                raise ValueError(
                    f"{self.path.name} has no numeric columns besides time and label; "
                    f"name them with `columns:` (it has: {available})"
                )
        self._header = header
        self._columns = columns
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        """The columns that make up each item's vector, in order."""
        return self._columns

    def output(self) -> ArraySpec:
        return ArraySpec((len(self._columns),), "float32")

    def build(self, name: str) -> TableReplay:
        return TableReplay(name, lambda: self.rows(self._columns), speed=self.speed)


class TableReplay:
    """Yields the rows ``rows()`` produces as items, paced by their recorded times."""

    def __init__(
        self, name: str, rows: Callable[[], Iterator[Row | BadRow]], *, speed: float = 1.0
    ) -> None:
        self.name = name
        self._rows = rows
        self._speed = speed

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        pacer = Pacer(stop, self._speed)
        rows = self._rows()
        sequence = 0
        try:
            for row in rows:
                if stop.is_set():
                    return
                if isinstance(row, BadRow):
                    yield Corrupt(self.name, row.position, row.reason)
                    continue
                captured_at = time.time()
                if row.time is not None:
                    if not pacer.wait(row.time):
                        return
                    captured_at = row.time if row.time >= EPOCH_FROM else time.time()
                meta: dict[str, Any] = {"position": row.position}
                if row.label is not None:
                    meta["label"] = row.label
                if row.id is not None:
                    meta["id"] = row.id
                yield Item(self.name, sequence, captured_at, row.values, meta)
                sequence += 1
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()
