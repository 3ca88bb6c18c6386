"""Retention by size: a store written far past its limit stays under it, newest kept.

Real SQLite files; the size checked is the database's pages and, after the
store closes (its WAL checkpointed), the file on disk itself.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from fogline.errors import ConfigError
from fogline.pipeline._spec import RetentionSpec
from fogline.store import Capture, Result, ResultStore, Retention

LIMIT = 256 * 1024


def batch(start: int, n: int, *, sync: bool = False) -> list[Result]:
    filler = "x" * 400  # ~0.5 kB a result: 40 batches of 50 are about 4x the limit
    return [
        Result(
            "cam0",
            i,
            1_700_000_000.0 + i,
            "digits",
            "3",
            {"i": i, "pad": filler},
            sync=sync,
            item_id=f"cam0#{i}",
        )
        for i in range(start, start + n)
    ]


def pages(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(size * conn.execute("PRAGMA page_count").fetchone()[0])


def test_a_store_written_far_past_max_bytes_stays_under_it(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultStore(path, retention=Retention(max_bytes=LIMIT)) as store:
        for n in range(40):
            ids = store.add(batch(n * 50, 50))
            store.add_captures(
                [
                    Capture.of(
                        np.zeros(64, np.float32),
                        item_id=f"cam0#{n * 50}",
                        source="cam0",
                        captured_at=1_700_000_000.0 + n * 50,
                        model="digits",
                        model_version="3",
                        reason="unsure",
                        input_name="x",
                        answer={},
                        result_id=ids[0],
                    )
                ]
            )
            store.apply_retention()
            assert store.retention_stats().bytes_file <= LIMIT, n
        stats = store.retention_stats()
        newest = store.query(limit=1_000_000)
        assert newest[-1].result.sequence == 1999  # the newest are kept, the oldest went
        assert newest[0].result.sequence > 1000
        assert stats.size_results == 2000 - len(newest) and stats.size_held == 0
        assert stats.size_captures == 40 - store.capture_count() > 0
    assert path.stat().st_size <= LIMIT  # closed: the WAL is in the file
    assert pages(path) <= LIMIT


def test_undelivered_outbox_messages_are_never_dropped_for_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "results.db"
    with ResultStore(path, retention=Retention(max_bytes=65536)) as store:
        store.add(batch(0, 300, sync=True))  # nothing delivered: every result is held
        removed = store.apply_retention()
        stats = store.retention_stats()
        assert removed == 0 and store.count() == 300 and store.stats().pending == 300
        assert stats.size_held == 1 and stats.bytes_used > 65536
    assert "wait in the outbox and are kept until delivered" in caplog.text


def test_max_bytes_is_checked_in_the_spec_and_the_store() -> None:
    assert RetentionSpec.model_validate({"max_bytes": 10_000_000}).max_bytes == 10_000_000
    with pytest.raises(ValueError, match="max_bytes"):
        RetentionSpec.model_validate({"max_bytes": 100})
    with pytest.raises(ConfigError, match="max_bytes must be at least 65536"):
        Retention(max_bytes=1000)
