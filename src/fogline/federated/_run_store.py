"""Where a federated run lives on the controller: one SQLite file, every step committed.

``DATA/federated.db`` (through :func:`fogline.store.open_database`: WAL,
``synchronous=FULL``) holds each run (its settings, status and the global
model it has now), each round (who was sampled, the model it started from,
what it measured), each chunk a device sent before its update was complete,
and each update the controller acknowledged. A chunk or an update is
committed before the device hears it was stored, so a controller killed at
any moment loses nothing a device was told is safe, and picks the run up
where it was (:class:`~fogline.federated.Coordinator` reads it back).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fogline.protocol import ACTIVE_RUN_STATUSES
from fogline.store import open_database

if TYPE_CHECKING:
    from fogline.security import DeviceKey

__all__ = ["RunStore"]

# A step, once released, never changes: files out there were made by it.
_SCHEMA_V1 = """
CREATE TABLE runs (
    id        TEXT PRIMARY KEY,
    spec      TEXT NOT NULL,
    status    TEXT NOT NULL,
    round     INTEGER NOT NULL DEFAULT 0,
    model     BLOB NOT NULL,
    reason    TEXT,
    result    TEXT NOT NULL DEFAULT '{}',
    created   REAL NOT NULL,
    updated   REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE rounds (
    run        TEXT NOT NULL REFERENCES runs (id),
    round      INTEGER NOT NULL,
    status     TEXT NOT NULL,
    opened     REAL NOT NULL,
    deadline   REAL NOT NULL,
    closed     REAL,
    sampled    TEXT NOT NULL,
    model      BLOB NOT NULL,
    model_sha256 TEXT NOT NULL,
    accuracy   REAL,
    loss       REAL,
    participants INTEGER NOT NULL DEFAULT 0,
    bytes_up   INTEGER NOT NULL DEFAULT 0,
    bytes_down INTEGER NOT NULL DEFAULT 0,
    epsilon    REAL,
    reason     TEXT,
    stage      TEXT NOT NULL DEFAULT 'train',
    stage_deadline REAL,
    sent       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run, round)
) WITHOUT ROWID;
CREATE TABLE secagg (
    run      TEXT NOT NULL,
    round    INTEGER NOT NULL,
    stage    TEXT NOT NULL,
    device   TEXT NOT NULL,
    body     BLOB NOT NULL,
    wire     INTEGER NOT NULL,
    examples INTEGER NOT NULL DEFAULT 0,
    bytes_down INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run, round, stage, device)
) WITHOUT ROWID;
CREATE TABLE chunks (
    run      TEXT NOT NULL,
    round    INTEGER NOT NULL,
    device   TEXT NOT NULL,
    idx      INTEGER NOT NULL,
    total    INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    wire     INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (run, round, device, idx)
) WITHOUT ROWID;
CREATE TABLE updates (
    run       TEXT NOT NULL,
    round     INTEGER NOT NULL,
    device    TEXT NOT NULL,
    status    TEXT NOT NULL,
    reason    TEXT,
    examples  INTEGER NOT NULL DEFAULT 0,
    loss      REAL,
    train_seconds REAL,
    bytes_up  INTEGER NOT NULL DEFAULT 0,
    bytes_down INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    data      BLOB,
    received  REAL NOT NULL,
    PRIMARY KEY (run, round, device)
) WITHOUT ROWID;
"""
MIGRATIONS = [_SCHEMA_V1]

#: A run's statuses that are picked up again after a restart.
ACTIVE = ACTIVE_RUN_STATUSES


class RunStore:
    """The federated runs of one controller; thread-safe (one connection under a lock)."""

    def __init__(self, path: Path, *, key: DeviceKey | None = None) -> None:
        self.path = Path(path)
        # key: the controller's database key (`--db-key`): the file is then encrypted.
        self._conn = open_database(self.path, MIGRATIONS, what="federated runs", key=key)
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cursor = self._conn.execute(sql, args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def one(self, sql: str, args: Sequence[object] = ()) -> dict[str, Any] | None:
        found = self.rows(sql, args)
        return dict(found[0]) if found else None

    # -- runs ------------------------------------------------------------------------------

    def add_run(self, run_id: str, spec: str, model: bytes) -> None:
        now = time.time()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO runs (id, spec, status, model, created, updated) "
                "VALUES (?, ?, 'running', ?, ?, ?)",
                (run_id, spec, model, now, now),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        row = self.one("SELECT * FROM runs WHERE id = ?", (run_id,))
        if row is not None:
            row["result"] = json.loads(row["result"])
        return row

    def runs(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, spec, status, round, reason, result, created, updated FROM runs"
        args: tuple[object, ...] = ()
        if statuses:
            sql += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args = tuple(statuses)
        found = self.rows(sql + " ORDER BY created", args)
        for row in found:
            row["result"] = json.loads(row["result"])
        return found

    def set_status(
        self, run_id: str, status: str, reason: str | None = None, **result: Any
    ) -> None:
        with self.transaction() as tx:
            (old,) = tx.execute("SELECT result FROM runs WHERE id = ?", (run_id,)).fetchone()
            merged = {**json.loads(old), **result}
            tx.execute(
                "UPDATE runs SET status = ?, reason = COALESCE(?, reason), result = ?, updated = ? "
                "WHERE id = ?",
                (status, reason, json.dumps(merged), time.time(), run_id),
            )

    # -- rounds ----------------------------------------------------------------------------

    def open_round(
        self,
        run_id: str,
        round: int,
        deadline: float,
        sampled: Sequence[str],
        model: bytes,
        sha256: str,
    ) -> None:
        now = time.time()
        with self.transaction() as tx:
            tx.execute(
                "INSERT INTO rounds (run, round, status, opened, deadline, sampled, model, "
                "model_sha256) VALUES (?, ?, 'open', ?, ?, ?, ?, ?)",
                (run_id, round, now, deadline, json.dumps(list(sampled)), model, sha256),
            )
            tx.execute("UPDATE runs SET round = ?, updated = ? WHERE id = ?", (round, now, run_id))

    def round(self, run_id: str, round: int) -> dict[str, Any] | None:
        row = self.one("SELECT * FROM rounds WHERE run = ? AND round = ?", (run_id, round))
        if row is not None:
            row["sampled"] = json.loads(row["sampled"])
        return row

    def rounds(self, run_id: str) -> list[dict[str, Any]]:
        found = self.rows(
            "SELECT run, round, status, stage, opened, deadline, closed, sampled, accuracy, loss, "
            "participants, bytes_up, bytes_down, epsilon, reason FROM rounds WHERE run = ? "
            "ORDER BY round",
            (run_id,),
        )
        for row in found:
            row["sampled"] = json.loads(row["sampled"])
        return found

    def close_round(
        self,
        run_id: str,
        round: int,
        *,
        status: str,
        model: bytes | None,
        accuracy: float | None,
        loss: float | None,
        participants: int,
        epsilon: float | None,
        reason: str | None,
    ) -> None:
        """Close the round and, when it produced one, make ``model`` the run's global model."""
        now = time.time()
        with self.transaction() as tx:
            (up,) = tx.execute(
                "SELECT COALESCE(SUM(bytes_up), 0) FROM updates WHERE run = ? AND round = ?",
                (run_id, round),
            ).fetchone()
            (down,) = tx.execute(  # what the controller sent, whether or not it was answered
                "SELECT sent FROM rounds WHERE run = ? AND round = ?", (run_id, round)
            ).fetchone()
            tx.execute(
                "UPDATE rounds SET status = ?, closed = ?, accuracy = ?, loss = ?, "
                "participants = ?, bytes_up = ?, bytes_down = ?, epsilon = ?, reason = ? "
                "WHERE run = ? AND round = ?",
                (status, now, accuracy, loss, participants, up, down, epsilon, reason, run_id,
                 round),
            )  # fmt: skip
            tx.execute("DELETE FROM chunks WHERE run = ? AND round = ?", (run_id, round))
            tx.execute("DELETE FROM secagg WHERE run = ? AND round = ?", (run_id, round))
            tx.execute(
                "UPDATE updates SET data = NULL WHERE run = ? AND round = ?", (run_id, round)
            )
            if model is not None:
                tx.execute(
                    "UPDATE runs SET model = ?, updated = ? WHERE id = ?", (model, now, run_id)
                )

    def add_sent(self, run_id: str, round: int, count: int) -> None:
        """Count ``count`` more bytes sent to devices in this round."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE rounds SET sent = sent + ? WHERE run = ? AND round = ?",
                (count, run_id, round),
            )

    def last_round(self, run_id: str) -> dict[str, Any] | None:
        """The latest closed round's figures, for a run's summary."""
        return self.one(
            "SELECT round, accuracy, loss, epsilon FROM rounds WHERE run = ? AND closed IS NOT "
            "NULL ORDER BY round DESC LIMIT 1",
            (run_id,),
        )

    def set_stage(self, run_id: str, round: int, stage: str, deadline: float) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE rounds SET stage = ?, stage_deadline = ? WHERE run = ? AND round = ?",
                (stage, deadline, run_id, round),
            )

    # -- secure aggregation's messages -------------------------------------------------------

    def add_secagg(
        self,
        run_id: str,
        round: int,
        stage: str,
        device: str,
        body: bytes,
        *,
        wire: int,
        examples: int = 0,
        bytes_down: int = 0,
    ) -> bool:
        """Store a device's message of a stage; False when it had sent that stage already."""
        with self.transaction() as tx:
            cursor = tx.execute(
                "INSERT OR IGNORE INTO secagg VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, round, stage, device, body, wire, examples, bytes_down),
            )
            return cursor.rowcount == 1

    def secagg(self, run_id: str, round: int, stage: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM secagg WHERE run = ? AND round = ?"
        args: tuple[object, ...] = (run_id, round)
        if stage is not None:
            sql += " AND stage = ?"
            args += (stage,)
        return self.rows(sql + " ORDER BY device", args)

    # -- chunks and updates ----------------------------------------------------------------

    def add_chunk(
        self,
        run_id: str,
        round: int,
        device: str,
        index: int,
        total: int,
        sha256: str,
        size: int,
        wire: int,
        data: bytes,
    ) -> list[int]:
        """Store one chunk (a second copy is ignored); the indices stored so far."""
        with self.transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, round, device, index, total, sha256, size, wire, data),
            )
            return [
                r[0]
                for r in tx.execute(
                    "SELECT idx FROM chunks WHERE run = ? AND round = ? AND device = ? "
                    "ORDER BY idx",
                    (run_id, round, device),
                )
            ]

    def chunks(self, run_id: str, round: int, device: str) -> list[dict[str, Any]]:
        return self.rows(
            "SELECT idx, total, sha256, size, wire, data FROM chunks WHERE run = ? AND round = ? "
            "AND device = ? ORDER BY idx",
            (run_id, round, device),
        )

    def drop_chunks(self, run_id: str, round: int, device: str) -> None:
        with self.transaction() as tx:
            tx.execute(
                "DELETE FROM chunks WHERE run = ? AND round = ? AND device = ?",
                (run_id, round, device),
            )

    def add_update(
        self,
        run_id: str,
        round: int,
        device: str,
        *,
        status: str,
        reason: str | None = None,
        examples: int = 0,
        loss: float | None = None,
        train_seconds: float | None = None,
        bytes_up: int = 0,
        bytes_down: int = 0,
        data: bytes | None = None,
    ) -> None:
        """Record a device's answer to a round (accepted, refused or declined) and drop its chunks."""
        with self.transaction() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO updates (run, round, device, status, reason, examples, "
                "loss, train_seconds, bytes_up, bytes_down, data, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, round, device, status, reason, examples, loss, train_seconds, bytes_up,
                 bytes_down, data, time.time()),
            )  # fmt: skip
            tx.execute(
                "DELETE FROM chunks WHERE run = ? AND round = ? AND device = ?",
                (run_id, round, device),
            )

    def late_updates(self, run_id: str, since: int) -> list[dict[str, Any]]:
        """Updates that arrived after their round closed, from round ``since`` on, not used yet."""
        return self.rows(
            "SELECT * FROM updates WHERE run = ? AND round >= ? AND status = 'late' "
            "ORDER BY round, device",
            (run_id, since),
        )

    def fold(self, run_id: str, round: int, device: str, into: int) -> None:
        """Mark a late update as used by round ``into`` (its data is no longer needed)."""
        with self.transaction() as tx:
            tx.execute(
                "UPDATE updates SET status = 'folded', reason = ?, data = NULL "
                "WHERE run = ? AND round = ? AND device = ?",
                (f"folded into round {into}", run_id, round, device),
            )

    def count_duplicate(self, run_id: str, round: int, device: str) -> None:
        with self.transaction() as tx:
            tx.execute(
                "UPDATE updates SET duplicates = duplicates + 1 WHERE run = ? AND round = ? "
                "AND device = ?",
                (run_id, round, device),
            )

    def update(self, run_id: str, round: int, device: str) -> dict[str, Any] | None:
        return self.one(
            "SELECT * FROM updates WHERE run = ? AND round = ? AND device = ?",
            (run_id, round, device),
        )

    def updates(self, run_id: str, round: int, *, data: bool = False) -> list[dict[str, Any]]:
        columns = "*" if data else (
            "device, status, reason, examples, loss, train_seconds, bytes_up, bytes_down, "
            "duplicates, received"
        )  # fmt: skip
        return self.rows(
            f"SELECT {columns} FROM updates WHERE run = ? AND round = ? ORDER BY device",
            (run_id, round),
        )
