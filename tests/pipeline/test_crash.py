"""kill -9 in the middle of a run, then restart: nothing acknowledged is lost, nothing doubles.

A real ``fogline run`` process stores results (every one marked for sync)
while its outbox delivers them to a JSON lines receiver. The test kills it
with SIGKILL at several points; after each kill the store must hold every
result that was visible (committed) before the kill and pass
``PRAGMA integrity_check``. A restart then drains the outbox: the receiver,
deduplicating on the idempotency key, ends with exactly one message per
stored result.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from fogline.store import read_deduplicated
from support.digits_pipeline import digits_spec, write_spec


def committed(db: Path) -> set[int]:
    if not db.exists():
        return set()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM results")}
    except sqlite3.OperationalError:
        return set()


def test_kill_9_mid_run_loses_no_acknowledged_result_and_the_outbox_delivers_each_once(
    tmp_path: Path,
):
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "cam", "shape": [1, 8, 8], "rate": 1500}],
        store={"path": "results.db", "sync": True},
        outbox={"transport": {"type": "jsonl", "path": "received.jsonl"}, "retry_initial_s": 0.05},
    )
    path = write_spec(tmp_path, spec)
    db = tmp_path / "results.db"
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "fogline", "run", str(path), "--no-live"]

    for kill_after in (50, 400, 1500):
        # Execute: run until at least kill_after more results are committed, then SIGKILL
        before = len(committed(db))
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while len(committed(db)) < before + kill_after:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the pipeline stored too slowly"
            time.sleep(0.01)
        acknowledged = committed(db)
        process.send_signal(signal.SIGKILL)
        process.wait(30)

        # Assert: every result seen committed is still there, and the file is sound
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            kept = {row[0] for row in conn.execute("SELECT id FROM results")}
        assert acknowledged <= kept

    # A restart that reads nothing new drains what the outbox still holds
    drain = subprocess.run(
        [*command, "--duration", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert drain.returncode == 0, drain.stderr
    with sqlite3.connect(db) as conn:
        stored_ids = {row[0] for row in conn.execute("SELECT id FROM results")}
        pending = conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    delivered = read_deduplicated(tmp_path / "received.jsonl")
    ids = [message["result_id"] for message in delivered]
    assert pending == 0
    assert len(ids) == len(set(ids)), "two keys for one result"
    assert set(ids) == stored_ids
    raw_lines = (tmp_path / "received.jsonl").read_text().count("\n")
    assert raw_lines >= len(ids)  # redeliveries after a kill are allowed; the keys dedupe them
