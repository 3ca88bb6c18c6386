"""The results store: round trip, WAL, one transaction per batch, errors mapped at the boundary."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fogline.errors import ConfigError, FoglineError, StoreError, StoreFormatError
from fogline.store import SCHEMA_VERSION, Result, ResultStore, Retention


def test_round_trip(store: ResultStore, make_result: Any) -> None:
    # Prepare
    results = [make_result(source=f"cam{i % 2}", outputs={"v": [i, i + 0.5]}) for i in range(5)]

    # Execute
    ids = store.add(results)

    # Assert
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert [store.get(i).result for i in ids] == results  # type: ignore[union-attr]
    assert store.count() == 5
    assert [r.id for r in store.query(source="cam1")] == ids[1::2]
    since = results[3].captured_at
    assert [r.result for r in store.query(since=since)] == results[3:]
    assert len(store.query(limit=2)) == 2
    assert store.get(10_000) is None


def test_survives_reopening(db_path: Path, make_result: Any) -> None:
    # Prepare
    with ResultStore(db_path) as store:
        ids = store.add([make_result(), make_result(sync=True)])

    # Execute
    with ResultStore(db_path) as store:
        records = [store.get(i) for i in ids]
        stats = store.stats()

    # Assert
    assert all(r is not None for r in records)
    assert stats.produced == 1 and stats.pending == 1


def test_numpy_outputs_are_stored_as_lists(store: ResultStore, make_result: Any) -> None:
    (id_,) = store.add([make_result(outputs={"logits": np.arange(3, dtype=np.float32)})])
    assert store.get(id_).result.outputs == {"logits": [0.0, 1.0, 2.0]}  # type: ignore[union-attr]


def test_wal_mode_and_schema_version(store: ResultStore, db_path: Path) -> None:
    # Execute: look at the file with a second, independent connection
    conn = sqlite3.connect(db_path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()

    # Assert
    assert mode == "wal"
    assert version == SCHEMA_VERSION


def test_batch_is_one_transaction(store: ResultStore, make_result: Any) -> None:
    # Prepare: a good batch, then one whose last result cannot be serialised
    store.add([make_result(sync=True)])
    bad = [make_result(sync=True) for _ in range(3)] + [make_result(outputs={"x": object()})]

    # Execute
    with pytest.raises(StoreError, match=r"result 3 of the batch .* not JSON") as caught:
        store.add(bad)

    # Assert: nothing of the failed batch, in results, outbox or counters
    assert isinstance(caught.value.__cause__, TypeError)
    assert store.count() == 1
    assert store.stats().produced == 1
    assert store.stats().pending == 1


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages you are looking for\n" * 200)

    # Execute / Assert
    with pytest.raises(StoreFormatError, match=r"notes\.db: not a SQLite database") as caught:
        ResultStore(path)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_another_applications_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreFormatError, match="not a fogline store"):
        ResultStore(path)


def test_newer_schema_is_refused(db_path: Path) -> None:
    ResultStore(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreFormatError, match="newer fogline"):
        ResultStore(db_path)


def test_unopenable_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="missing"):
        ResultStore(tmp_path / "missing" / "results.db")


def test_closed_store(db_path: Path, make_result: Any) -> None:
    store = ResultStore(db_path)
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.add([make_result()])
    assert "closed" in repr(store)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outbox_limit": 0}, "outbox_limit"),
        ({"outbox_policy": "drop-newest"}, "outbox_policy"),
    ],
)
def test_bad_options(db_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ResultStore(db_path, **kwargs)
    with pytest.raises(ConfigError, match="max_age_s"):
        Retention(max_age_s=-1)


@pytest.mark.parametrize(
    "overrides",
    [
        {"source": ""},
        {"sequence": 1.5},
        {"sequence": True},
        {"captured_at": float("nan")},
        {"model": ""},
        {"outputs": [1, 2]},
        {"outputs": {1: "x"}},
        {"sync": 1},
        {"position": ""},
        {"position": 17},
    ],
)
def test_result_validates_itself(overrides: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "source": "cam0",
        "sequence": 0,
        "captured_at": 0.0,
        "model": "m",
        "model_version": "1",
        "outputs": {},
    }
    with pytest.raises(ValueError):
        Result(**(fields | overrides))


def test_a_position_round_trips_and_a_result_from_before_positions_reads_as_none(
    store: ResultStore, make_result: Any
) -> None:
    # Prepare
    placed = make_result(position="clip.avi#frame 120", sync=True)
    old_style = {k: v for k, v in make_result().to_dict().items() if k != "position"}

    # Execute
    (id_,) = store.add([placed])
    (message,) = store.pending()

    # Assert
    assert store.get(id_).result.position == "clip.avi#frame 120"  # type: ignore[union-attr]
    assert json.loads(message.payload)["result"]["position"] == "clip.avi#frame 120"
    assert Result.from_dict(placed.to_dict()) == placed
    assert Result.from_dict(old_style).position is None
    assert make_result().to_dict()["position"] is None  # the key is always there


def test_add_refuses_non_results(store: ResultStore) -> None:
    with pytest.raises(TypeError, match="item 0"):
        store.add([{"source": "cam0"}])  # type: ignore[list-item]
    assert store.add([]) == []


def test_threads_share_one_store(store: ResultStore, make_result: Any) -> None:
    # Prepare
    batches = [[make_result(sync=i % 2 == 0) for i in range(5)] for _ in range(40)]
    ids: list[int] = []
    errors: list[BaseException] = []

    def worker(chunk: list[list[Result]]) -> None:
        try:
            for batch in chunk:
                ids.extend(store.add(batch))
                store.query(limit=10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # Execute
    threads = [threading.Thread(target=worker, args=(batches[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Assert
    assert not errors
    assert len(set(ids)) == store.count() == 200
    assert store.stats().pending == 120


def test_errors_are_fogline_errors() -> None:
    assert issubclass(StoreFormatError, StoreError)
    assert issubclass(StoreError, FoglineError)
