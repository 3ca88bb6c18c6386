"""Late labels in the store: a :class:`StoredLabel` per item, joined to the result it labels.

A label names its item by id (``results.item_id``); once joined it also
holds the result it was compared with (``result_id``, ``model_version``) and
the outcome: ``correct`` for a classifier, ``error`` (absolute) for a
regressor. :class:`LiveAccuracy` is what the store reads back: accuracy or
mean absolute error per model version over the last ``window`` joined labels.

The SQL lives here, as functions on a connection the :class:`ResultStore`
holds under its lock; :class:`ResultStore` exposes them as methods.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: SQLite's limit on ``?`` in one statement is 999 in old builds: ask in chunks of this.
_CHUNK = 500


@dataclass(frozen=True)
class StoredLabel:
    """One item's label (any JSON value), when it arrived, and what it joined to.

    ``result_id`` is ``None`` until the label is joined to a result; then
    ``model_version`` is the result's, and ``correct`` (classification) or
    ``error`` (regression, ``|prediction - label|``) says how the result did.

    >>> StoredLabel("digits#3", "7", 1_700_000_000.0, 12, "1.0.0", correct=True).joined
    True
    >>> StoredLabel("", "7", 0.0)
    Traceback (most recent call last):
    ...
    ValueError: a label needs a non-empty item id
    """

    item_id: str
    label: Any
    received_at: float
    result_id: int | None = None
    model_version: str | None = None
    correct: bool | None = None
    error: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id:
            raise ValueError("a label needs a non-empty item id")
        if not isinstance(self.received_at, int | float) or not math.isfinite(self.received_at):
            raise ValueError(f"received_at must be epoch seconds, got {self.received_at!r}")
        if self.error is not None and not math.isfinite(self.error):
            raise ValueError(f"error must be finite, got {self.error!r}")

    @property
    def joined(self) -> bool:
        """Whether the label has been compared with a result."""
        return self.result_id is not None


@dataclass(frozen=True)
class LiveAccuracy:
    """How one model version did over its last ``window`` joined labels.

    ``labelled`` is how many joined labels the window holds (fewer than
    ``window`` early on); ``accuracy`` is ``correct / labelled`` for the
    labels compared as classes, ``mae`` the mean absolute error of those
    compared as numbers (each ``None`` when there were none).

    >>> LiveAccuracy("1.0.0", 100, 40, 38, 0.95, None).metric
    'accuracy'
    """

    model_version: str
    window: int
    labelled: int
    correct: int | None
    accuracy: float | None
    mae: float | None

    @property
    def metric(self) -> str:
        """``"accuracy"`` for a classifier's figures, ``"mae"`` for a regressor's."""
        return "accuracy" if self.accuracy is not None or self.mae is None else "mae"

    @property
    def value(self) -> float | None:
        return self.accuracy if self.metric == "accuracy" else self.mae


def put_labels(conn: sqlite3.Connection, labels: Sequence[StoredLabel]) -> None:
    """Insert or replace the labels (one row per item id), inside the caller's transaction.

    A joined label for an item whose row is joined to another result (an id a
    later run reused) keeps that row as history, renamed ``{item_id}@{result_id}``,
    so the earlier model version's live accuracy stays; the item id names the newest.
    """
    conn.executemany(
        "UPDATE OR REPLACE labels SET item_id = item_id || '@' || result_id"
        " WHERE item_id = ? AND result_id IS NOT NULL AND result_id != ?",
        [(label.item_id, label.result_id) for label in labels if label.result_id is not None],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO labels (item_id, label, received_at, result_id, model_version,"
        " correct, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                label.item_id,
                json.dumps(label.label, separators=(",", ":")),
                float(label.received_at),
                label.result_id,
                label.model_version,
                None if label.correct is None else int(label.correct),
                label.error,
            )
            for label in labels
        ],
    )


def labels_of(conn: sqlite3.Connection, item_ids: Iterable[str]) -> dict[str, StoredLabel]:
    """The stored labels of those item ids that have one."""
    found: dict[str, StoredLabel] = {}
    for chunk in _chunks(list(dict.fromkeys(item_ids))):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT item_id, label, received_at, result_id, model_version, correct, error"
            f" FROM labels WHERE item_id IN ({marks})",
            chunk,
        ).fetchall()
        for item_id, label, received_at, result_id, version, correct, error in rows:
            found[item_id] = StoredLabel(
                item_id,
                json.loads(label),
                received_at,
                result_id,
                version,
                None if correct is None else bool(correct),
                error,
            )
    return found


def newest_result_ids(conn: sqlite3.Connection, item_ids: Iterable[str]) -> dict[str, int]:
    """The id of the newest result stored for each item id that has one."""
    found: dict[str, int] = {}
    for chunk in _chunks(list(dict.fromkeys(item_ids))):
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT item_id, max(id) FROM results WHERE item_id IN ({marks}) GROUP BY item_id",
            chunk,
        ).fetchall()
        found.update({item_id: id_ for item_id, id_ in rows})
    return found


def live_accuracy(
    conn: sqlite3.Connection, windows: Sequence[int], model_version: str | None = None
) -> list[LiveAccuracy]:
    """Per model version (all, or the one named) and window: the last ``window`` joined labels."""
    if model_version is None:
        versions = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT model_version FROM labels"
                " WHERE result_id IS NOT NULL ORDER BY model_version"
            )
        ]
    else:
        versions = [model_version]
    figures = []
    for version in versions:
        for window in windows:
            labelled, correct, compared, mae, measured = conn.execute(
                "SELECT count(*), sum(correct), count(correct), avg(error), count(error) FROM"
                " (SELECT correct, error FROM labels WHERE result_id IS NOT NULL"
                " AND model_version = ? ORDER BY received_at DESC, rowid DESC LIMIT ?)",
                (version, window),
            ).fetchone()
            figures.append(
                LiveAccuracy(
                    version,
                    window,
                    labelled,
                    correct if compared else None,
                    correct / compared if compared else None,
                    mae if measured else None,
                )
            )
    return figures


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]
