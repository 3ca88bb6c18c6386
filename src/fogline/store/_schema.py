"""The store's SQLite schema, versioned with ``PRAGMA user_version``, and how a file is opened.

The schema is the list :data:`MIGRATIONS`: step ``n`` takes a store from
version ``n`` to ``n + 1``. A new file runs them all; a file an older fogline
wrote runs the ones it has not had, in the transaction that opens it, so
every store of one version has the same schema however it got there.

Opening maps every ``sqlite3`` failure to :class:`~fogline.errors.StoreError`
(or :class:`~fogline.errors.StoreFormatError` when the file is not SQLite,
belongs to another application, or was written by a newer fogline), naming
the file. Called once per store, under no lock: nothing else holds the
connection yet.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fogline.errors import StoreError, StoreFormatError

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


def connect(path: Path, *, timeout: float) -> sqlite3.Connection:
    """Open (or create) the store at ``path``: WAL, ``synchronous=FULL``, current schema."""
    try:
        conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from exc
    try:
        _configure(conn, path)
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        # FULL: in WAL mode NORMAL survives a process crash but may lose the
        # last commits on power loss; "acknowledged means durable" needs FULL.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.OperationalError as exc:  # locked, unreadable: a DatabaseError, but not NOTADB
        raise StoreError(f"{path}: cannot open the store: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise StoreFormatError(f"{path}: not a SQLite database ({exc})") from exc
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the store: {exc}") from exc
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: SQLite refused WAL mode (journal_mode is {mode})")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                tables = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                ).fetchone()[0]
                if tables:
                    raise StoreFormatError(
                        f"{path}: a SQLite database, but not a fogline store "
                        f"(it has {tables} schema objects and no store version)"
                    )
            elif version > SCHEMA_VERSION:
                raise StoreFormatError(
                    f"{path}: store schema version {version} was written by a newer fogline; "
                    f"this one reads up to version {SCHEMA_VERSION}"
                )
            if version < SCHEMA_VERSION:
                for step in MIGRATIONS[version:]:
                    # One statement at a time: executescript() would commit first.
                    for statement in step.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot prepare the store schema: {exc}") from exc
