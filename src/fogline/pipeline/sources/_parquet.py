"""Parquet files as a replayed sensor source, read a record batch at a time with pyarrow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from pydantic import model_validator

from fogline.pipeline._optional import optional
from fogline.pipeline.sources._table import BadRow, Header, Row, TableSpec, parse_time

#: Rows per record batch: bounded memory whatever the file's size.
BATCH_ROWS = 4096


def _is_numeric(kind: Any) -> bool:
    pa = optional("pyarrow")
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


class ParquetSpec(TableSpec):
    """Rows of a Parquet file, replayed as float32 vectors.

    An item's ``meta["position"]`` is ``"file.parquet#row N"`` (N counts from 1).
    A row with a null in one of ``columns`` (or in the time column) is
    reported as :class:`~fogline.pipeline.Corrupt`, and the replay goes on.
    ``columns`` must be numeric in the file's schema.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.parquet"
    >>> import pyarrow as pa, pyarrow.parquet as pq
    >>> pq.write_table(pa.table({"t": [0.0, 0.1], "x": [1.0, 2.0], "id": ["a", "b"]}), path)
    >>> ParquetSpec(path=path, time_column="t").channels
    ('x',)
    """

    type: Literal["parquet"] = "parquet"

    def header(self) -> Header:
        pa, pq = optional("pyarrow"), optional("pyarrow.parquet")
        try:
            schema = pq.read_schema(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(f"{self.path}: not a readable Parquet file: {exc}") from exc
        names = tuple(schema.names)
        numeric = frozenset(f.name for f in schema if _is_numeric(f.type))
        return Header(names, numeric)

    @model_validator(mode="after")
    def _numeric_columns(self) -> ParquetSpec:
        text = [c for c in self.channels if c not in self._header.numeric]
        if text:
            raise ValueError(
                f"column(s) {', '.join(map(repr, text))} of {self.path.name} are not numeric; "
                f"numeric columns: {', '.join(sorted(self._header.numeric)) or 'none'}"
            )
        return self

    def rows(self, columns: tuple[str, ...]) -> Iterator[Row | BadRow]:
        named = (self.time_column, self.label_column, self.id_column)
        extra = [c for c in named if c is not None]
        wanted = list(dict.fromkeys([*columns, *extra]))
        name = self.path.name
        number = 0
        pq = optional("pyarrow.parquet")
        with pq.ParquetFile(self.path) as file:
            for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
                values = np.column_stack([_floats(batch.column(c)) for c in columns]).astype(
                    np.float32
                )
                nulls = np.column_stack(
                    [batch.column(c).is_null().to_numpy(zero_copy_only=False) for c in columns]
                )
                times = None if self.time_column is None else batch.column(self.time_column)
                labels = None
                if self.label_column is not None:
                    labels = batch.column(self.label_column).to_pylist()
                ids = None if self.id_column is None else batch.column(self.id_column).to_pylist()
                for i in range(batch.num_rows):
                    number += 1
                    position = f"{name}#row {number}"
                    if nulls[i].any():
                        missing = [c for c, n in zip(columns, nulls[i], strict=True) if n]
                        yield BadRow(position, f"null in column(s) {', '.join(missing)}")
                        continue
                    recorded = None
                    if times is not None:
                        try:
                            recorded = parse_time(times[i].as_py())
                        except ValueError as exc:
                            yield BadRow(position, f"time: {exc}")
                            continue
                    label = None if labels is None or labels[i] is None else str(labels[i])
                    id_ = None if ids is None or ids[i] is None else str(ids[i])
                    yield Row(position, values[i].copy(), recorded, label, id_)


def _floats(column: Any) -> np.ndarray:
    """A numeric column as float64 (nulls become NaN; the null mask reports them)."""
    pa = optional("pyarrow")
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
