"""Erasure: delete what matches an expression from every table, and leave no copy in the file.

``source == "cam-3"``, ``time >= "2026-12-01" and time < "2026-12-02"``,
``model == "digits" and version != "3"``: :func:`compile_where` parses the
expression with Python's own parser (:mod:`ast`, parsing only: nothing is
evaluated) and translates the few node kinds it allows into a parameterised
SQL clause; every value goes in as a parameter, never as SQL text. A node it
does not allow is refused with its column.

:func:`erase` deletes the matching results, their outbox messages, the
matching captures and the labels of the erased items, in one transaction
with ``PRAGMA secure_delete`` on (SQLite overwrites deleted content with
zeros), then checkpoints the WAL with TRUNCATE, rebuilds the file
(``VACUUM``) and truncates the WAL again: no erased byte stays in
``results.db`` or ``results.db-wal``. A reader that holds the WAL (a running
pipeline) can stop the truncation; :attr:`Erased.scrubbed` says so.

Pending outbox messages of erased results are deleted with them (never sent)
and counted as ``dropped``, so ``produced = delivered + pending + dropped``
still holds.

>>> compile_where('source == "cam-3" and time < 1700000000')
('(source = ? AND captured_at < ?)', ['cam-3', 1700000000.0])
>>> compile_where('source = "cam-3"')
Traceback (most recent call last):
...
fogline.errors.ConfigError: --where 'source = "cam-3"': invalid syntax at column 8 (compare with ==)
"""

from __future__ import annotations

import ast
import dataclasses
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fogline.errors import ConfigError, StoreError
from fogline.store._driver import database_errors

if TYPE_CHECKING:
    from fogline.security import AuditLog
    from fogline.store._store import ResultStore

#: What an expression may name, and the column it means (the same in results and captures).
FIELDS = {
    "source": "source",
    "time": "captured_at",
    "model": "model",
    "version": "model_version",
    "item_id": "item_id",
    "position": "position",
}
_COMPARE = {
    ast.Eq: "=",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_FLIPPED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


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


class _Refused(Exception):
    def __init__(self, node: ast.AST, why: str) -> None:
        super().__init__(why)
        self.column = getattr(node, "col_offset", 0) + 1
        self.why = why


def compile_where(
    expression: str, *, since: float | None = None, until: float | None = None
) -> tuple[str, list[Any]]:
    """``expression`` (and ``time >= since``, ``time < until``) as a SQL clause and its parameters."""
    parts: list[str] = []
    params: list[Any] = []
    text = expression.strip()
    if text:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            hint = " (compare with ==)" if "=" in text and "==" not in text else ""
            raise ConfigError(
                f"--where {expression!r}: invalid syntax at column {exc.offset}{hint}"
            ) from None
        try:
            parts.append(_node(tree.body, params))
        except _Refused as exc:
            raise ConfigError(
                f"--where {expression!r}: at column {exc.column}: {exc.why}; "
                f"name {', '.join(FIELDS)} and compare with ==, !=, <, <=, >, >=, in; "
                "join with and, or, not"
            ) from None
    if since is not None:
        parts.append("captured_at >= ?")
        params.append(float(since))
    if until is not None:
        parts.append("captured_at < ?")
        params.append(float(until))
    if not parts:
        raise ConfigError('say what to erase: --where EXPR (source == "cam-3"), --since or --until')
    return " AND ".join(parts), params


def _node(node: ast.AST, params: list[Any]) -> str:
    if isinstance(node, ast.BoolOp):
        joint = " AND " if isinstance(node.op, ast.And) else " OR "
        return "(" + joint.join(_node(value, params) for value in node.values) + ")"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return f"(NOT {_node(node.operand, params)})"
    if isinstance(node, ast.Compare):
        terms: list[str] = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            terms.append(_compare(left, op, right, params))
            left = right
        return terms[0] if len(terms) == 1 else "(" + " AND ".join(terms) + ")"
    raise _Refused(node, f"{_what(node)} is not a comparison")


def _compare(left: ast.AST, op: ast.cmpop, right: ast.AST, params: list[Any]) -> str:
    if isinstance(op, (ast.In, ast.NotIn)):
        column = _field(left)
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)) or not right.elts:
            raise _Refused(right, '`in` takes a list of values: ["cam-1", "cam-2"]')
        values = [_value(element, column) for element in right.elts]
        params.extend(values)
        marks = ", ".join("?" * len(values))
        return f"{column} {'NOT IN' if isinstance(op, ast.NotIn) else 'IN'} ({marks})"
    sql = _COMPARE.get(type(op))
    if sql is None:
        raise _Refused(left, f"the operator {type(op).__name__} is not allowed")
    if isinstance(left, ast.Name):
        column, value = _field(left), right
    elif isinstance(right, ast.Name):
        column, value, sql = _field(right), left, _FLIPPED[sql]
    else:
        raise _Refused(left, "a comparison names a field on one side")
    params.append(_value(value, column))
    return f"{column} {sql} ?"


