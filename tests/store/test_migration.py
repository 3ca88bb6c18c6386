"""A store written by an older fogline opens, gains what is new, and keeps everything it held."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from fogline.errors import StoreError
from fogline.store import (
    SCHEMA_VERSION,
    JsonlTransport,
    OutboxMessage,
    OutboxSender,
    Result,
    ResultStore,
)

# The schema as fogline wrote it at version 1 (before results had a position),
# copied here on purpose: the test must keep describing those files however the
# code changes.
VERSION_1 = """
CREATE TABLE results (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    source        TEXT    NOT NULL,
    sequence      INTEGER NOT NULL,
    captured_at   REAL    NOT NULL,
    model         TEXT    NOT NULL,
    model_version TEXT    NOT NULL,
    outputs       TEXT    NOT NULL,
    sync          INTEGER NOT NULL
);
CREATE INDEX results_captured_at ON results (captured_at);
CREATE INDEX results_source ON results (source, captured_at);
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    result_id  INTEGER NOT NULL UNIQUE REFERENCES results (id),
    key        TEXT    NOT NULL UNIQUE,
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('delivered', 0), ('dropped', 0), ('produced', 2);
INSERT INTO results (source, sequence, captured_at, model, model_version, outputs, sync)
    VALUES ('cam0', 0, 1700000000.0, 'digits', '3', '{"label":"4"}', 1),
           ('cam0', 1, 1700000001.0, 'digits', '3', '{"label":"7"}', 1),
           ('cam0', 2, 1700000002.0, 'digits', '3', '{"label":"1"}', 0);
INSERT INTO outbox (result_id, key) VALUES (1, 'key-1'), (2, 'key-2');
PRAGMA user_version = 1;
"""


def columns(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[1] for row in conn.execute("PRAGMA table_info(results)")]


def schema(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
        ).fetchall()


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old" / "results.db"
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(VERSION_1)
    return path


def test_a_version_1_store_gains_positions_and_keeps_its_results_and_outbox(
    old_store: Path, tmp_path: Path
) -> None:
    # Prepare
    assert "position" not in columns(old_store)

    # Execute: open it with this fogline, read the old rows, add a new one, deliver
    with ResultStore(old_store) as store:
        old = [record.result for record in store.query()]
        (new_id,) = store.add(
            [Result("cam0", 3, 1_700_000_003.0, "digits", "4", {"label": "9"}, True, "d/9.png")]
        )
        new = store.get(new_id)
        with JsonlTransport(tmp_path / "sent.jsonl") as transport:
            sent = OutboxSender(store, transport).deliver_once()
        stats = store.stats()

    # Assert: the column is there, old rows read as "no position", the outbox went on
    assert "position" in columns(old_store)
    with closing(sqlite3.connect(old_store)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert [(r.sequence, r.outputs["label"], r.sync, r.position) for r in old] == [
        (0, "4", True, None),
        (1, "7", True, None),
        (2, "1", False, None),
    ]
    assert new is not None and new.result.position == "d/9.png"
    assert sent == 3 and stats.produced == 3 and stats.delivered == 3 and stats.pending == 0
    bodies = [json.loads(line) for line in (tmp_path / "sent.jsonl").read_text().splitlines()]
    assert [b["key"] for b in bodies][:2] == ["key-1", "key-2"]
    assert [b["result"]["position"] for b in bodies] == [None, None, "d/9.png"]


def test_a_migrated_store_has_the_schema_of_a_new_one(old_store: Path, tmp_path: Path) -> None:
    ResultStore(old_store).close()
    ResultStore(tmp_path / "new.db").close()

    assert schema(old_store) == schema(tmp_path / "new.db")


def test_a_migration_that_fails_leaves_the_old_store_as_it_was(old_store: Path) -> None:
    # Prepare: a store that cannot take the new column (one of that name is there already)
    with closing(sqlite3.connect(old_store)) as conn:
        conn.execute("ALTER TABLE results ADD COLUMN position INTEGER")
    before = schema(old_store)

    # Execute / Assert: refused, rolled back, still at version 1
    with pytest.raises(StoreError, match="cannot prepare the store schema"):
        ResultStore(old_store)
    assert schema(old_store) == before
    with closing(sqlite3.connect(old_store)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


# The outbox as fogline wrote it at version 2 (a row per result, no topic or
# payload): results gained a position, the outbox pointed at them.
VERSION_2 = VERSION_1.replace(
    "PRAGMA user_version = 1;",
    """ALTER TABLE results ADD COLUMN position TEXT;
