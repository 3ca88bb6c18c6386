"""The results store's SQLite schema, versioned with ``PRAGMA user_version``.

The schema is the list :data:`MIGRATIONS`: step ``n`` takes a store from
version ``n`` to ``n + 1``; :func:`~fogline.store.open_database` runs the
ones a file has not had when the store opens it.
"""

from __future__ import annotations

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

#: The schema, one step per version: ``MIGRATIONS[n]`` takes version ``n`` to ``n + 1``.
MIGRATIONS: tuple[str, ...] = (_SCHEMA_V1, _ADD_POSITION)

#: The schema this code writes; ``PRAGMA user_version`` of a store it created.
SCHEMA_VERSION = len(MIGRATIONS)
