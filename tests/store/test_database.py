"""``open_database``: the one way fogline opens SQLite, on real files in ``tmp_path``."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from fogline.errors import StoreError, StoreFormatError
from fogline.store import open_database

STEPS = (
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);"
    "INSERT INTO notes (text) VALUES ('first')",
    "ALTER TABLE notes ADD COLUMN time REAL",
)


def version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_new_file_runs_every_step(tmp_path: Path) -> None:
    # Execute
    with closing(open_database(tmp_path / "notes.db", STEPS)) as conn:
        rows = conn.execute("SELECT id, text, time FROM notes").fetchall()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
        foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]

    # Assert: WAL, FULL (2), foreign keys on, at the last version
    assert rows == [(1, "first", None)]
    assert (journal, synchronous, foreign_keys) == ("wal", 2, 1)
    assert version(tmp_path / "notes.db") == 2


def test_the_pragmas_can_be_relaxed(tmp_path: Path) -> None:
    conn = open_database(tmp_path / "a.db", STEPS, synchronous="NORMAL", foreign_keys=False)
    with closing(conn):
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 0
        assert conn.isolation_level is None  # autocommit: the caller says BEGIN


def test_an_older_file_runs_only_the_steps_it_has_not_had(tmp_path: Path) -> None:
    # Prepare: a file at version 1 that holds a row of its own
    path = tmp_path / "notes.db"
    open_database(path, STEPS[:1]).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO notes (text) VALUES ('kept')")

    # Execute
    with closing(open_database(path, STEPS)) as conn:
        rows = conn.execute("SELECT text, time FROM notes ORDER BY id").fetchall()

    # Assert: step 1 did not run again (one 'first'), step 2 did
    assert rows == [("first", None), ("kept", None)]
    assert version(path) == 2


def test_a_file_at_the_current_version_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    open_database(path, STEPS).close()
    with closing(open_database(path, STEPS)) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 1


def test_a_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    open_database(path, STEPS).close()
    with pytest.raises(StoreFormatError, match=r"notes schema version 2 .* newer fogline"):
        open_database(path, STEPS[:1], what="notes")
    assert version(path) == 2


def test_tables_without_a_version_are_another_applications(tmp_path: Path) -> None:
    # Prepare: the same tables, made by hand (no user_version)
    path = tmp_path / "notes.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(STEPS[0])

    # Execute / Assert: refused, not run over (CREATE would fail half way)
    with pytest.raises(StoreFormatError, match=r"not a fogline notebook .* no notebook version"):
        open_database(path, STEPS, what="notebook")
    assert version(path) == 0


def test_a_step_that_fails_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    open_database(path, STEPS[:1]).close()
    broken = (STEPS[0], "ALTER TABLE notes ADD COLUMN time REAL; ALTER TABLE nowhere ADD x")

    with pytest.raises(StoreError, match="cannot prepare the database schema") as caught:
        open_database(path, broken)

    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert version(path) == 1
    with closing(sqlite3.connect(path)) as conn:
        assert [r[1] for r in conn.execute("PRAGMA table_info(notes)")] == ["id", "text"]


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"not pages\n" * 1000)
    with pytest.raises(StoreFormatError, match=r"notes\.db: not a SQLite database"):
        open_database(path, STEPS)


def test_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the registry"):
        open_database(tmp_path / "missing" / "registry.db", STEPS, what="registry")