UPDATE results SET position = 'a/0.png' WHERE id = 1;
UPDATE outbox SET attempts = 3, last_error = 'TransportError: broker down' WHERE id = 1;
INSERT INTO results (source, sequence, captured_at, model, model_version, outputs, sync)
    VALUES ('cam/0', 3, 1700000003.5, 'digits', '3', '{"a":null,"b":[1,2.5]}', 1);
INSERT INTO outbox (result_id, key) VALUES (4, 'key-4');
UPDATE counters SET value = 4 WHERE name = 'produced';
INSERT INTO outbox (result_id, key) VALUES (3, 'gone');
DELETE FROM outbox WHERE key = 'gone';
UPDATE counters SET value = 1 WHERE name = 'delivered';
UPDATE counters SET value = 4 WHERE name = 'produced';
PRAGMA user_version = 2;""",
)

# What the MQTT and HTTP outbox transports of version 2 sent for those rows:
# OutboxMessage.to_dict() as compact JSON, written out here on purpose.
SENT_BY_VERSION_2 = [
    b'{"key":"key-1","result_id":1,"result":{"source":"cam0","sequence":0,"position":"a/0.png",'
    b'"captured_at":1700000000.0,"model":"digits","model_version":"3","outputs":{"label":"4"},'
    b'"sync":true}}',
    b'{"key":"key-2","result_id":2,"result":{"source":"cam0","sequence":1,"position":null,'
    b'"captured_at":1700000001.0,"model":"digits","model_version":"3","outputs":{"label":"7"},'
    b'"sync":true}}',
    b'{"key":"key-4","result_id":4,"result":{"source":"cam/0","sequence":3,"position":null,'
    b'"captured_at":1700000003.5,"model":"digits","model_version":"3",'
    b'"outputs":{"a":null,"b":[1,2.5]},"sync":true}}',
]


class Kept:
    def __init__(self) -> None:
        self.sent: list[OutboxMessage] = []

    def send(self, message: OutboxMessage) -> None:
        self.sent.append(message)


@pytest.fixture
def version_2_store(tmp_path: Path) -> Path:
    path = tmp_path / "v2" / "results.db"
    path.parent.mkdir()
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(VERSION_2)
    return path


def test_pending_messages_of_a_version_2_store_are_delivered_as_they_were_after_the_upgrade(
    version_2_store: Path,
) -> None:
    # Execute: open it with this fogline, read what is pending, queue more, deliver
    with ResultStore(version_2_store) as store:
        pending = store.pending()
        (new_id,) = store.add([Result("cam0", 4, 1_700_000_004.0, "digits", "3", {}, True)])
        (plain,) = store.queue([("site/telemetry", b"{}")])
        transport = Kept()
        sent = OutboxSender(store, transport).deliver_once()
        stats = store.stats()

    # Assert: same order, keys, attempts and errors; the payload is the bytes version 2 sent
    assert [(m.id, m.key, m.attempts) for m in pending] == [
        (1, "key-1", 3),
        (2, "key-2", 0),
        (3, "key-4", 0),
    ]
    assert [m.payload for m in pending] == SENT_BY_VERSION_2
    assert [m.topic for m in pending] == ["fogline/cam0/outbox"] * 2 + ["fogline/cam_0/outbox"]
    with closing(sqlite3.connect(version_2_store)) as conn:
        assert conn.execute("SELECT last_error FROM outbox").fetchall() == []
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # ids go on after the highest ever used (the deleted 'gone' row had 4): never reused
    assert [m.id for m in transport.sent] == [1, 2, 3, 5, 6]
    assert [m.payload for m in transport.sent[:3]] == SENT_BY_VERSION_2
    assert json.loads(transport.sent[3].payload)["result_id"] == new_id
    assert transport.sent[4] == plain
    assert sent == 5 and (stats.produced, stats.delivered, stats.pending) == (6, 6, 0)


def test_the_errors_of_pending_messages_survive_the_upgrade(version_2_store: Path) -> None:
    ResultStore(version_2_store).close()

    with closing(sqlite3.connect(version_2_store)) as conn:
        rows = conn.execute("SELECT key, attempts, last_error FROM outbox ORDER BY id").fetchall()

    assert rows == [
        ("key-1", 3, "TransportError: broker down"),
        ("key-2", 0, None),
        ("key-4", 0, None),
    ]


def test_a_migrated_version_2_store_has_the_schema_of_a_new_one(
    version_2_store: Path, tmp_path: Path
) -> None:
    ResultStore(version_2_store).close()
    ResultStore(tmp_path / "new.db").close()

    assert schema(version_2_store) == schema(tmp_path / "new.db")
