"""Retention by size: the oldest results (with their captures and labels) go until the store fits.

The size is the database's pages, ``page_count x page_size`` (what the file
is once its WAL is checkpointed); the WAL itself is bounded apart from this,
by SQLite's automatic checkpoint (about 4 MB). When the pages in use pass
``max_bytes``, the oldest results go, with their captures and the labels
joined to them, until what is in use is at most :data:`LOW_WATER` of the
limit: deleted rows leave free pages that new rows reuse, so the file stops
growing, and the margin lets a few batches in before the next pass. If the
file itself is still over the limit (it grew past it before, or the limit
was lowered), it is rebuilt (``VACUUM``) once, after the deletion commits.

A result whose outbox message is still pending is never deleted, by size
either: an undelivered message is never dropped to make room (the outbox has
its own bound, ``outbox.limit``, whose drops are counted). When only such
results are left, the store stays over the limit; the pass counts it
(``size_held``) and logs a warning, and :meth:`ResultStore.retention_stats`
reports it.

Counters (in the store's ``counters`` table, so they survive restarts):
``size_results`` and ``size_captures`` removed by size so far, ``size_held``
the passes that ended over the limit because pending messages held it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: A pass that finds the store over the limit deletes until this share of it is in use.
LOW_WATER = 0.8

#: The counters this module keeps in the store's ``counters`` table.
SIZE_COUNTERS = ("size_results", "size_captures", "size_held")

_DELETABLE = "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.result_id = results.id)"


@dataclass(frozen=True)
class RetentionStats:
    """What retention by size has done since the store was created."""

    size_results: int  # results removed to keep under max_bytes
    size_captures: int  # captures removed with them (or alone, when no result was left)
    size_held: int  # passes that ended over the limit: pending outbox messages held it
    bytes_used: int  # pages in use now (page_count - freelist_count) x page_size
    bytes_file: int  # page_count x page_size: the file once its WAL is checkpointed


def used_bytes(conn: sqlite3.Connection) -> tuple[int, int]:
    """``(in use, all pages)`` of the database, in bytes."""
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    (free,) = conn.execute("PRAGMA freelist_count").fetchone()
    return (pages - free) * page_size, pages * page_size


def retain_by_size(conn: sqlite3.Connection, max_bytes: int) -> int:
    """Delete the oldest results (and their captures, labels) until the store fits; how many.

    Runs inside the store's retention transaction.
    """
    used, _ = used_bytes(conn)
    if used <= max_bytes:
        return 0
    target = int(max_bytes * LOW_WATER)
    results = captures = 0
    for _ in range(64):  # each pass estimates what to delete from the average row
        used, _ = used_bytes(conn)
        if used <= target:
            break
        (rows,) = conn.execute("SELECT count(*) FROM results").fetchone()
        (held,) = conn.execute("SELECT count(*) FROM captures").fetchone()
        per_row = used / max(1, rows + held)
        chunk = max(16, math.ceil((used - target) / per_row))
        last = conn.execute(
            f"SELECT max(id), max(captured_at) FROM (SELECT id, captured_at FROM results"
            f" WHERE {_DELETABLE} ORDER BY id LIMIT ?)",
            (chunk,),
        ).fetchone()
        if last[0] is not None:
            last_id, last_time = last
            captures += conn.execute(
                "DELETE FROM captures WHERE result_id <= ? OR captured_at <= ?",
                (last_id, last_time),
            ).rowcount
            results += conn.execute(
                f"DELETE FROM results WHERE id <= ? AND {_DELETABLE}", (last_id,)
            ).rowcount
            conn.execute(
                "DELETE FROM labels WHERE result_id IS NOT NULL AND result_id <= ?"
                " AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = labels.result_id)",
                (last_id,),
            )
            continue
        # No result can go: the oldest captures alone, if any are left.
        gone = conn.execute(
            "DELETE FROM captures WHERE id IN (SELECT id FROM captures ORDER BY id LIMIT ?)",
            (chunk,),
        ).rowcount
        captures += gone
        if not gone:
            break
    used, _ = used_bytes(conn)
    if used > max_bytes:
        (pending,) = conn.execute(
            "SELECT count(*) FROM outbox WHERE result_id IS NOT NULL"
        ).fetchone()
        log.warning(
            "store retention: %d bytes in use, over max_bytes %d: %d result(s) wait in the "
            "outbox and are kept until delivered (outbox.limit bounds them)",
            used,
            max_bytes,
            pending,
        )
        _bump(conn, "size_held", 1)
    _bump(conn, "size_results", results)
    _bump(conn, "size_captures", captures)
    return results


def shrink(conn: sqlite3.Connection, max_bytes: int) -> bool:
    """Rebuild the file if its pages are more than ``max_bytes``; whether it was rebuilt.

    Outside any transaction: ``VACUUM`` cannot run in one.
    """
    used, pages = used_bytes(conn)
    if pages <= max_bytes or used >= pages:
        return False
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return True


def retention_stats(conn: sqlite3.Connection) -> RetentionStats:
    counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    used, pages = used_bytes(conn)
    removed, captures, held = (int(counters.get(name, 0)) for name in SIZE_COUNTERS)
    return RetentionStats(removed, captures, held, used, pages)


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )
