"""One way to open a SQLite file: WAL, the pragmas, a busy timeout, migrations by ``user_version``.

The results store and the controller's registry both open their files with
:func:`open_database`, so what opening means (and, later, encryption at rest)
is written once: with ``key``, the file is encrypted with SQLCipher (see
:mod:`._driver`). A schema is a list of steps: step ``n`` takes a file from
``PRAGMA user_version`` ``n`` to ``n + 1``. A new file runs them all; a file
an older fogline wrote runs the ones it has not had, in the transaction that
opens it, so every file of one version has the same schema however it got
there, and a step that fails leaves the file as it was.

A file at version 0 that already holds tables was not made by these steps
(every step list ends by setting ``user_version``, in the same transaction as
its tables): it is another application's database and is refused, as is a
file written by a newer fogline.

Every SQLite (or SQLCipher) failure is mapped to :class:`~fogline.errors.StoreError`
(or :class:`~fogline.errors.StoreFormatError` when the file is not SQLite,
belongs to another application, or was written by a newer fogline; to
:class:`~fogline.errors.KeyUnavailable` when it is encrypted and no key was
given, :class:`~fogline.errors.WrongKey` when the key does not open it),
naming the file. Called once per file, under no lock: nothing else holds the
connection yet.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fogline.errors import StoreError, StoreFormatError
from fogline.store._driver import connect, database_errors
from fogline.store._open_lock import hold_shared

if TYPE_CHECKING:
    from fogline.security import DeviceKey

#: One step of a schema: SQL statements separated by ``;``, or a function that runs
#: on the connection (for a step SQL alone cannot take: rewriting rows in Python).
Migration = str | Callable[[sqlite3.Connection], None]

#: How hard a commit is pushed to disk (SQLite's ``PRAGMA synchronous``).
Synchronous = Literal["FULL", "NORMAL"]


def open_database(
    path: Path,
    migrations: Sequence[Migration],
    *,
    what: str = "database",
    timeout: float = 5.0,
    synchronous: Synchronous = "FULL",
    foreign_keys: bool = True,
    key: DeviceKey | None = None,
) -> sqlite3.Connection:
    """Open (or create) the SQLite file at ``path`` in WAL mode, at version ``len(migrations)``.

    ``migrations[n]`` is the SQL (statements separated by ``;``), or a function
    given the connection, that takes the file from version ``n`` to ``n + 1``,
    inside the transaction that opens it; a released step never changes.
    ``what`` names the file in errors (``"store"``, ``"registry"``). ``timeout``
    is how long a writer waits for another. ``synchronous="FULL"`` makes each
    commit survive a power loss; ``"NORMAL"`` only a process crash, for files
    that can be rebuilt. With ``key`` (a :class:`~fogline.security.DeviceKey`)
    the file, its WAL and its shared memory hold nothing readable without it:
    SQLCipher encrypts every page with the key's ``"store"`` sub-key; an
    encrypted file is refused without it, a plain one with it. While it is open
    the connection holds ``FILE.lock`` shared, so ``fogline store rekey`` cannot
    replace the file under it (:mod:`._open_lock`). The connection is in autocommit mode
    (``isolation_level=None``: the caller says ``BEGIN``) and may be shared
    between threads under the caller's lock.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "notes.db"
    >>> steps = ["CREATE TABLE notes (text TEXT)", "ALTER TABLE notes ADD COLUMN time REAL"]
    >>> conn = open_database(path, steps[:1], what="notebook")
    >>> conn.execute("PRAGMA user_version").fetchone()[0]
    1
    >>> conn.close(); conn = open_database(path, steps, what="notebook")  # a newer fogline
    >>> [row[1] for row in conn.execute("PRAGMA table_info(notes)")]
    ['text', 'time']
    >>> conn.close()
    >>> try:
    ...     open_database(path, steps[:1], what="notebook")  # an older fogline
    ... except StoreFormatError as exc:
    ...     print(str(exc).split(": ", 1)[1])
    notebook schema version 2 was written by a newer fogline; this one reads up to version 1
    """
    held = hold_shared(path, timeout)  # before the file is opened: a rekey cannot swap it now
    conn = connect(path, key=key, timeout=timeout, what=what, held=held)
    try:
        _configure(conn, path, what, synchronous, foreign_keys)
        _migrate(conn, path, what, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(
    conn: sqlite3.Connection, path: Path, what: str, synchronous: Synchronous, foreign_keys: bool
) -> None:
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute(f"PRAGMA synchronous={synchronous}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
    except database_errors("OperationalError") as exc:  # locked, unreadable: not NOTADB
        raise StoreError(f"{path}: cannot open the {what}: {exc}") from exc
    except database_errors("DatabaseError") as exc:
        raise StoreFormatError(f"{path}: not a SQLite database ({exc})") from exc
    except database_errors() as exc:
        raise StoreError(f"{path}: cannot open the {what}: {exc}") from exc
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: SQLite refused WAL mode (journal_mode is {mode})")


def _migrate(
    conn: sqlite3.Connection, path: Path, what: str, migrations: Sequence[Migration]
) -> None:
    latest = len(migrations)
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
                        f"{path}: a SQLite database, but not a fogline {what} "
                        f"(it has {tables} schema objects and no {what} version)"
                    )
            elif version > latest:
                raise StoreFormatError(
                    f"{path}: {what} schema version {version} was written by a newer fogline; "
                    f"this one reads up to version {latest}"
                )
            if version < latest:
                for step in migrations[version:]:
                    if callable(step):
                        try:
                            step(conn)
                        except (ValueError, TypeError) as exc:  # a row the step cannot read
                            raise StoreError(
                                f"{path}: cannot prepare the {what} schema: {exc}"
                            ) from exc
                        continue
                    # One statement at a time: executescript() would commit first.
                    for statement in step.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version={latest}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    except database_errors() as exc:
        raise StoreError(f"{path}: cannot prepare the {what} schema: {exc}") from exc
