"""Erasure expressions: ``source == "cam-3" and time < "2026-12-01"`` as a parameterised SQL clause.

:func:`compile_where` parses the expression with Python's own parser
(:mod:`ast`, parsing only: nothing is evaluated) and translates the few node
kinds it allows into a SQL clause; every value goes in as a parameter, never
as SQL text. A node it does not allow is refused with its column.
:func:`where_shape` and :func:`erase_digest` are what the audit log keeps of
a request instead of the request: its fields and operators, and a (keyed)
fingerprint that confirms which request it was to whoever holds the key.

>>> compile_where('source == "cam-3" and time < 1700000000')
('(source = ? AND captured_at < ?)', ['cam-3', 1700000000.0])
>>> compile_where('source = "cam-3"')
Traceback (most recent call last):
...
fogline.errors.ConfigError: --where 'source = "cam-3"': invalid syntax at column 8 (compare with ==)
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fogline.errors import ConfigError

if TYPE_CHECKING:
    from fogline.security import DeviceKey

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


class _Refused(Exception):
    def __init__(self, node: ast.AST, why: str) -> None:
        super().__init__(why)
        self.column = getattr(node, "col_offset", 0) + 1
        self.why = why


def compile_where(
    expression: str,
    *,
    since: float | None = None,
    until: float | None = None,
    columns: Mapping[str, str] = FIELDS,
) -> tuple[str, list[Any]]:
    """``expression`` (and ``time >= since``, ``time < until``) as a SQL clause and its parameters.

    ``columns`` says what SQL each field means (a table that lacks a field
    maps it to ``NULL``: a comparison on it is then unknown, never true).
    """
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
            parts.append(_node(tree.body, params, columns))
        except _Refused as exc:
            raise ConfigError(
                f"--where {expression!r}: at column {exc.column}: {exc.why}; "
                f"name {', '.join(FIELDS)} and compare with ==, !=, <, <=, >, >=, in; "
                "join with and, or, not"
            ) from None
    if since is not None:
        parts.append(f"{columns['time']} >= ?")
        params.append(float(since))
    if until is not None:
        parts.append(f"{columns['time']} < ?")
        params.append(float(until))
    if not parts:
        raise ConfigError('say what to erase: --where EXPR (source == "cam-3"), --since or --until')
    return " AND ".join(parts), params


def _node(node: ast.AST, params: list[Any], columns: Mapping[str, str]) -> str:
    if isinstance(node, ast.BoolOp):
        joint = " AND " if isinstance(node.op, ast.And) else " OR "
        return "(" + joint.join(_node(value, params, columns) for value in node.values) + ")"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return f"(NOT {_node(node.operand, params, columns)})"
    if isinstance(node, ast.Compare):
        terms: list[str] = []
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            terms.append(_compare(left, op, right, params, columns))
            left = right
        return terms[0] if len(terms) == 1 else "(" + " AND ".join(terms) + ")"
    raise _Refused(node, f"{_what(node)} is not a comparison")


def _compare(
    left: ast.AST, op: ast.cmpop, right: ast.AST, params: list[Any], columns: Mapping[str, str]
) -> str:
    if isinstance(op, (ast.In, ast.NotIn)):
        name = _field(left)
        if not isinstance(right, (ast.List, ast.Tuple, ast.Set)) or not right.elts:
            raise _Refused(right, '`in` takes a list of values: ["cam-1", "cam-2"]')
        values = [_value(element, name) for element in right.elts]
        params.extend(values)
        marks = ", ".join("?" * len(values))
        return f"{columns[name]} {'NOT IN' if isinstance(op, ast.NotIn) else 'IN'} ({marks})"
    sql = _COMPARE.get(type(op))
    if sql is None:
        raise _Refused(left, f"the operator {type(op).__name__} is not allowed")
    if isinstance(left, ast.Name):
        name, value = _field(left), right
    elif isinstance(right, ast.Name):
        name, value, sql = _field(right), left, _FLIPPED[sql]
    else:
        raise _Refused(left, "a comparison names a field on one side")
    params.append(_value(value, name))
    return f"{columns[name]} {sql} ?"


def _field(node: ast.AST) -> str:
    """The field ``node`` names (a key of :data:`FIELDS`)."""
    if not isinstance(node, ast.Name):
        raise _Refused(node, f"{_what(node)} is not a field")
    if node.id not in FIELDS:
        raise _Refused(node, f"no field {node.id!r}")
    return node.id


def _value(node: ast.AST, name: str) -> Any:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _value(node.operand, name)
        if isinstance(inner, float):
            return -inner
    if not isinstance(node, ast.Constant) or isinstance(node.value, bool) or node.value is None:
        raise _Refused(node, f"{_what(node)} is not a value (a quoted string or a number)")
    value = node.value
    if name == "time":  # a time: epoch seconds, or an ISO date or time
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return datetime.fromisoformat(str(value)).timestamp()
        except ValueError:
            raise _Refused(node, f"time {value!r} is not epoch seconds or an ISO date") from None
    if isinstance(value, (int, float)):
        raise _Refused(node, f'{name} is text: quote it ("{value}")')
    if not isinstance(value, str):
        raise _Refused(node, f"{_what(node)} is not a value (a quoted string or a number)")
    return value


def _what(node: ast.AST) -> str:
    try:
        return f"`{ast.unparse(node)}`"
    except Exception:  # pragma: no cover - unparse handles every node parse makes
        return type(node).__name__


#: What a label row has of the fields: its item (a history row ``ITEM@RESULT`` named by its
#: item) and the version it was compared with; the rest it lacks (NULL: unknown, never true).
LABEL_COLUMNS = {
    **{name: "NULL" for name in FIELDS},
    "item_id": "(CASE WHEN result_id IS NOT NULL AND item_id GLOB '*@' || result_id"
    " THEN substr(item_id, 1, length(item_id) - length(result_id) - 1) ELSE item_id END)",
    "version": "model_version",
}


def where_shape(expression: str) -> str:
    """``expression`` with every value replaced by ``?``: what an erasure asked, naming nobody.

    >>> where_shape('item_id == "patient-42" or source in ["cam-1", "cam-2"]')
    'item_id == ? or source in [?, ?]'
    """
    text = expression.strip()
    if not text:
        return ""
    compile_where(text)  # refused here as it would be by erase

    class _Mask(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.AST:
            return ast.Name(id="?")

    return ast.unparse(_Mask().visit(ast.parse(text, mode="eval")))


def erase_digest(
    where: str,
    *,
    since: float | None = None,
    until: float | None = None,
    key: DeviceKey | None = None,
) -> str:
    """A fingerprint of an erasure request, for the audit log: the request itself stays out of it.

    With the device key, ``hmac-sha256:`` (its ``"audit-erase"`` sub-key): only
    who holds the key can check which request an entry was. Without one,
    ``sha256:`` of the request: anyone can test a guess (a short id is easy
    to guess), so a device key is the better choice.

    >>> digest = erase_digest('item_id == "patient-42"')
    >>> digest.split(":")[0], digest == erase_digest('  item_id == "patient-42"')
    ('sha256', True)
    """
    request = json.dumps(
        {"since": since, "until": until, "where": where.strip()},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if key is None:
        return "sha256:" + hashlib.sha256(request).hexdigest()
    secret = key.derive("audit-erase")
    return "hmac-sha256:" + hmac.new(secret, request, hashlib.sha256).hexdigest()
