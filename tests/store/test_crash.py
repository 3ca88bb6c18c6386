"""Reliability: SIGKILL a writer at arbitrary points; every acknowledged result survives.

A real child process (``crash_writer.py``) adds results to a real SQLite
file and prints each id after ``add`` returns, while a sender thread delivers
the outbox to a JSON-lines receiver. The test kills it with SIGKILL after a
number of acknowledged ids, reopens the store, and checks what was promised —
for a plain store and for one encrypted with a device key (SQLCipher).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fogline.security import DeviceKey
from fogline.store import (
    JsonlTransport,
    OutboxSender,
    ResultStore,
    open_connection,
    read_deduplicated,
)

WRITER = Path(__file__).with_name("crash_writer.py")


def run_and_kill(
    db: Path, sent: Path, seed: int, after: int, key: DeviceKey | None
) -> dict[int, bool]:
    """Start the writer, SIGKILL it once ``after`` ids are acknowledged; return every acked id."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), str(sent), str(seed)]
        + ([] if key is None else [key.hex()]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    acked: dict[int, bool] = {}
    try:
        for line in proc.stdout:
            id_, sync = line.split()
            acked[int(id_)] = sync == "1"
            if len(acked) >= after:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, errors = proc.communicate(timeout=30)
    for line in rest.splitlines():  # printed before the kill: acknowledged too
        if line.strip():
            id_, sync = line.split()
            acked[int(id_)] = sync == "1"
    assert proc.returncode == -signal.SIGKILL, errors
    assert len(acked) >= after, f"writer stopped early: {errors}"
    return acked


@pytest.mark.slow
@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_acknowledged_results_survive_sigkill(tmp_path: Path, encrypted: bool) -> None:
    # Prepare
    db, sent = tmp_path / "results.db", tmp_path / "sent.jsonl"
    key = DeviceKey.generate() if encrypted else None
    acked: dict[int, bool] = {}

    for seed, after in enumerate((50, 200, 500)):
        # Execute: run the writer (on the same files each time) and kill it
        acked |= run_and_kill(db, sent, seed, after, key)

        # Assert: every acknowledged id is there, and the file is sound
        conn = open_connection(db, key=key)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            present = {row[0] for row in conn.execute("SELECT id FROM results")}
        finally:
            conn.close()
        assert set(acked) <= present
        assert (db.read_bytes()[:15] == b"SQLite format 3") != encrypted

    # Execute: a new sender delivers what is still pending
    with ResultStore(db, key=key) as store, JsonlTransport(sent) as transport:
        sender = OutboxSender(store, transport, batch=1000)
        while sender.deliver_once():
            pass
        stats = store.stats()
        synced = {r.id for r in store.query(limit=1_000_000) if r.result.sync}

    # Assert: exactly one effect per produced message at the receiver
    received = read_deduplicated(sent)
    result_ids = [m["result_id"] for m in received]
    assert stats.pending == 0 and stats.dropped == 0
    assert stats.produced == stats.delivered == len(received)
    assert len(set(result_ids)) == len(result_ids)
    assert set(result_ids) == synced
    assert {i for i, sync in acked.items() if sync} <= synced
