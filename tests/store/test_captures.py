"""Captures in the store: kept with their inputs as arrays, joined to late labels, retained like results."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fogline.errors import StoreError
from fogline.store import (
    SCHEMA_VERSION,
    Capture,
    ResultStore,
    Retention,
    StoredLabel,
    export_captures,
    open_database,
)
from fogline.store._captures import CAPTURES_TABLE
from fogline.store._schema import MIGRATIONS


def capture(n: int, **overrides: Any) -> Capture:
    fields: dict[str, Any] = {
        "item_id": f"scanner#{n}",
        "source": "scanner",
        "captured_at": 1_700_000_000.0 + n,
        "model": "digits",
        "model_version": "1.0.0",
        "reason": "score < 0.6",
        "input_name": "pixels",
        "answer": {"label": str(n % 10), "score": 0.5},
        "position": f"digits#{n}",
    }
    fields.update(overrides)
    array = fields.pop("array", np.full((1, 8, 8), n / 16, np.float32))
    return Capture.of(array, **fields)


def test_captures_come_back_as_the_arrays_and_answers_that_went_in(store: ResultStore):
    arrays = [np.random.default_rng(n).random((1, 8, 8), np.float32) for n in range(3)]
    ids = store.add_captures([capture(n, array=arrays[n]) for n in range(3)])

    records = store.captures()

    assert [r.id for r in records] == ids
    for n, record in enumerate(records):
        got = record.capture.array()
        assert got.dtype == np.float32 and got.shape == (1, 8, 8)
        np.testing.assert_array_equal(got, arrays[n])
        assert record.capture.answer == {"label": str(n), "score": 0.5}
        assert record.capture.item_id == f"scanner#{n}"
        assert record.capture.position == f"digits#{n}"
        assert record.label is None and not record.labelled
    assert store.capture_count() == 3
    assert store.capture_bytes() == sum(r.capture.bytes for r in records)
    assert store.get_capture(ids[1]) == records[1]
    assert store.get_capture(999) is None


def test_listing_filters_by_time_and_order(store: ResultStore):
    store.add_captures([capture(n) for n in range(5)])

    assert [r.capture.item_id for r in store.captures(since=1_700_000_003.0)] == [
        "scanner#3",
        "scanner#4",
    ]
    newest = store.captures(newest_first=True, limit=2)
    assert [r.capture.item_id for r in newest] == ["scanner#4", "scanner#3"]


def test_late_labels_are_joined_by_item_id(store: ResultStore):
    store.add_captures([capture(n) for n in range(4)])
    store.put_labels(
        StoredLabel(item, label, 5.0) for item, label in [("scanner#1", "7"), ("scanner#3", 2)]
    )
    store.put_labels([StoredLabel("elsewhere#9", "1", 5.0)])

    records = store.captures()
    labelled = store.captures(labelled_only=True)

    assert [r.label for r in records] == [None, "7", None, 2]
    assert [r.capture.item_id for r in labelled] == ["scanner#1", "scanner#3"]


def test_a_batch_is_stored_whole_or_not_at_all(store: ResultStore):
    with pytest.raises(TypeError, match="item 1 is a dict"):
        store.add_captures([capture(0), {"item_id": "x"}])  # type: ignore[list-item]
    assert store.capture_count() == 0


def test_a_capture_checks_itself():
    with pytest.raises(ValueError, match="answer is not JSON"):
        capture(0, answer={"label": object()})
    with pytest.raises(ValueError, match="non-empty reason"):
        capture(0, reason="")


def test_an_input_that_is_not_an_array_is_a_store_error(store: ResultStore, db_path: Path):
    (id_,) = store.add_captures([capture(0)])
    with closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE captures SET input = ? WHERE id = ?", (b"not numpy", id_))

    (record,) = store.captures()
    with pytest.raises(StoreError, match=r"not a readable \.npy array"):
        record.capture.array()


def test_retention_removes_old_captures(db_path: Path):
    with ResultStore(db_path, retention=Retention(max_age_s=3600)) as store:
        store.add_captures([capture(0, captured_at=1000.0), capture(1, captured_at=9000.0)])

        store.apply_retention(now=9000.0 + 60)

        assert [r.capture.item_id for r in store.captures()] == ["scanner#1"]
        assert store.capture_bytes() == store.captures()[0].capture.bytes


def test_retention_keeps_at_most_max_rows_captures(db_path: Path):
    with ResultStore(db_path, retention=Retention(max_rows=2)) as store:
        store.add_captures([capture(n) for n in range(5)])

        store.apply_retention()

        assert [r.capture.item_id for r in store.captures()] == ["scanner#3", "scanner#4"]


def test_a_store_from_before_captures_gains_the_table_and_keeps_its_results(tmp_path: Path):
    path = tmp_path / "old.db"
    before = MIGRATIONS[: MIGRATIONS.index(CAPTURES_TABLE)]  # the schema before captures
    conn = open_database(path, before, what="store")
    conn.execute(
        "INSERT INTO results (source, sequence, captured_at, model, model_version, outputs, sync)"
        " VALUES ('cam0', 0, 1.0, 'digits', '1', '{\"label\":\"4\"}', 0)"
    )
    conn.close()

    with ResultStore(path) as store:
        assert store.count() == 1 and store.capture_count() == 0
        store.add_captures([capture(0)])
        assert store.capture_count() == 1
    with closing(sqlite3.connect(path)) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_an_item_captured_on_several_passes_is_exported_once_the_newest(
    store: ResultStore, tmp_path: Path
):
    # Prepare: item scanner#1 captured on 3 passes (a looped data set), scanner#2 once
    passes = [capture(1, captured_at=t, array=np.full((1, 8, 8), t, np.float32)) for t in (1, 3, 2)]
    store.add_captures([*passes, capture(2)])
    store.put_labels([StoredLabel("scanner#1", "7", 5.0), StoredLabel("scanner#2", "2", 5.0)])

    # Execute
    done = export_captures(store, tmp_path / "x.npz", labelled_only=True)

    # Verify: one row per item, scanner#1's from its newest pass (captured_at 3)
    assert (done.items, done.duplicates) == (2, 2)
    with np.load(tmp_path / "x.npz") as data:
        assert data["labels"].tolist() == [7, 2]
        assert data["pixels"][0].max() == 3.0
