"""CSV and Parquet replays: columns, timing, labels and malformed rows."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fogline.pipeline import Corrupt, Item
from fogline.pipeline.sources import CsvSpec, ParquetSpec


def _csv(folder: Path, text: str) -> Path:
    path = folder / "log.csv"
    path.write_text(text)
    return path


def test_csv_rows_become_vectors_with_line_positions_and_labels(tmp_path: Path, reader) -> None:
    path = _csv(tmp_path, "t,x,y,kind\n0,1.5,2,a\n1,3,4,b\n")
    spec = CsvSpec(path=path, time_column="t", label_column="kind", speed=0)

    items = reader(spec.build("log"), 10)

    assert spec.output().shape == (2,)
    assert [i.data.tolist() for i in items] == [[1.5, 2.0], [3.0, 4.0]]
    assert [i.meta for i in items] == [
        {"position": "log.csv:2", "label": "a"},
        {"position": "log.csv:3", "label": "b"},
    ]
    assert items[0].data.dtype == np.float32


def test_malformed_csv_rows_are_corrupt_with_their_line(tmp_path: Path, reader) -> None:
    path = _csv(tmp_path, "x,y\n1,2\n3\n\nfive,6\n7,8\n")

    got = reader(CsvSpec(path=path).build("log"), 10)

    assert [type(g) for g in got] == [Item, Corrupt, Corrupt, Item]
    assert got[1] == Corrupt("log", "log.csv:3", "1 fields, the header has 2")
    assert got[2] == Corrupt("log", "log.csv:5", "column 'x': 'five' is not a number")
    assert [g.sequence for g in got if isinstance(g, Item)] == [0, 1]


def test_a_column_not_in_the_header_names_the_ones_there(tmp_path: Path) -> None:
    path = _csv(tmp_path, "t,x,y\n0,1,2\n")

    with pytest.raises(ValidationError, match=r"'z' not in log.csv; it has: t, x, y"):
        CsvSpec(path=path, columns=["x", "z"])
    with pytest.raises(ValidationError, match=r"time_column 'time' is not a column"):
        CsvSpec(path=path, time_column="time")
    with pytest.raises(ValidationError, match="no numeric columns"):
        CsvSpec(path=_csv(tmp_path, "name\nabc\n"))


def test_default_columns_are_the_numeric_ones_besides_time_and_label(tmp_path: Path) -> None:
    path = _csv(tmp_path, "t,x,note,y,kind\n0,1,hello,2,3\n1,oops,hi,4,5\n2,5,yo,6,7\n")

    spec = CsvSpec(path=path, time_column="t", label_column="kind")

    assert spec.channels == ("x", "y")


@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_replay_follows_the_recorded_clock_scaled_by_speed(
    tmp_path: Path, reader, speed: float
) -> None:
    path = _csv(tmp_path, "t,x\n" + "".join(f"{i * 0.1:.1f},{i}\n" for i in range(5)))
    spec = CsvSpec(path=path, time_column="t", speed=speed)

    started = time.monotonic()
    items = reader(spec.build("log"), 10)
    elapsed = time.monotonic() - started

    assert [i.data[0] for i in items] == [0, 1, 2, 3, 4]
    assert elapsed >= 0.8 * 0.4 / speed
    assert elapsed < 0.4 / speed + 1.0


def test_iso_timestamps_pace_the_replay_and_become_captured_at(tmp_path: Path, reader) -> None:
    start = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    stamps = [(start + dt.timedelta(seconds=0.2 * i)).isoformat() for i in range(3)]
    path = _csv(tmp_path, "when,x\n" + "".join(f"{s},{i}\n" for i, s in enumerate(stamps)))

    started = time.monotonic()
    items = reader(CsvSpec(path=path, time_column="when", speed=2).build("log"), 10)

    assert time.monotonic() - started >= 0.8 * 0.2
    assert [i.captured_at for i in items] == [start.timestamp() + 0.2 * i for i in range(3)]


def test_speed_zero_replays_as_fast_as_possible(tmp_path: Path, reader) -> None:
    path = _csv(tmp_path, "t,x\n0,1\n1000,2\n")

    started = time.monotonic()
    items = reader(CsvSpec(path=path, time_column="t", speed=0).build("log"), 10)

    assert len(items) == 2 and time.monotonic() - started < 1.0


CELLS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["", "abc", "1,5"]),  # bad: empty, text, a comma that adds a field
)


@given(rows=st.lists(st.lists(CELLS, min_size=3, max_size=3), min_size=1, max_size=20))
def test_exactly_the_rows_with_a_bad_cell_are_corrupt(tmp_path_factory, rows) -> None:
    folder = tmp_path_factory.mktemp("csv")
    path = folder / "log.csv"
    path.write_text("a,b,c\n" + "".join(",".join(r) + "\n" for r in rows))

    got = list(CsvSpec(path=path, columns=["a", "b", "c"]).build("log").read(threading.Event()))

    def bad(row: list[str]) -> bool:
        return any(c in ("", "abc", "1,5") for c in row)

    assert [isinstance(g, Corrupt) for g in got] == [bad(r) for r in rows]
    assert [g.position for g in got] == [f"log.csv:{n}" for n in range(2, len(rows) + 2)]
    good = [np.asarray([float(c) for c in r], np.float32) for r in rows if not bad(r)]
    assert all(
        np.array_equal(g.data, v)
        for g, v in zip([g for g in got if isinstance(g, Item)], good, strict=True)
    )


def _parquet(folder: Path, **columns: list[object]) -> Path:
    path = folder / "log.parquet"
    pq.write_table(pa.table(columns), path)
    return path


def test_parquet_rows_nulls_and_timestamps(tmp_path: Path, reader) -> None:
    start = dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    path = _parquet(
        tmp_path,
        when=[start + dt.timedelta(seconds=0.1 * i) for i in range(4)],
        x=[1.0, None, 3.0, 4.0],
        n=[1, 2, 3, 4],
        kind=["a", "b", None, "d"],
    )
    spec = ParquetSpec(path=path, time_column="when", label_column="kind", speed=0)

    got = reader(spec.build("pq"), 10)

    assert spec.channels == ("x", "n") and spec.output().shape == (2,)
    assert [type(g) for g in got] == [Item, Corrupt, Item, Item]
    assert got[1] == Corrupt("pq", "log.parquet#row 2", "null in column(s) x")
    assert got[2].meta == {"position": "log.parquet#row 3"}
    assert got[3].data.tolist() == [4.0, 4.0] and got[3].meta["label"] == "d"
    assert got[0].captured_at == start.timestamp()


def test_parquet_columns_must_exist_and_be_numeric(tmp_path: Path) -> None:
    path = _parquet(tmp_path, x=[1.0], name=["a"])

    with pytest.raises(ValidationError, match=r"'y' not in log.parquet; it has: x, name"):
        ParquetSpec(path=path, columns=["y"])
    with pytest.raises(ValidationError, match=r"'name' of log.parquet are not numeric"):
        ParquetSpec(path=path, columns=["x", "name"])


def test_parquet_replays_across_record_batches_at_speed(tmp_path: Path, reader) -> None:
    count = 5000  # more than one record batch
    path = _parquet(tmp_path, t=[i * 0.0001 for i in range(count)], x=list(range(count)))

    started = time.monotonic()
    items = reader(ParquetSpec(path=path, time_column="t", speed=2).build("pq"), count)

    assert [int(i.data[0]) for i in items] == list(range(count))
    assert time.monotonic() - started >= 0.8 * (count - 1) * 0.0001 / 2
