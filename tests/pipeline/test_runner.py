"""Running pipelines end to end: real sources, the real digits model on ONNX Runtime, real SQLite.

Every run is checked against the books: each item a source produced ends in
exactly one outcome (processed, held, dropped, expired, failed, errors).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fogline.examples import digits_model_path
from fogline.pipeline import Pipeline, Snapshot, load_spec, plan
from fogline.store import read_deduplicated
from support.digits_pipeline import digits_spec, write_spec

SETTLED = ("processed", "held", "dropped", "expired", "failed", "errors")


def run(folder: Path, spec: dict[str, Any], **kwargs: Any) -> tuple[Snapshot, Pipeline]:
    checked = plan(load_spec(write_spec(folder, spec)))
    pipeline = Pipeline(checked)
    try:
        snapshot = pipeline.run(**kwargs)
    finally:
        pipeline.close()
        checked.model.engine.close()
    return snapshot, pipeline


def assert_books_balance(snapshot: Snapshot) -> None:
    for source, per in snapshot.counts.items():
        settled = sum(per.get(outcome, 0) for outcome in SETTLED)
        assert per.get("produced", 0) == settled, (source, per)


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_the_digits_replay_is_stored_in_full_with_its_accuracy(tmp_path: Path):
    snapshot, _ = run(tmp_path, digits_spec())

    assert snapshot.total("produced") == snapshot.total("processed") == 597
    assert_books_balance(snapshot)
    assert snapshot.accuracy is not None
    correct, labelled = snapshot.accuracy
    assert labelled == 597 and correct / labelled > 0.97
    stored = rows(tmp_path / "results.db", "SELECT source, sequence, model, outputs FROM results")
    assert len(stored) == 597
    assert sorted(seq for _, seq, _, _ in stored) == list(range(597))
    first = json.loads(stored[0][3])
    assert {"label", "score", "top_k", "confident"} <= first.keys()
    assert {"end_to_end", "inference", "store"} <= snapshot.stages.keys()


def test_rules_send_only_matching_results_to_their_sinks(tmp_path: Path):
    spec = digits_spec(
        rules=[{"name": "unsure", "when": "not confident", "then": ["review"]}],
        sinks=[
            {"type": "jsonl", "name": "review", "path": "review.jsonl"},
            {"type": "jsonl", "name": "sevens", "path": "sevens.jsonl", "when": 'label == "7"'},
            {"type": "jsonl", "name": "all", "path": "all.jsonl"},
        ],
    )
    snapshot, _ = run(tmp_path, spec)

    review = [json.loads(line) for line in (tmp_path / "review.jsonl").read_text().splitlines()]
    sevens = [json.loads(line) for line in (tmp_path / "sevens.jsonl").read_text().splitlines()]
    everything = (tmp_path / "all.jsonl").read_text().splitlines()
    assert len(everything) == 597
    assert review and all(not r["outputs"]["confident"] for r in review)
    assert all(r["outputs"]["rules"] == ["unsure"] for r in review)
    unsure = sum(1 for line in everything if not json.loads(line)["outputs"]["confident"])
    assert len(review) == unsure
    assert sevens and all(r["outputs"]["label"] == "7" for r in sevens)
    assert snapshot.sinks["review"]["written"] == len(review)


def test_the_outbox_delivers_every_synced_result_once_per_key(tmp_path: Path):
    spec = digits_spec(
        store={"path": "results.db", "sync": "not confident"},
        outbox={"transport": {"type": "jsonl", "path": "outbox.jsonl"}},
    )
    snapshot, _ = run(tmp_path, spec)

    synced = rows(tmp_path / "results.db", "SELECT id FROM results WHERE sync = 1")
    delivered = read_deduplicated(tmp_path / "outbox.jsonl")
    assert synced and len(delivered) == len(synced)
    assert sorted(m["result_id"] for m in delivered) == sorted(i for (i,) in synced)
    assert all(not m["result"]["outputs"]["confident"] for m in delivered)
    assert_books_balance(snapshot)


def test_malformed_rows_are_counted_logged_with_their_position_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    pixels = np.arange(64, dtype=np.float32) % 16
    good = ",".join(f"{v:g}" for v in pixels)
    lines = [",".join(f"p{i}" for i in range(64))]
    lines += [good, good, "1,2,oops" + ",0" * 61, good, ",".join(["1"] * 63)]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    spec = digits_spec(
        sources=[{"type": "csv", "name": "log", "path": "rows.csv", "speed": 0}],
        preprocess=[{"type": "reshape", "shape": [1, 8, 8]}],
    )
    with caplog.at_level(logging.WARNING, logger="fogline.pipeline"):
        snapshot, _ = run(tmp_path, spec)

    per = snapshot.counts["log"]
    assert per["produced"] == per["processed"] == 3
    assert per["corrupt"] == 2
    assert "rows.csv:4" in caplog.text and "rows.csv:6" in caplog.text


def test_a_window_holds_rows_and_the_books_still_balance(tmp_path: Path):
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "sensor", "shape": [8], "count": 100}],
        preprocess=[
            {"type": "window", "size": 8, "hop": 4},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
    )
    snapshot, _ = run(tmp_path, spec)

    per = snapshot.counts["sensor"]
    windows = (100 - 8) // 4 + 1
    assert per["produced"] == 100
    assert per["processed"] == windows
    assert per["held"] == 100 - windows
    assert_books_balance(snapshot)


def test_a_live_source_faster_than_the_model_drops_its_oldest_and_counts_every_drop(
    tmp_path: Path,
):
    # A source with no pacing and a tiny drop-oldest share of the queue, into a batch of 1
    spec = digits_spec(
        sources=[
            {
                "type": "synthetic",
                "name": "cam",
                "shape": [1, 8, 8],
                "count": 3000,
                "policy": "drop-oldest",
                "queue": 2,
            }
        ],
        model={"path": str(digits_model_path()), "max_batch": 1, "max_wait_ms": 0},
    )
    snapshot, _ = run(tmp_path, spec)

    per = snapshot.counts["cam"]
    assert per["produced"] == 3000
    assert per["dropped"] > 0
    assert per["processed"] + per["dropped"] == 3000
    assert rows(tmp_path / "results.db", "SELECT COUNT(*) FROM results") == [(per["processed"],)]


def test_items_past_their_deadline_are_counted_as_expired(tmp_path: Path):
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "s", "shape": [1, 8, 8], "count": 2000}],
        model={
            "path": str(digits_model_path()),
            "max_batch": 4,
            "max_wait_ms": 0,
            "queue_size": 512,
            "deadline_ms": 0.001,
        },
    )
    snapshot, _ = run(tmp_path, spec)

    per = snapshot.counts["s"]
    assert per["expired"] > 0
    assert per.get("processed", 0) + per["expired"] == 2000


def test_stop_drains_what_was_read_and_stores_it(tmp_path: Path):
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "s", "shape": [1, 8, 8], "rate": 500}],
    )
    checked = plan(load_spec(write_spec(tmp_path, spec)))
    pipeline = Pipeline(checked)
    timer = threading.Timer(1.0, pipeline.stop)
    timer.start()
    started = time.monotonic()
    snapshot = pipeline.run()
    took = time.monotonic() - started
    stored = pipeline.store.count() if pipeline.store else -1
    pipeline.close()
    checked.model.engine.close()

    assert took < 10
    assert snapshot.total("produced") > 100
    assert snapshot.total("processed") == snapshot.total("produced") == stored
    assert_books_balance(snapshot)


def test_duration_and_max_items_stop_the_sources(tmp_path: Path):
    spec = digits_spec(sources=[{"type": "synthetic", "name": "s", "shape": [1, 8, 8]}])
    snapshot, _ = run(tmp_path, spec, max_items=250)
    assert snapshot.total("produced") == snapshot.total("processed") == 250

    started = time.monotonic()
    snapshot, _ = run(
        tmp_path / "again" if (tmp_path / "again").mkdir() is None else tmp_path,
        digits_spec(sources=[{"type": "synthetic", "shape": [1, 8, 8], "rate": 100}]),
        duration=0.5,
    )
    assert time.monotonic() - started < 10
    assert 0 < snapshot.total("processed") == snapshot.total("produced")


def test_prometheus_reads_the_same_numbers(tmp_path: Path):
    _, pipeline = run(tmp_path, digits_spec())
    registry = CollectorRegistry()
    registry.register(pipeline.metrics.prometheus_collector("digits"))

    text = generate_latest(registry).decode()

    assert (
        'fogline_pipeline_items_total{outcome="processed",pipeline="digits",source="digits"} 597.0'
        in text
    )
    assert (
        'fogline_pipeline_stage_seconds_count{pipeline="digits",stage="end_to_end"} 597.0' in text
    )
    assert "fogline_pipeline_queue_depth" in text


def test_the_bundled_digits_pipeline_checks_and_runs(tmp_path: Path):
    import yaml

    from fogline.examples import digits_model_path
    from fogline.pipeline import parse_spec

    repo_copy = Path(__file__).parents[2] / "examples" / "digits" / "pipeline.yaml"
    as_shipped = plan(load_spec(repo_copy))
    as_shipped.model.engine.close()
    assert as_shipped.model.name == "digits"
    spec = yaml.safe_load((digits_model_path().parent / "pipeline.yaml").read_text())
    spec["model"]["path"] = str(digits_model_path().parent)
    checked = plan(parse_spec(spec, base=tmp_path))
    pipeline = Pipeline(checked)
    snapshot = pipeline.run(max_items=300)
    pipeline.close()
    checked.model.engine.close()

    assert snapshot.total("processed") == 300
    assert snapshot.accuracy is not None and snapshot.accuracy[0] / 300 > 0.97
    assert (tmp_path / "results.db").exists()
    delivered = read_deduplicated(tmp_path / "outbox.jsonl")
    assert len(delivered) == 300


def test_several_sources_feed_one_model_each_at_its_own_rate(tmp_path: Path):
    spec = digits_spec(
        sources=[
            {"type": "dataset", "name": "replay", "function": "fogline.examples:digits_eval"},
            {"type": "synthetic", "name": "slow", "shape": [1, 8, 8], "count": 20, "rate": 100},
        ]
    )
    snapshot, _ = run(tmp_path, spec)

    assert snapshot.counts["replay"]["processed"] == 597
    assert snapshot.counts["slow"]["processed"] == 20
    assert_books_balance(snapshot)
    sources = rows(tmp_path / "results.db", "SELECT source, COUNT(*) FROM results GROUP BY source")
    assert dict(sources) == {"replay": 597, "slow": 20}


def test_stdout_and_shell_sinks_act_on_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    marker = tmp_path / "sevens"
    marker.mkdir()
    spec = digits_spec(
        rules=[{"name": "seven", "when": 'label == "7" and score > 0.9', "then": ["touch", "say"]}],
        sinks=[
            {"type": "shell", "name": "touch", "command": ["touch", str(marker) + "/{sequence}"]},
            {
                "type": "stdout",
                "name": "say",
                "format": "seven at {source}#{sequence} ({score:.2f})",
            },
        ],
    )
    snapshot, _ = run(tmp_path, spec)

    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("seven at")]
    touched = sorted(int(p.name) for p in marker.iterdir())
    sevens = rows(
        tmp_path / "results.db",
        "SELECT sequence FROM results WHERE json_extract(outputs, '$.label') = '7' "
        "AND json_extract(outputs, '$.score') > 0.9 ORDER BY sequence",
    )
    assert touched == [seq for (seq,) in sevens] and touched
    assert len(said) == len(touched)
    assert snapshot.sinks["touch"]["written"] == len(touched)


def test_a_failing_action_is_counted_and_logged_and_the_pipeline_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    spec = digits_spec(sinks=[{"type": "shell", "name": "broken", "command": ["false"]}])
    with caplog.at_level(logging.WARNING, logger="fogline.pipeline"):
        snapshot, _ = run(tmp_path, spec)

    assert snapshot.total("processed") == 597
    assert snapshot.sinks["broken"]["failed"] == 597
    assert "sink broken" in caplog.text and "exited with 1" in caplog.text
