"""The store's SQLite schema, versioned with ``PRAGMA user_version``, and how a file is opened.

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

#: The schema this code writes; ``PRAGMA user_version`` of a store it created.
SCHEMA_VERSION = 1

#: Counters kept in the ``counters`` table; ``produced = delivered + pending + dropped``.
COUNTERS = ("delivered", "dropped", "produced")

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
"""


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
                # One statement at a time: executescript() would commit first.
                for statement in _SCHEMA_V1.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO counters (name, value) VALUES (?, 0)", [(c,) for c in COUNTERS]
                )
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise StoreFormatError(
                    f"{path}: store schema version {version} was written by a newer fogline; "
                    f"this one reads up to version {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot prepare the store schema: {exc}") from exc
