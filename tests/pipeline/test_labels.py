"""Item ids and late labels in a real pipeline: the digits model in ONNX Runtime, a real store.

Labels arrive after the results are stored, over each kind of source (CSV, stdin in a real
``fogline run`` process, HTTP with a real client, MQTT through the test broker); the live
accuracy they produce is checked against a count made here from the stored results and the
labels sent. Bad labels are counted by outcome, never a crash.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from fogline.cli import main
from fogline.errors import ConfigError
from fogline.examples import digits_split
from fogline.pipeline import LabelJoin, Pipeline, Snapshot, load_spec, plan
from fogline.store import Record, ResultStore
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto
from support.digits_pipeline import digits_spec, write_spec

DATA = "fogline.examples:digits_eval"
N = 60
TRUTH = [str(y) for y in digits_split("eval")[1]]


def item(i: int) -> str:
    return f"{DATA}#{i}"


def sent_labels(n: int = N) -> list[dict[str, str]]:
    """A label per item; every 7th deliberately wrong, so accuracy is not simply the model's."""
    return [
        {"id": item(i), "label": str((int(TRUTH[i]) + 1) % 10) if i % 7 == 0 else TRUTH[i]}
        for i in range(n)
    ]


def expected_correct(store: ResultStore, labels: list[dict[str, str]]) -> int:
    """Counted here, independently of the joiner: stored answer == label sent."""
    answers = {r.result.item_id: r.result.outputs["label"] for r in store.query(limit=10_000)}
    return sum(answers[label["id"]] == label["label"] for label in labels)


