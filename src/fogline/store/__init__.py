"""The device's durable results store and outbox: one SQLite file in WAL mode, stdlib only.

With a device key (``ResultStore(path, key=...)``, ``open_database(..., key=...)``)
the file is encrypted at rest through SQLCipher (the ``secure`` extra);
:func:`rekey` encrypts, re-keys or decrypts a file in place, atomically.

A result is durable before :meth:`ResultStore.add` returns; the ``sync`` ones
are queued in the outbox in the same transaction, as plain
:class:`OutboxMessage` values (topic, payload bytes, idempotency key), and
delivered at least once by an :class:`OutboxSender` over an
:class:`OutboxTransport`; receivers dedupe on the key. Messages that are not
results (the agent's telemetry) go in with :meth:`ResultStore.queue`.

>>> import pathlib, tempfile
>>> from fogline.store import JsonlTransport, OutboxSender, Result, ResultStore, read_deduplicated
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> with ResultStore(folder / "results.db") as store:
...     ids = store.add([Result("cam0", 0, 1.0, "digits", "3", {"label": 4}, sync=True)])
...     with JsonlTransport(folder / "sent.jsonl") as transport:
...         OutboxSender(store, transport).deliver_once()
1
>>> [m["result"]["outputs"] for m in read_deduplicated(folder / "sent.jsonl")]
[{'label': 4}]
"""

from fogline.store._captures import Capture, CaptureRecord
from fogline.store._database import open_database
from fogline.store._driver import connect as open_connection
from fogline.store._driver import database_errors, is_encrypted
from fogline.store._erase import Erased, erase
from fogline.store._export import Export, export_captures
from fogline.store._jsonl import JsonlTransport, read_deduplicated
from fogline.store._labels import LiveAccuracy, StoredLabel
from fogline.store._outbox import OutboxSender, OutboxTransport
from fogline.store._rekey import Rekeyed, rekey
from fogline.store._result import (
    OutboxMessage,
    Record,
    Result,
    ResultEncoder,
    envelope,
    outbox_topic,
    result_message,
)
from fogline.store._schema import SCHEMA_VERSION
from fogline.store._size import RetentionStats
from fogline.store._store import (
    OUTBOX_POLICIES,
    OutboxPolicy,
    OutboxStats,
    ResultStore,
    Retention,
)
from fogline.store._where import compile_where, erase_digest, where_shape

__all__ = [
    "OUTBOX_POLICIES",
    "SCHEMA_VERSION",
    "Capture",
    "CaptureRecord",
    "Erased",
    "Export",
    "JsonlTransport",
    "LiveAccuracy",
    "OutboxMessage",
    "OutboxPolicy",
    "OutboxSender",
    "OutboxStats",
    "OutboxTransport",
    "Record",
    "Rekeyed",
    "Result",
    "ResultEncoder",
    "ResultStore",
    "Retention",
    "RetentionStats",
    "StoredLabel",
    "compile_where",
    "database_errors",
    "envelope",
    "erase",
    "erase_digest",
    "export_captures",
    "is_encrypted",
    "open_connection",
    "open_database",
    "outbox_topic",
    "read_deduplicated",
    "rekey",
    "result_message",
    "where_shape",
]
