"""The audit log: what one event costs, and how fast a long log is verified.

- ``record()``: µs per event with its fsync (the default: an event is on disk
  when ``record`` returns), and with ``fsync=False``; beside two anchors that
  write the same bytes: a plain ``open(O_APPEND) + write + fsync`` of the
  line, and one row appended to SQLite (WAL, ``synchronous=FULL``, one commit
  per row: what the results store pays).
- ``verify_log()``: events a second over a log of 100,000 events (10,000 with
  ``--quick``) with a signed checkpoint every 1,000, beside the anchor of
  reading the file and hashing each line (SHA-256) with nothing else.

Runs in a temporary folder on this machine's disk; fsync cost is the disk's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from fogline.security import AuditLog, AuditSigner, verify_log

FIELDS = {"release": "digits", "version": "1.4.2", "previous": "1.4.1"}


def _per_event(write: object, n: int) -> float:
    """Median of 3 runs of ``n`` calls, µs per call."""
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        for i in range(n):
            write(i)  # type: ignore[operator]
        runs.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(runs)


def _line(i: int) -> bytes:
    entry = {"event": "release.installed", "fields": FIELDS, "seq": i, "hash": "0" * 64}
    return (json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _record_costs(folder: Path, n: int) -> list[str]:
    synced = AuditLog(folder / "synced.jsonl")
    loose = AuditLog(folder / "loose.jsonl", fsync=False)
    record_us = _per_event(lambda i: synced.record("release.installed", **FIELDS), n)
    loose_us = _per_event(lambda i: loose.record("release.installed", **FIELDS), n)

    plain = folder / "plain.jsonl"

    def append(i: int) -> None:
        fd = os.open(plain, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, _line(i))
            os.fsync(fd)
        finally:
            os.close(fd)

    plain_us = _per_event(append, n)
    conn = sqlite3.connect(folder / "rows.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE events (seq INTEGER, line BLOB)")
    sqlite_us = _per_event(
        lambda i: conn.execute("INSERT INTO events VALUES (?, ?)", (i, _line(i))), n
    )
    conn.close()
    print(f"   record(): {record_us:.0f} µs with fsync, {loose_us:.0f} µs without ({n} events x3)")
    print(f"   anchors: write+fsync {plain_us:.0f} µs, SQLite row (WAL, FULL) {sqlite_us:.0f} µs")
    return [
        f"audit record(): {record_us:.0f} µs/event with fsync "
        f"(anchor: write+fsync of the line {plain_us:.0f} µs, a SQLite row {sqlite_us:.0f} µs)",
        f"audit record(fsync=False): {loose_us:.1f} µs/event (the lock, the tail read, the hash)",
    ]


def _verify_costs(folder: Path, events: int) -> list[str]:
    path = folder / "long.jsonl"
    log = AuditLog(
        path, signer=AuditSigner(folder / "long.key"), checkpoint_every=1000, fsync=False
    )
    started = time.perf_counter()
    for i in range(events):
        log.record("release.installed", release="digits", version=f"1.{i}", n=i)
    written = time.perf_counter() - started
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        report = verify_log(path)
        runs.append(time.perf_counter() - started)
        assert report.intact and report.events == events, report.damages[:3]
    seconds = statistics.median(runs)
    runs = []
    for _ in range(3):
        started = time.perf_counter()
        with open(path, "rb") as fh:
            for raw in fh:
                hashlib.sha256(raw).hexdigest()
        runs.append(time.perf_counter() - started)
    anchor = statistics.median(runs)
    lines = report.lines
    size = path.stat().st_size / 1e6
    print(
        f"   {events:,} events + {report.checkpoints} checkpoints ({size:.1f} MB) written "
        f"in {written:.1f} s; verified in {seconds:.2f} s; read+sha256 of each line {anchor:.2f} s"
    )
    return [
        f"audit verify: {lines / seconds:,.0f} lines/s over {lines:,} lines "
        f"(anchor: read + SHA-256 of each line {lines / anchor:,.0f} lines/s)"
    ]


def run(quick: bool) -> list[str]:
    print("audit log: record() cost and verify throughput")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines = _record_costs(folder, 200 if quick else 2000)
        lines += _verify_costs(folder, 10_000 if quick else 100_000)
    return lines


if __name__ == "__main__":
    for line in run(quick=True):
        print(line)
