"""The results store's SQLite schema, versioned with ``PRAGMA user_version``.

The schema is the list :data:`MIGRATIONS`: step ``n`` takes a store from
version ``n`` to ``n + 1``; :func:`~fogline.store.open_database` runs the
ones a file has not had when the store opens it.
"""

from __future__ import annotations

import sqlite3

from fogline.store._captures import CAPTURES_TABLE
from fogline.store._database import Migration
from fogline.store._result import record_from_row, result_message

#: Counters kept in the ``counters`` table; ``produced = delivered + pending + dropped``.
COUNTERS = ("delivered", "dropped", "produced")

# A step, once released, never changes: stores out there were made by it.
# AUTOINCREMENT so an id is never reused after retention or delivery removed
# the newest rows: ids name results to receivers and order the outbox.
_SCHEMA_V1 = """
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
INSERT INTO counters (name, value) VALUES ('delivered', 0), ('dropped', 0), ('produced', 0)
"""

# Where in its source each result's input was ("cat/a.png", "log.csv:17");
# NULL for the rows stored before version 2.
_ADD_POSITION = "ALTER TABLE results ADD COLUMN position TEXT"

# Version 3: the outbox holds plain messages (topic, payload, key) instead of
# pointing at a result. ``result_id`` stays, nullable, for the messages that
# carry a result: retention keeps a result while its message is pending.
_PLAIN_OUTBOX = """
ALTER TABLE outbox RENAME TO outbox_v2;
CREATE TABLE outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    key        TEXT    NOT NULL UNIQUE,
    result_id  INTEGER UNIQUE REFERENCES results (id),
    attempts   INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
)
"""


def _plain_outbox(conn: sqlite3.Connection) -> None:
    """Version 2 to 3: each pending message gets the topic and payload it would have been sent with.

    That is the result's envelope (``{"key", "result_id", "result"}``, the
    bytes the MQTT and HTTP transports sent) on its default topic
    ``fogline/{source}/outbox``; ids, keys, attempts and errors are kept, so
    the messages go out in the same order under the same keys, and the id
    sequence goes on where it was (an id is never reused).
    """
    for statement in _PLAIN_OUTBOX.split(";"):
        if statement.strip():
            conn.execute(statement)
    rows = conn.execute(
        "SELECT o.id, o.key, o.attempts, o.last_error, r.id, r.source, r.sequence,"
        " r.captured_at, r.model, r.model_version, r.outputs, r.sync, r.position"
        " FROM outbox_v2 o JOIN results r ON r.id = o.result_id ORDER BY o.id"
    ).fetchall()
    for outbox_id, key, attempts, last_error, *result_row in rows:
        record = record_from_row(result_row)
        topic, payload = result_message(record, key)
        conn.execute(
            "INSERT INTO outbox (id, topic, payload, key, result_id, attempts, last_error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (outbox_id, topic, payload, key, record.id, attempts, last_error),
        )
    conn.execute("DELETE FROM sqlite_sequence WHERE name = 'outbox'")
    conn.execute(
        "INSERT INTO sqlite_sequence (name, seq)"
        " SELECT 'outbox', seq FROM sqlite_sequence WHERE name = 'outbox_v2'"
    )
    conn.execute("DROP TABLE outbox_v2")


# Migration "labels": results name the item they answered (late labels join by it),
# and ``labels`` keeps each item's label (JSON), when it came, and, once joined, the
# result it was compared with and the outcome: ``correct`` (0/1, classification) or
# ``error`` (absolute, regression). ``result_id`` NULL: not joined to a result yet.
_LABELS = """
ALTER TABLE results ADD COLUMN item_id TEXT;
CREATE INDEX results_item_id ON results (item_id);
CREATE TABLE labels (
    item_id       TEXT PRIMARY KEY,
    label         TEXT NOT NULL,
    received_at   REAL NOT NULL,
    result_id     INTEGER,
    model_version TEXT,
    correct       INTEGER,
    error         REAL
);
CREATE INDEX labels_received_at ON labels (received_at)
"""

#: The schema, one step per version: ``MIGRATIONS[n]`` takes version ``n`` to ``n + 1``.
MIGRATIONS: tuple[Migration, ...] = (
    _SCHEMA_V1,
    _ADD_POSITION,
    _plain_outbox,
    _LABELS,
    CAPTURES_TABLE,  # "captures": hard examples (model input + answer) for retraining
)

#: The schema this code writes; ``PRAGMA user_version`` of a store it created.
SCHEMA_VERSION = len(MIGRATIONS)
