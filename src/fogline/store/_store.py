"""The device's durable results store and its outbox, in one SQLite file.

Concurrency: one ``sqlite3`` connection per :class:`ResultStore`, shared by
every thread and serialised by a lock held for the length of each call
(SQLite writes one transaction at a time anyway). Other processes may open
the same file: WAL lets them read while this one writes, and writers wait up
to ``timeout`` seconds for each other.

Durability: the file is in WAL mode with ``synchronous=FULL``, so when
:meth:`ResultStore.add` returns, its transaction is in the WAL and fsynced —
it survives a process crash *and* a power loss. (``NORMAL`` would survive a
crash but could lose the last commits on power loss, which breaks "durable
before acknowledged".) One fsync per ``add`` call: batch results to go faster.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fogline.errors import ConfigError, OutboxFull, StoreError
from fogline.store import _labels
from fogline.store._captures import CaptureStore, retain_captures
from fogline.store._database import open_database
from fogline.store._driver import database_errors
from fogline.store._labels import LiveAccuracy, StoredLabel
from fogline.store._result import (
    OutboxMessage,
    Record,
    Result,
    ResultEncoder,
    outputs_json,
    record_from_row,
    result_message,
)
from fogline.store._schema import MIGRATIONS
from fogline.store._size import RetentionStats, retain_by_size, retention_stats, shrink

if TYPE_CHECKING:
    from fogline.security import DeviceKey

OutboxPolicy = Literal["drop-oldest", "reject"]
OUTBOX_POLICIES: tuple[OutboxPolicy, ...] = ("drop-oldest", "reject")

_RESULT_COLUMNS = (
    "id, source, sequence, captured_at, model, model_version, outputs, sync, position, item_id"
)


@dataclass(frozen=True)
class Retention:
    """How long results are kept: at most ``max_age_s`` old, at most ``max_rows`` of them,
    in at most ``max_bytes`` of database pages (oldest first; see :mod:`._size`).

    ``None`` means no limit. Results still waiting in the outbox are kept regardless.

    >>> Retention(max_age_s=7 * 86400, max_rows=1_000_000).max_rows
    1000000
    >>> Retention(max_rows=-1)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: retention max_rows must be zero or more, got -1
    """

    max_age_s: float | None = None
    max_rows: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes < 65536:
            raise ConfigError(f"retention max_bytes must be at least 65536, got {self.max_bytes}")
        if self.max_age_s is not None and not self.max_age_s >= 0:
            raise ConfigError(f"retention max_age_s must be zero or more, got {self.max_age_s}")
        if self.max_rows is not None and self.max_rows < 0:
            raise ConfigError(f"retention max_rows must be zero or more, got {self.max_rows}")


@dataclass(frozen=True)
class OutboxStats:
    """Outbox counts since the store was created: ``produced = delivered + pending + dropped``."""

    produced: int
    delivered: int
    pending: int
    dropped: int


class ResultStore(CaptureStore):
    """Results and their outbox in one SQLite file (WAL); see the module docstring.

    The outbox holds plain :class:`OutboxMessage` values (topic, payload
    bytes, key). A ``sync`` result is queued as the message ``encode`` makes
    of it (by default :func:`~fogline.store.result_message`: its envelope on
    ``fogline/{source}/outbox``; the pipeline passes its own to choose the
    topic); :meth:`queue` takes messages that are not results (telemetry).

    Idempotency keys are random UUIDs (uuid4) drawn when a message is queued
    and stored with it, so every redelivery carries the same key. They
    are deliberately not derived from ``source``/``sequence``: a source's
    sequence restarts at 0 when the device reboots, and a derived key would make
    receivers discard genuinely new results as duplicates. Where a result's
    key is known to be stable, ``key_of`` gives it (None: a random one): the
    nodes of an edge cluster derive it from the group and the producer's item
    id, so two nodes that processed one item queue one effect.

    ``key`` is the device key the file is encrypted with (SQLCipher), not an
    idempotency key; ``None`` keeps it plain SQLite.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.db"
    >>> with ResultStore(path) as store:
    ...     kept = Result("cam0", 0, 1.0, "digits", "3", {"label": 4}, sync=True, position="a.png")
    ...     ids = store.add([kept])
    ...     store.get(ids[0]).result.position, store.count(), store.stats().pending
    ('a.png', 1, 1)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        outbox_limit: int = 100_000,
        outbox_policy: OutboxPolicy = "drop-oldest",
        retention: Retention = Retention(),
        timeout: float = 5.0,
        encode: ResultEncoder = result_message,
        key_of: Callable[[Result], str | None] | None = None,
        key: DeviceKey | None = None,
    ) -> None:
        if outbox_limit < 1:
            raise ConfigError(f"outbox_limit must be at least 1, got {outbox_limit}")
        if outbox_policy not in OUTBOX_POLICIES:
            raise ConfigError(
                f"outbox_policy must be one of {', '.join(OUTBOX_POLICIES)}; got {outbox_policy!r}"
            )
        self.path = Path(path)
        self.outbox_limit = outbox_limit
        self.outbox_policy: OutboxPolicy = outbox_policy
        self.retention = retention
        self.encode = encode
        self.key_of = key_of
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = open_database(
            self.path, MIGRATIONS, what="store", timeout=timeout, key=key
        )
        self.encrypted = key is not None

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; later calls raise :class:`StoreError`. Closing twice is fine."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ResultStore {str(self.path)!r} {state}>"

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreError(f"{self.path}: the store is closed")
            try:
                yield self._conn
            except database_errors() as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: all of it commits, or none of it does."""
        with self._read() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # also when COMMIT itself failed (busy, disk full)
                    with contextlib.suppress(*database_errors()):
                        conn.execute("ROLLBACK")
                raise

    # -- results -------------------------------------------------------------------

    def add(self, results: Iterable[Result]) -> list[int]:
        """Store ``results`` and queue the ``sync`` ones in the outbox, in one transaction.

        Returns their ids, in order, once the transaction is committed and
        durable. On any error nothing of the batch is stored. With the policy
        ``"reject"`` a batch that would overflow the outbox raises
        :class:`OutboxFull`; with ``"drop-oldest"`` the oldest pending messages
        are dropped to make room and counted in :meth:`dropped`.
        """
        batch = list(results)
        for index, result in enumerate(batch):
            if not isinstance(result, Result):
                raise TypeError(
                    f"item {index} of the batch is a {type(result).__name__}, not a Result"
                )
        if not batch:
            return []
        with self._write() as conn:
            queued = sum(r.sync for r in batch)
            pending = self._make_room(conn, queued, "batch")
            rows = []
            for index, result in enumerate(batch):
                try:
                    outputs = outputs_json(result.outputs)
                except (TypeError, ValueError) as exc:
                    raise StoreError(
                        f"result {index} of the batch (source {result.source!r}, sequence "
                        f"{result.sequence}): outputs are not JSON ({exc}); nothing was stored"
                    ) from exc
                rows.append(
                    (
                        result.source,
                        result.sequence,
                        float(result.captured_at),
                        result.model,
                        result.model_version,
                        outputs,
                        int(result.sync),
                        result.position,
                        result.item_id,
                    )
                )
            conn.executemany(
                "INSERT INTO results (source, sequence, captured_at, model, model_version,"
                " outputs, sync, position, item_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            # One writer inside one transaction: the rows got consecutive ids ending here.
            (last,) = conn.execute("SELECT last_insert_rowid()").fetchone()
            ids = list(range(last - len(batch) + 1, last + 1))
            if queued:
                messages = []
                keys = _new_keys(queued)
                for index, (id_, row) in enumerate(zip(ids, rows, strict=True)):
                    if not batch[index].sync:
                        continue
                    # The result as get() reads it back, so its message is the same either way.
                    record = record_from_row((id_, *row))
                    key = next(keys)
                    if self.key_of is not None:  # a key the caller derives (a cluster item's)
                        key = self.key_of(record.result) or key
                    try:
                        topic, payload = self.encode(record, key)
                        message = OutboxMessage(topic, payload, key)
                    except (TypeError, ValueError) as exc:
                        raise StoreError(
                            f"result {index} of the batch (source {record.result.source!r}, "
                            f"sequence {record.result.sequence}): no outbox message ({exc}); "
                            "nothing was stored"
                        ) from exc
                    messages.append((message.topic, message.payload, message.key, id_))
                conn.executemany(
                    "INSERT INTO outbox (topic, payload, key, result_id) VALUES (?, ?, ?, ?)",
                    messages,
                )
                self._queued(conn, pending, queued)
        return ids

    def queue(self, messages: Iterable[tuple[str, bytes]]) -> list[OutboxMessage]:
        """Queue plain ``(topic, payload)`` messages in the outbox, in one transaction.

        Each gets a fresh idempotency key; the queued messages (with their
        ids and keys) are returned once they are durable. A full outbox is
        handled as in :meth:`add`: ``"reject"`` raises :class:`OutboxFull`
        and queues none, ``"drop-oldest"`` drops the oldest pending ones.

        >>> import pathlib, tempfile
        >>> with ResultStore(pathlib.Path(tempfile.mkdtemp()) / "r.db") as store:
        ...     (m,) = store.queue([("site/telemetry", b'{"cpu":3.5}')])
        ...     store.pending() == [m], m.payload
        (True, b'{"cpu":3.5}')
        """
        # Checked (non-empty topic, bytes) before the transaction; the keys come next.
        batch = [OutboxMessage(topic, payload, "unset") for topic, payload in messages]
        if not batch:
            return []
        keys = _new_keys(len(batch))
        with self._write() as conn:
            pending = self._make_room(conn, len(batch), "batch of messages")
            queued = []
            for message in batch:
                key = next(keys)
                cursor = conn.execute(
                    "INSERT INTO outbox (topic, payload, key) VALUES (?, ?, ?)",
                    (message.topic, message.payload, key),
                )
                assert cursor.lastrowid is not None
                queued.append(OutboxMessage(message.topic, message.payload, key, cursor.lastrowid))
            self._queued(conn, pending, len(batch))
        return queued

    def get(self, id: int) -> Record | None:
        """The result stored under ``id``, or ``None`` (never stored, or removed by retention)."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_RESULT_COLUMNS} FROM results WHERE id = ?", (id,)
            ).fetchone()
        return None if row is None else record_from_row(row)

    def query(
        self, *, source: str | None = None, since: float | None = None, limit: int = 1000
    ) -> list[Record]:
        """Results in id order, optionally of one ``source`` and captured at or after ``since``."""
        if limit < 0:
            raise ConfigError(f"limit must be zero or more, got {limit}")
        where: list[str] = []
        params: list[Any] = []
        if source is not None:
            where.append("source = ?")
            params.append(source)
        if since is not None:
            where.append("captured_at >= ?")
            params.append(since)
        sql = f"SELECT {_RESULT_COLUMNS} FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id LIMIT ?", (*params, limit)).fetchall()
        return [record_from_row(row) for row in rows]

    def count(self) -> int:
        """How many results the store holds."""
        with self._read() as conn:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])

    # -- late labels -------------------------------------------------------------------

    def results_by_item(self, item_ids: Iterable[str]) -> dict[str, Record]:
        """The newest stored result of each item id that has one (an id a rerun reused
        names its latest result)."""
        with self._read() as conn:
            ids = list(_labels.newest_result_ids(conn, item_ids).values())
            rows = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows += conn.execute(
                    f"SELECT {_RESULT_COLUMNS} FROM results WHERE id IN ({marks})", chunk
                ).fetchall()
        records = [record_from_row(row) for row in rows]
        return {str(r.result.item_id): r for r in records}

    def put_labels(self, labels: Iterable[StoredLabel]) -> None:
        """Store labels in one transaction: the newest per item id under the id itself.

        A label that joins another result of an id already joined keeps the older
        join as history (``{item_id}@{result_id}``), so an older model version's
        accuracy survives a rerun that reuses ids.

        >>> import pathlib, tempfile
        >>> with ResultStore(pathlib.Path(tempfile.mkdtemp()) / "r.db") as store:
        ...     store.put_labels([StoredLabel("digits#3", "7", 1.0, 1, "1.0", correct=True)])
        ...     store.labels_of(["digits#3", "digits#4"])["digits#3"].correct
        True
        """
        batch = list(labels)
        if batch:
            with self._write() as conn:
                _labels.put_labels(conn, batch)

    def labels_of(self, item_ids: Iterable[str]) -> dict[str, StoredLabel]:
        """The stored labels of those item ids that have one."""
        with self._read() as conn:
            return _labels.labels_of(conn, item_ids)

    def accuracy(
        self, windows: Sequence[int] = (100, 1000), *, model_version: str | None = None
    ) -> list[LiveAccuracy]:
        """Accuracy (or mean absolute error) per model version over its last ``window``
        joined labels, for each of ``windows``, versions in name order.

        >>> import pathlib, tempfile
        >>> with ResultStore(pathlib.Path(tempfile.mkdtemp()) / "r.db") as store:
        ...     store.put_labels([
        ...         StoredLabel(f"i{n}", "1", float(n), n, "2.0", correct=n % 4 != 0) for n in range(8)
        ...     ])
        ...     [(a.window, a.labelled, a.accuracy) for a in store.accuracy((4, 100))]
        [(4, 4, 0.75), (100, 8, 0.75)]
        """
        if any(window < 1 for window in windows):
            raise ConfigError(f"windows are at least 1 label, got {list(windows)}")
        with self._read() as conn:
            return _labels.live_accuracy(conn, windows, model_version)

    def label_counts(self) -> tuple[int, int]:
        """How many stored labels are joined to a result, and how many are not."""
        with self._read() as conn:
            joined, total = conn.execute("SELECT count(result_id), count(*) FROM labels").fetchone()
        return int(joined), int(total - joined)

    def apply_retention(self, now: float | None = None) -> int:
        """Delete results older than ``max_age_s``, beyond ``max_rows`` and over ``max_bytes``;
        return how many.

        Labels go with them: by age (``received_at``), and under ``max_rows`` a joined
        label whose result is gone and whose item has no capture left.

        Age is ``now - captured_at`` (``now`` defaults to ``time.time()``);
        beyond ``max_rows`` the lowest ids (the first stored) go first. A result
        whose outbox message is still pending is never deleted, so the store
        may hold more than ``max_rows`` while the device is offline.
        """
        keep = self.retention
        now = time.time() if now is None else now
        deletable = "NOT EXISTS (SELECT 1 FROM outbox o WHERE o.result_id = results.id)"
        deleted = 0
        with self._write() as conn:
            if keep.max_age_s is not None:
                deleted += conn.execute(
                    f"DELETE FROM results WHERE captured_at < ? AND {deletable}",
                    (now - keep.max_age_s,),
                ).rowcount
                # Labels age with the results they label (not counted: they are not results).
                conn.execute("DELETE FROM labels WHERE received_at < ?", (now - keep.max_age_s,))
            if keep.max_rows is not None:
                excess = conn.execute("SELECT count(*) FROM results").fetchone()[0] - keep.max_rows
                if excess > 0:
                    deleted += conn.execute(
                        "DELETE FROM results WHERE id IN (SELECT id FROM results"
                        f" WHERE {deletable} ORDER BY id LIMIT ?)",
                        (excess,),
                    ).rowcount
            retain_captures(conn, keep.max_age_s, keep.max_rows, now)  # not counted in `deleted`
            if keep.max_rows is not None:
                # Joined labels go once their result is gone and no capture of the item is left.
                conn.execute(
                    "DELETE FROM labels WHERE result_id IS NOT NULL"
                    " AND NOT EXISTS (SELECT 1 FROM results r WHERE r.id = labels.result_id)"
                    " AND NOT EXISTS (SELECT 1 FROM captures c WHERE c.item_id = labels.item_id)"
                )
            if keep.max_bytes is not None:  # last: what age and rows left may be enough
                deleted += retain_by_size(conn, keep.max_bytes)
        if keep.max_bytes is not None:
            with self._read() as conn:
                shrink(conn, keep.max_bytes)
        return deleted

    def retention_stats(self) -> RetentionStats:
        """What retention by size removed so far, and the bytes the store takes now."""
        with self._read() as conn:
            return retention_stats(conn)

    # -- outbox --------------------------------------------------------------------

    def pending(self, limit: int = 100) -> list[OutboxMessage]:
        """The first ``limit`` pending outbox messages, in delivery (id) order."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT topic, payload, key, id, attempts FROM outbox ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            OutboxMessage(topic, bytes(payload), key, id_, attempts)
            for topic, payload, key, id_, attempts in rows
        ]

    def mark_delivered(self, ids: Sequence[int]) -> int:
        """Remove delivered messages from the outbox and count them; return how many were pending.

        An id that is no longer pending (dropped meanwhile) is not counted
        twice: it stays counted as dropped.
        """
        if not ids:
            return 0
        with self._write() as conn:
            done = conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids]).rowcount
            _bump(conn, "delivered", done)
        return done

    def record_failure(self, id: int, error: str) -> int:
        """Count a failed delivery of message ``id``; return its attempts so far (0 if gone)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:1000], id),
            )
            row = conn.execute("SELECT attempts FROM outbox WHERE id = ?", (id,)).fetchone()
        return 0 if row is None else int(row[0])

    def dropped(self) -> int:
        """How many outbox messages were dropped (policy ``"drop-oldest"``) since creation."""
        return self.stats().dropped

    def stats(self) -> OutboxStats:
        """Outbox counters, and the pending messages counted afresh from the table."""
        with self._read() as conn:
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
            pending = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        return OutboxStats(
            produced=counters["produced"],
            delivered=counters["delivered"],
            pending=pending,
            dropped=counters["dropped"],
        )

    def _make_room(self, conn: sqlite3.Connection, adding: int, what: str) -> int:
        """The pending count; raises :class:`OutboxFull` if ``adding`` overflows under ``reject``."""
        pending = self._pending_count(conn)
        if self.outbox_policy == "reject" and adding and pending + adding > self.outbox_limit:
            raise OutboxFull(
                f"{self.path}: the outbox holds {pending} of {self.outbox_limit} messages; "
                f"this {what} would add {adding} (policy reject: nothing of it was stored)"
            )
        return pending

    def _queued(self, conn: sqlite3.Connection, pending: int, queued: int) -> None:
        """Count ``queued`` new messages; with drop-oldest, drop what overflows the limit."""
        _bump(conn, "produced", queued)
        overflow = pending + queued - self.outbox_limit
        if overflow > 0:  # only reachable with drop-oldest
            dropped = conn.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (overflow,),
            ).rowcount
            _bump(conn, "dropped", dropped)

    @staticmethod
    def _pending_count(conn: sqlite3.Connection) -> int:
        # From the counters, O(1); stats() recounts the table, and the tests check they agree.
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return int(counters["produced"] - counters["delivered"] - counters["dropped"])


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    conn.execute("UPDATE counters SET value = value + ? WHERE name = ?", (by, name))


def _new_keys(n: int) -> Iterator[str]:
    """``n`` random idempotency keys (uuid4), from one read of the OS's entropy."""
    entropy = os.urandom(16 * n)
    return (str(uuid.UUID(bytes=entropy[16 * i : 16 * i + 16], version=4)) for i in range(n))
