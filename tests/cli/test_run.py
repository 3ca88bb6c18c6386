"""``fogline check`` and ``fogline run`` as a user runs them: a real process, real signals."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from support.digits_pipeline import digits_spec, write_spec

ENV = {**os.environ, "COLUMNS": "200"}


def fogline(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=300,
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fogline", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=ENV,
    )


def stored(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.OperationalError:  # created but no schema yet
        return 0


def wait_for(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_check_says_ready_for_a_good_file(tmp_path: Path):
    path = write_spec(tmp_path, digits_spec())
    done = fogline("check", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "is ready to run" in done.stdout
    assert "(1, 8, 8) float32" in done.stdout


def test_check_names_the_bad_key_and_exits_2_without_a_traceback(tmp_path: Path):
    spec = digits_spec(preprocess=[{"type": "resize", "size": "224"}])
    done = fogline("check", str(write_spec(tmp_path, spec)), cwd=tmp_path)
    assert done.returncode == 2
    assert "error:" in done.stderr
    assert "preprocess[0].size: expected two integers" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_run_prints_a_summary_with_throughput_latency_and_accuracy(tmp_path: Path):
    path = write_spec(tmp_path, digits_spec())
    done = fogline("run", str(path), "--max-items", "200", "--no-live", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"processed 200 items in [\d.]+ s: [\d,]+ items/s, end-to-end p50", done.stdout
    )
    assert re.search(r"accuracy \d+\.\d+% \(\d+ of 200 labelled items\)", done.stdout)
    assert stored(tmp_path / "results.db") == 200


def test_run_provider_asks_for_it_and_a_missing_one_is_one_line_and_exit_2(tmp_path: Path):
    path = write_spec(tmp_path, digits_spec())
    done = fogline(
        "run", str(path), "--max-items", "20", "--no-live", "--provider", "cpu", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    missing = fogline(
        "run", str(path), "--max-items", "20", "--no-live", "--provider", "migraphx", cwd=tmp_path
    )
    assert missing.returncode == 2
    assert "migraphx are not available in this onnxruntime build" in missing.stderr
    assert "Traceback" not in missing.stderr + missing.stdout


def test_sigterm_drains_stores_what_was_read_and_prints_the_summary(tmp_path: Path):
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "s", "shape": [1, 8, 8], "rate": 300}]
    )
    process = start("run", str(write_spec(tmp_path, spec)), "--no-live", cwd=tmp_path)
    wait_for(lambda: stored(tmp_path / "results.db") >= 50)

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 0, err
    assert "SIGTERM: draining" in err
    match = re.search(r"processed ([\d,]+) items", out)
    assert match, out
    processed = int(match.group(1).replace(",", ""))
    assert processed >= 50
    assert stored(tmp_path / "results.db") == processed
    assert "Traceback" not in err


def test_metrics_port_serves_prometheus_while_running(tmp_path: Path):
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "s", "shape": [1, 8, 8], "rate": 200}]
    )
    process = start(
        "run", str(write_spec(tmp_path, spec)), "--no-live", "--metrics-port", "0", cwd=tmp_path
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        match = re.search(r"metrics: (http://127\.0\.0\.1:\d+/metrics)", line)
        assert match, line
        wait_for(lambda: stored(tmp_path / "results.db") >= 20)
        text = httpx.get(match.group(1), timeout=10).text
        assert (
            'fogline_pipeline_items_total{outcome="produced",pipeline="digits",source="s"}' in text
        )
        assert "fogline_pipeline_stage_seconds_bucket" in text
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 0


def test_a_metrics_port_in_use_is_a_clear_error(tmp_path: Path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_spec(tmp_path, digits_spec())
        done = fogline("run", str(path), "--metrics-port", str(port), "--no-live", cwd=tmp_path)
    assert done.returncode == 2
    assert f"--metrics-port {port}: cannot listen" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_source_that_cannot_start_is_an_error_exit_after_the_summary(tmp_path: Path):
    spec = digits_spec(
        sources=[{"type": "video", "name": "cam", "device": 97}],
        preprocess=[
            {"type": "colour", "to": "gray"},
            {"type": "resize", "size": [8, 8]},
            {"type": "normalize", "scale": 0.0625},
            {"type": "layout", "to": "chw"},
        ],
    )
    done = fogline("run", str(write_spec(tmp_path, spec)), "--no-live", cwd=tmp_path)
    assert done.returncode == 2
    assert "error: source cam stopped: cannot open camera 97" in done.stderr
    assert "source(s) cam stopped on an error" in done.stderr
    assert "books: 0 produced" in done.stdout
    assert "Traceback" not in done.stderr