def _field(node: ast.AST) -> str:
    if not isinstance(node, ast.Name):
        raise _Refused(node, f"{_what(node)} is not a field")
    column = FIELDS.get(node.id)
    if column is None:
        raise _Refused(node, f"no field {node.id!r}")
    return column


def _value(node: ast.AST, column: str) -> Any:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _value(node.operand, column)
        if isinstance(inner, float):
            return -inner
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool) or node.value is None:
        raise _Refused(node, f"{_what(node)} is not a value (a quoted string or a number)")
    value = node.value
    if column == "captured_at":  # a time: epoch seconds, or an ISO date or time
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return datetime.fromisoformat(str(value)).timestamp()
        except ValueError:
            raise _Refused(node, f"time {value!r} is not epoch seconds or an ISO date") from None
    if isinstance(value, (int, float)):
        raise _Refused(node, f'{FIELDS_OF[column]} is text: quote it ("{value}")')
    if not isinstance(value, str):
        raise _Refused(node, f"{_what(node)} is not a value (a quoted string or a number)")
    return value


FIELDS_OF = {column: name for name, column in FIELDS.items()}


def _what(node: ast.AST) -> str:
    try:
        return f"`{ast.unparse(node)}`"
    except Exception:  # pragma: no cover - unparse handles every node parse makes
        return type(node).__name__


def erase(
    store: ResultStore,
    where: str,
    *,
    since: float | None = None,
    until: float | None = None,
    dry_run: bool = False,
    audit: AuditLog | None = None,
) -> Erased:
    """Erase what ``where`` matches from ``store`` (see the module docstring); the counts.

    ``audit`` gets a ``store.erased`` event (the expression and the counts) once
    the deletion is committed.
    """
    clause, params = compile_where(where, since=since, until=until)
    results = f"SELECT id FROM results WHERE {clause}"
    items = (
        f"SELECT item_id FROM results WHERE item_id IS NOT NULL AND {clause}"
        f" UNION SELECT item_id FROM captures WHERE {clause}"
    )
    label_rows = f"FROM labels WHERE result_id IN ({results}) OR item_id IN ({items})"
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
                conn.execute(f"SELECT count(*) {label_rows}", [*params, *both]).fetchone()[0],
            ]
        results_n, outbox_n, captures_n, labels_n = (int(n) for n in counts)
        return Erased(where, results_n, outbox_n, captures_n, labels_n, dry_run=True)
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
                labels = conn.execute(f"DELETE {label_rows}", [*params, *both]).rowcount
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
            if audit is not None:  # the expression and the counts, never a value erased
                audit.record(
                    "store.erased", store=str(store.path), where=where, since=since,
                    until=until, **done.counts(),
                )  # fmt: skip
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


def _scrub(conn: sqlite3.Connection) -> bool:
    """Move the WAL into the file, rebuild the file, empty the WAL; whether all of it was done."""
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    conn.execute("VACUUM")
    again, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy and not again
