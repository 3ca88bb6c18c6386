"""CSV files as a replayed sensor source, streamed with the ``csv`` module (never loaded whole)."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from typing import Literal

import numpy as np

from fogline.pipeline.sources._table import BadRow, Header, Row, TableSpec, parse_time

#: Data rows read at validation to tell numeric columns from text ones.
SAMPLE_ROWS = 50


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class CsvSpec(TableSpec):
    """Rows of a CSV file with a header line, replayed as float32 vectors.

    An item's ``meta["position"]`` is ``"file.csv:LINE"`` (the header is line 1).
    A row with a missing field or a cell that is not a number is reported as
    :class:`~fogline.pipeline.Corrupt` with its line, and the replay goes on.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
    >>> _ = path.write_text("t,x,y,kind\\n0.0,1,2,a\\n0.1,3,4,b\\n")
    >>> spec = CsvSpec(path=path, time_column="t", label_column="kind")
    >>> spec.channels, spec.output().describe()
    (('x', 'y'), '(2,) float32')
    """

    type: Literal["csv"] = "csv"

    def header(self) -> Header:
        with self.path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            names = tuple(n.strip() for n in next(reader, []))
            votes = [0] * len(names)
            for record in itertools.islice((r for r in reader if r), SAMPLE_ROWS):
                for i, cell in enumerate(record[: len(names)]):
                    votes[i] += 1 if _is_number(cell) else -1
        # A column is numeric when most sampled cells are numbers (a few bad cells happen).
        numeric = frozenset(n for n, v in zip(names, votes, strict=True) if v > 0)
        return Header(names, numeric)

    def rows(self, columns: tuple[str, ...]) -> Iterator[Row | BadRow]:
        index = {name: i for i, name in enumerate(self._header.names)}
        picks = [index[c] for c in columns]
        t_at = None if self.time_column is None else index[self.time_column]
        label_at = None if self.label_column is None else index[self.label_column]
        id_at = None if self.id_column is None else index[self.id_column]
        width = len(self._header.names)
        name = self.path.name
        with self.path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            next(reader, None)
            for record in reader:
                position = f"{name}:{reader.line_num}"
                if not record:
                    continue  # a blank line
                if len(record) != width:
                    yield BadRow(position, f"{len(record)} fields, the header has {width}")
                    continue
                yield _row(record, position, picks, columns, t_at, label_at, id_at)


def _row(
    record: list[str],
    position: str,
    picks: list[int],
    columns: tuple[str, ...],
    t_at: int | None,
    label_at: int | None,
    id_at: int | None = None,
) -> Row | BadRow:
    try:
        values = np.array([float(record[i]) for i in picks], dtype=np.float32)
    except ValueError:
        column, at = next(
            (c, i) for c, i in zip(columns, picks, strict=True) if not _is_number(record[i])
        )
        return BadRow(position, f"column {column!r}: {record[at]!r} is not a number")
    recorded = None
    if t_at is not None:
        try:
            recorded = parse_time(record[t_at])
        except ValueError as exc:
            return BadRow(position, f"time: {exc}")
    label = None if label_at is None else record[label_at]
    id_ = None if id_at is None or not record[id_at].strip() else record[id_at].strip()
    return Row(position, values, recorded, label, id_)
