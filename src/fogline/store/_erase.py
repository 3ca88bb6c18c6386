"""Erasure: delete what matches an expression from every table, and leave no copy in the file.

``source == "cam-3"``, ``time >= "2026-12-01" and time < "2026-12-02"``,
``model == "digits" and version != "3"``: the expression is compiled to SQL by
:func:`~fogline.store._where.compile_where`.

:func:`erase` deletes the matching results, their outbox messages, the
matching captures and their labels (see :func:`_label_rows`), in one transaction
with ``PRAGMA secure_delete`` on (SQLite overwrites deleted content with
zeros), then checkpoints the WAL with TRUNCATE, rebuilds the file
(``VACUUM``) and truncates the WAL again: no erased byte stays in
``results.db`` or ``results.db-wal``. A reader that holds the WAL (a running
pipeline) can stop the truncation; :attr:`Erased.scrubbed` says so.

Pending outbox messages of erased results are deleted with them (never sent)
and counted as ``dropped``, so ``produced = delivered + pending + dropped``
still holds.
"""

from __future__ import annotations

import ast
import dataclasses
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fogline.errors import StoreError
from fogline.store._driver import database_errors
from fogline.store._where import (
    LABEL_COLUMNS,
    compile_where,
    erase_digest,
    where_shape,
)

if TYPE_CHECKING:
    from fogline.security import AuditLog, DeviceKey
    from fogline.store._store import ResultStore


@dataclass(frozen=True)
class Erased:
    """What :func:`erase` removed (or, on a dry run, would remove), per table."""

    where: str
    results: int
    outbox: int
    captures: int
    labels: int
    dry_run: bool = False
    #: The WAL was truncated and the file rebuilt: no erased byte is left in either.
    scrubbed: bool = False

    def counts(self) -> dict[str, int]:
        return {
            "results": self.results,
            "outbox": self.outbox,
            "captures": self.captures,
            "labels": self.labels,
        }


def _label_rows(
    where: str, since: float | None, until: float | None, results: tuple[str, list[Any]]
) -> tuple[str, list[Any]]:
    """``FROM labels WHERE ...``: the labels an erasure takes, and its parameters.

    A label joined to a result goes with that result (``result_id``): an item
    id alone names no one result (two sources may use the same). A label
    joined to none (or to a result gone already) goes when the expression
    holds on the fields the label has (``item_id``, ``version``), or when
    its item is one of the erased results' or captures' and of no result or
    capture that stays.
    """
    results_sql, params = results
    clause = results_sql.removeprefix("SELECT id FROM results WHERE ")
    own, own_params = compile_where(where, since=since, until=until, columns=LABEL_COLUMNS)
    item = LABEL_COLUMNS["item_id"]
    goes = f"({clause}) OR result_id IN ({results_sql})"
    erased_items = (
        f"SELECT item_id FROM results WHERE item_id IS NOT NULL AND ({clause})"
        f" UNION SELECT item_id FROM captures WHERE {goes}"
    )
    kept_items = (
        f"SELECT item_id FROM results WHERE item_id IS NOT NULL AND NOT IFNULL(({clause}), 0)"
        f" UNION SELECT item_id FROM captures WHERE NOT IFNULL(({goes}), 0)"
    )
    sql = (
        f"FROM labels WHERE result_id IN ({results_sql}) OR ("
        "(result_id IS NULL OR result_id NOT IN (SELECT id FROM results)) AND ("
        f"({own}) OR ({item} IN ({erased_items}) AND {item} NOT IN ({kept_items}))))"
    )
    return sql, [*params, *own_params, *params, *params, *params, *params, *params, *params]


def erase(
    store: ResultStore,
    where: str,
    *,
    since: float | None = None,
    until: float | None = None,
    dry_run: bool = False,
    audit: AuditLog | None = None,
    audit_key: DeviceKey | None = None,
) -> Erased:
    """Erase what ``where`` matches from ``store`` (see the module docstring); the counts.

    ``audit`` gets a ``store.erased`` event once the deletion is committed:
    the fields and operators of the request (:func:`where_shape`), its
    fingerprint (:func:`erase_digest`, keyed with ``audit_key``) and the
    counts, never a value it named: the log is append-only and plain, and
    would otherwise keep what was erased.
    """
    clause, params = compile_where(where, since=since, until=until)
    results = f"SELECT id FROM results WHERE {clause}"
    label_rows, label_params = _label_rows(where, since, until, (results, params))
    both = [*params, *params]
    if dry_run:
        with store._read() as conn:
            counts = [
                conn.execute(f"SELECT count(*) FROM ({results})", params).fetchone()[0],
                conn.execute(
                    f"SELECT count(*) FROM outbox WHERE result_id IN ({results})", params
                ).fetchone()[0],
                conn.execute(
                    f"SELECT count(*) FROM captures WHERE ({clause}) OR result_id IN ({results})",
                    both,
                ).fetchone()[0],
                conn.execute(f"SELECT count(*) {label_rows}", label_params).fetchone()[0],
            ]
        results_n, outbox_n, captures_n, labels_n = (int(n) for n in counts)
        return Erased(where, results_n, outbox_n, captures_n, labels_n, dry_run=True)
    shape = where_shape(where)  # before anything is erased: a refused expression erases nothing
    with store._read() as conn:
        (before,) = conn.execute("PRAGMA secure_delete").fetchone()
        conn.execute("PRAGMA secure_delete=ON")
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                outbox = conn.execute(
                    f"DELETE FROM outbox WHERE result_id IN ({results})", params
                ).rowcount
                conn.execute(
                    "UPDATE counters SET value = value + ? WHERE name = 'dropped'", (outbox,)
                )
                labels = conn.execute(f"DELETE {label_rows}", label_params).rowcount
                captures = conn.execute(
                    f"DELETE FROM captures WHERE ({clause}) OR result_id IN ({results})", both
                ).rowcount
                erased = conn.execute(f"DELETE FROM results WHERE {clause}", params).rowcount
                conn.execute("COMMIT")
            except database_errors() as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise StoreError(f"{store.path}: erase failed, nothing was erased: {exc}") from exc
            done = Erased(where, erased, outbox, captures, labels)
            if audit is not None:
                audit.record(
                    "store.erased",
                    store=str(store.path),
                    where=shape,
                    names=sorted(_fields_named(where)),
                    since=since is not None,
                    until=until is not None,
                    request=erase_digest(where, since=since, until=until, key=audit_key),
                    **done.counts(),
                )
            try:
                scrubbed = _scrub(conn)
            except database_errors() as exc:
                raise StoreError(
                    f"{store.path}: erased {done.results} result(s), but the file could not be "
                    f"rebuilt, so copies may remain in free pages or the WAL: {exc}; "
                    "run the erase again when nothing else has the store open"
                ) from exc
        finally:
            conn.execute(f"PRAGMA secure_delete={int(before)}")
    return dataclasses.replace(done, scrubbed=scrubbed)


def _fields_named(where: str) -> set[str]:
    text = where.strip()
    if not text:
        return set()
    return {n.id for n in ast.walk(ast.parse(text, mode="eval")) if isinstance(n, ast.Name)}


def _scrub(conn: sqlite3.Connection) -> bool:
    """Move the WAL into the file, rebuild the file, empty the WAL; whether all of it was done."""
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.execute("VACUUM")
    again, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy and not again