def labels_spec(tmp_path: Path, source: dict[str, Any], **labels: Any) -> Path:
    spec = digits_spec(
        sources=[{"type": "dataset", "name": "digits", "function": DATA, "max_items": N}],
        labels={"source": source, "windows": [10, 1000], "wait_s": 60, **labels},
    )
    return write_spec(tmp_path, spec)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Run:
    """A pipeline running on a thread; ``snapshot`` once it has returned."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.snapshot: Snapshot | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.snapshot = self.pipeline.run()

    @property
    def store(self) -> ResultStore:
        assert self.pipeline.store is not None
        return self.pipeline.store

    def stored(self, n: int = N) -> None:
        """Wait until the run has stored ``n`` results and its label source listens."""
        wait_for(lambda: self.pipeline.store is not None and self.store.count() >= n)
        assert self.pipeline.labels is not None
        assert self.pipeline.labels.ready.wait(20)

    def outcomes(self) -> dict[str, int]:
        assert self.pipeline.labels is not None
        return self.pipeline.labels.board().outcomes

    def settled(self, total: int) -> None:
        wait_for(lambda: sum(self.outcomes().values()) >= total)

    def finish(self) -> Snapshot:
        self.pipeline.stop()
        self.thread.join(30)
        assert self.snapshot is not None
        return self.snapshot


@contextmanager
def running(path: Path, hooks: list[Callable[[LabelJoin], None]] | None = None) -> Iterator[Run]:
    checked = plan(load_spec(path))
    run = Run(Pipeline(checked, label_hooks=hooks or []))
    run.thread.start()
    try:
        yield run
    finally:
        run.pipeline.stop()
        run.thread.join(30)
        run.pipeline.close()
        checked.model.engine.close()


def joined_rows(db: Path) -> list[tuple[str, int, int]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT l.item_id, l.result_id, l.correct FROM labels l"
            " JOIN results r ON r.id = l.result_id AND r.item_id = l.item_id ORDER BY l.item_id"
        ).fetchall()


# --- item ids ----------------------------------------------------------------------------------


def test_every_result_names_its_item_by_the_id_the_data_carried_or_one_the_run_made(
    tmp_path: Path,
) -> None:
    # Prepare: a data set (ids name#index), a CSV with an id column, a CSV without one
    rows = ["id,t," + ",".join(f"p{i}" for i in range(64))]
    rows += [f"meter-{n},{n * 0.01},{','.join(['0.5'] * 64)}" for n in range(3)]
    (tmp_path / "with.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "without.csv").write_text(
        "\n".join([",".join(f"p{i}" for i in range(64)), ",".join(["0.1"] * 64)]) + "\n"
    )
    sources = [
        {"type": "dataset", "name": "digits", "function": DATA, "max_items": 3},
        {"type": "csv", "name": "meter", "path": "with.csv", "id_column": "id",
         "time_column": "t", "speed": 0},
        {"type": "csv", "name": "bare", "path": "without.csv"},
    ]  # fmt: skip
    path = write_spec(
        tmp_path, digits_spec(sources=sources, preprocess=[{"type": "reshape", "shape": [1, 8, 8]}])
    )
    checked = plan(load_spec(path))
    pipeline = Pipeline(checked)

    # Execute
    try:
        pipeline.run()
    finally:
        checked.model.engine.close()
    assert pipeline.store is not None
    with pipeline.store as store:
        results = [record.result for record in store.query()]

    # Assert
    ids = {(r.source, r.sequence): r.item_id for r in results}
    assert [ids[("digits", n)] for n in range(3)] == [item(n) for n in range(3)]
    assert [ids[("meter", n)] for n in range(3)] == ["meter-0", "meter-1", "meter-2"]
    assert ids[("bare", 0)] == f"{pipeline.run_id}-bare-0" and len(pipeline.run_id) == 8


# --- late labels over each kind of source ----------------------------------------------------


def test_labels_posted_late_over_http_are_joined_and_bad_bodies_are_refused(
    tmp_path: Path,
) -> None:
    path = labels_spec(tmp_path, {"type": "http", "port": 0})
    labels = sent_labels()
    joins: list[LabelJoin] = []
    with running(path, hooks=[joins.append]) as run:
        run.stored()
        source = run.pipeline.labels.source  # type: ignore[union-attr]
        url = source.url  # type: ignore[attr-defined]

        # Execute: the good labels in two requests (a list, then one by one), then bad ones
        with httpx.Client(timeout=10) as client:
            first = client.post(url, json=labels[:40])
            singles = [client.post(url, json=label) for label in labels[40:]]
            not_json = client.post(url, content=b"{oops")
            no_id = client.post(url, json=[{"label": "3"}])
            wrong_type = client.post(url, json={"id": item(1), "label": {"digit": 3}})
            again = client.post(url, json=labels[0])
            unknown = client.post(url, json={"id": "no-such-item", "label": "3"})
            wrong_path = client.post(url.replace("/labels", "/other"), json=labels[0])
        run.settled(N + 3 + 1)  # N joined, 3 invalid, 1 duplicate; the unknown one waits
        snapshot = run.finish()
        correct = expected_correct(run.store, labels)

    # Assert: the endpoint's answers
    assert first.status_code == 202 and first.json() == {"accepted": 40}
    assert {r.status_code for r in singles} == {202}
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    assert no_id.status_code == 400
    assert no_id.json()["error"] == '[0]: no "id" (the item the label is for)'
    assert wrong_type.status_code == 400
    assert "a class label is a string or an integer, got dict" in wrong_type.json()["error"]
    assert again.status_code == 202 and unknown.status_code == 202
    assert wrong_path.status_code == 404
    # ... the outcomes, the figures against the count made here, the hook, the store
    board = snapshot.extra["labels"]
    assert board.outcomes == {
        "joined": N,
        "unknown": 1,
        "expired": 0,
        "invalid": 3,
        "duplicate": 1,
        "dropped": 0,
    }
    figures = {f.window: f for f in board.live}
    assert figures[1000].count == N and figures[1000].value == pytest.approx(correct / N)
    assert figures[10].count == 10
    assert len(joins) == N and sum(bool(j.correct) for j in joins) == correct
    assert all(isinstance(j.record, Record) and j.record.result.item_id == j.item_id for j in joins)
    assert len(joined_rows(tmp_path / "results.db")) == N


def test_labels_appended_late_to_a_followed_csv_file_are_joined(tmp_path: Path) -> None:
    path = labels_spec(
        tmp_path, {"type": "csv", "path": "labels.csv", "follow": True}, id_field="item"
    )
    labels = sent_labels()
    with running(path) as run:
        run.stored()

        # Execute: the file appears after the results, then grows in two writes, one bad row
        with (tmp_path / "labels.csv").open("w") as file:
            file.write("item,label,who\n")
            for label in labels[:30]:
                file.write(f"{label['id']},{label['label']},ann\n")
        time.sleep(0.3)
        with (tmp_path / "labels.csv").open("a") as file:
            file.write("too,many,fields,here\n")
            for label in labels[30:]:
                file.write(f"{label['id']},{label['label']},bob\n")
        run.settled(N + 1)
        snapshot = run.finish()
        correct = expected_correct(run.store, labels)

    board = snapshot.extra["labels"]
    assert board.outcomes["joined"] == N and board.outcomes["invalid"] == 1
    (live,) = [f for f in board.live if f.window == 1000]
    assert live.value == pytest.approx(correct / N)


def test_labels_published_late_over_mqtt_are_joined(tmp_path: Path, mosquitto: Mosquitto) -> None:
    path = labels_spec(tmp_path, {"type": "mqtt", "url": mosquitto.url, "topic": "labels/#"})
    labels = sent_labels()
    with running(path) as run:
        run.stored()

        # Execute: half as one list message, the rest one message each, and a payload that is not JSON
        with MqttPublisher(mosquitto.url) as publisher:
            publisher.publish(
                MqttMessage(Topic("labels/site1"), json.dumps(labels[:30]).encode(), qos=1)
            )
            publisher.publish(
                *[
                    MqttMessage(Topic("labels/site2"), json.dumps(lb).encode(), qos=1)
                    for lb in labels[30:]
                ]
            )
            publisher.publish(MqttMessage(Topic("labels/site2"), b"\xff not json", qos=1))
        run.settled(N + 1)
        snapshot = run.finish()
        correct = expected_correct(run.store, labels)

    board = snapshot.extra["labels"]
    assert board.outcomes["joined"] == N and board.outcomes["invalid"] == 1
    (live,) = [f for f in board.live if f.window == 1000]
    assert live.value == pytest.approx(correct / N)


def test_labels_on_the_stdin_of_a_real_fogline_run_are_joined_and_read_back(
    tmp_path: Path,
) -> None:
    path = labels_spec(tmp_path, {"type": "stdin"})
    labels = sent_labels()
    command = [sys.executable, "-m", "fogline", "run", str(path), "--no-live"]
    env = {**os.environ, "COLUMNS": "200"}
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    db = tmp_path / "results.db"

    def stored() -> int:
        try:
            with closing(sqlite3.connect(db)) as conn:
                return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
        except sqlite3.Error:
            return 0

    # Execute: labels only once every result is in the store; a bad line; then end of input
    try:
        wait_for(lambda: stored() >= N, timeout=60)
        lines = [json.dumps(label) + "\n" for label in labels]
        lines.append(json.dumps({"id": item(2), "label": True}) + "\n")
        out, err = process.communicate("".join(lines), timeout=60)  # then end of input
    finally:
        process.kill()
    shown = subprocess.run(
        [sys.executable, "-m", "fogline", "accuracy", str(db), "--window", "1000"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    with ResultStore(db) as store:
        correct = expected_correct(store, labels)

    # Assert: the run's summary and the command that reads the store afterwards agree with the count
    assert process.returncode == 0, err
    assert f"labels: {N} joined, 1 invalid" in out
    assert f"live accuracy {correct / N:.2%} over the last {N} of 1000 (v1)" in out
    assert "invalid stdin:61: item" in err and "got bool" in err
    assert shown.returncode == 0, shown.stderr
    assert f"last 1,000 │ {N:>8} │ {correct / N:>8.2%}" in shown.stdout
    assert len(joined_rows(db)) == N


def test_a_regression_task_reads_mean_absolute_error_and_refuses_labels_that_are_not_numbers(
    tmp_path: Path,
) -> None:
    # Prepare: the classifier's score stands in for a regressor's number
    path = labels_spec(tmp_path, {"type": "http", "port": 0}, task="regression", compare="score")
    truths = [0.5 + (i % 5) / 10 for i in range(20)]
    with running(path) as run:
        run.stored()
        url = run.pipeline.labels.source.url  # type: ignore[union-attr, attr-defined]

        # Execute: numbers and numeric text are taken; a word is refused
        good = [{"id": item(i), "label": t if i % 2 else str(t)} for i, t in enumerate(truths)]
        taken = httpx.post(url, json=good, timeout=10)
        refused = httpx.post(url, json={"id": item(30), "label": "warm"}, timeout=10)
        run.settled(len(truths) + 1)
        snapshot = run.finish()
        scores = {r.result.item_id: r.result.outputs["score"] for r in run.store.query()}

    # Assert: the mean absolute error counted here
    mae = sum(abs(scores[item(i)] - t) for i, t in enumerate(truths)) / len(truths)
    assert taken.status_code == 202 and refused.status_code == 400
    assert "a regression label is a number, got 'warm'" in refused.json()["error"]
    board = snapshot.extra["labels"]
    assert board.outcomes["joined"] == 20 and board.outcomes["invalid"] == 1
    assert board.estimate == []  # no estimate from confidence for a regression
    (live,) = [f for f in board.live if f.window == 1000]
    assert (live.metric, live.count) == ("mae", 20) and live.value == pytest.approx(mae)


# --- timing: labels before their result, labels too late ----------------------------------------


def test_a_label_that_comes_before_its_result_waits_for_it(tmp_path: Path) -> None:
    # Prepare: items paced at 100/s, so most labels (all sent at once) come before their result
    spec = digits_spec(
        sources=[
            {"type": "dataset", "name": "digits", "function": DATA, "max_items": N, "rate": 100}
        ],
        labels={"source": {"type": "http", "port": 0}, "wait_s": 60},
    )
    labels = sent_labels()
    with running(write_spec(tmp_path, spec)) as run:
        wait_for(lambda: run.pipeline.labels is not None)
        assert run.pipeline.labels.ready.wait(20)  # type: ignore[union-attr]
        url = run.pipeline.labels.source.url  # type: ignore[union-attr, attr-defined]
        early = run.store.count()

        # Execute: watch how many wait for their result until all are settled
        assert httpx.post(url, json=labels, timeout=10).status_code == 202
        most_held = 0
        while sum(run.outcomes().values()) < N:
            most_held = max(most_held, run.pipeline.labels.board().held)  # type: ignore[union-attr]
            time.sleep(0.01)
        snapshot = run.finish()
        correct = expected_correct(run.store, labels)

    assert early < N / 2 and most_held > 0
    board = snapshot.extra["labels"]
    assert board.outcomes["joined"] == N and board.held == 0
    assert [f.value for f in board.live if f.window == 1000] == [pytest.approx(correct / N)]


def test_labels_later_than_the_retention_are_counted_expired(tmp_path: Path) -> None:
    path = labels_spec(tmp_path, {"type": "http", "port": 0}, retention_s=0.5)
    with running(path) as run:
        run.stored()
        time.sleep(0.6)
        url = run.pipeline.labels.source.url  # type: ignore[union-attr, attr-defined]
        assert httpx.post(url, json=sent_labels(5), timeout=10).status_code == 202
        run.settled(5)
        snapshot = run.finish()

    board = snapshot.extra["labels"]
    assert board.outcomes["expired"] == 5 and board.outcomes["joined"] == 0 and board.live == []


# --- metrics ------------------------------------------------------------------------------------


def test_the_prometheus_endpoint_exports_labels_live_accuracy_and_the_estimate(
    tmp_path: Path,
) -> None:
    # Prepare: labels replayed late from the data set itself; the estimate calibrated on 20
    spec = digits_spec(
        sources=[
            {"type": "dataset", "name": "digits", "function": DATA, "max_items": 100, "rate": 400}
        ],
        labels={
            "source": {"type": "delayed", "function": DATA, "delay_s": 0.1, "rate": 400},
            "windows": [50],
            "wait_s": 30,
            "estimate": {"reference": 20},
        },
    )
    checked = plan(load_spec(write_spec(tmp_path, spec)))
    pipeline = Pipeline(checked)
    registry = CollectorRegistry()
    registry.register(pipeline.metrics.prometheus_collector("digits"))

    # Execute: the delayed source has labels for all 597 items; only 100 ran, the rest stay unknown
    try:
        pipeline.run()
    finally:
        pipeline.close()
        checked.model.engine.close()
    text = generate_latest(registry).decode()

    # Assert
    assert 'fogline_labels_total{outcome="joined",pipeline="digits"} 100.0' in text
    assert 'fogline_labels_total{outcome="unknown",pipeline="digits"} 497.0' in text
    tags = 'metric="accuracy",model_version="1",pipeline="digits",window="50"'
    assert f"fogline_live_labelled{{{tags}}} 50.0" in text
    assert f"fogline_live_accuracy{{{tags}}}" in text
    estimate = [line for line in text.splitlines() if line.startswith("fogline_accuracy_estimate{")]
    assert len(estimate) == 1 and 'window="50"' in estimate[0]
    assert 0.9 < float(estimate[0].rsplit(" ", 1)[1]) <= 1.0


# --- bad sections -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "store", "message"),
    [
        ({"source": {"type": "kafka"}}, None, "labels.source: unknown type 'kafka'"),
        ({"source": {"type": "http", "port": 70000}}, None, "labels.source.port"),
        ({"source": {"type": "http"}, "compare": "digit"}, None, "labels.compare: results have no field 'digit'"),
        ({"source": {"type": "http"}, "windows": [0]}, None, "labels.windows[0]"),
        ({"source": {"type": "http"}, "retention_s": -1}, None, "labels.retention_s"),
        ({"source": {"type": "http"}, "task": "regression", "estimate": {}}, None, "labels: estimate"),
        ({"source": {"type": "http"}, "estimate": {"score": "p"}}, None, "labels.estimate.score"),
        ({"source": {"type": "csv", "path": "none.csv"}}, None, "no such labels file"),
        ({"source": {"type": "csv", "path": "l.csv"}}, None, "labels.source: l.csv has no column 'label'"),
        ({"source": {"type": "http"}}, False, "labels: late labels are joined to stored results"),
        ({"source": {"type": "mqtt", "url": "ftp://x", "topic": "l"}}, None, "labels.source.url"),
        ({"source": {"type": "delayed", "delay_s": 1}}, None, "labels.source: delayed takes either"),
    ],
)  # fmt: skip
def test_a_bad_labels_section_is_refused_with_its_key_path(
    tmp_path: Path, labels: dict[str, Any], store: bool | None, message: str
) -> None:
    (tmp_path / "l.csv").write_text("id,truth\nx,1\n")
    spec = digits_spec(labels=labels)
    if store is False:
        spec["store"] = False

    with pytest.raises(ConfigError) as caught:
        checked = plan(load_spec(write_spec(tmp_path, spec)))
        checked.model.engine.close()

    assert message in str(caught.value)


def test_fogline_check_refuses_a_bad_labels_section_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(
        tmp_path, digits_spec(labels={"source": {"type": "http"}, "compare": "digit"})
    )

    status = main(["check", str(path)])

    shown = capsys.readouterr()
    assert status == 2 and "Traceback" not in shown.err + shown.out
    assert "labels.compare: results have no field 'digit'" in " ".join(shown.err.split())
