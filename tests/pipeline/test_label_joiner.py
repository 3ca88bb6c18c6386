"""The label joiner on its own: a real store, a real HTTP label source, no pipeline.

Item ids that repeat (a looped data set, two sources replaying one data set)
and labels accepted just before shutdown must all end in a counted outcome.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fogline.pipeline._label_sources import (
    MAX_QUEUED,
    Fields,
    HttpLabelsSpec,
    Incoming,
    LabelMessage,
    LostLabels,
    MqttLabelsSpec,
)
from fogline.pipeline._labels import LabelJoiner, LabelsSpec
from fogline.store import Result, ResultStore
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def result(item_id: str, label: str, sequence: int = 0) -> Result:
    return Result("s", sequence, time.time(), "m", "1", {"label": label}, item_id=item_id)


def finish(joiner: LabelJoiner, wait_s: float = 0.0) -> None:
    """``joiner.finish`` on a thread, which must end (not hang)."""
    done = threading.Thread(target=joiner.finish, args=(wait_s, threading.Event()), daemon=True)
    done.start()
    done.join(20)
    assert not done.is_alive(), "finish() hangs"


def test_a_held_label_joins_the_newest_of_results_that_share_its_id_and_joining_goes_on(
    tmp_path: Path,
) -> None:
    # Prepare: a label that comes before its result, then one batch storing that id twice
    spec = LabelsSpec.model_validate({"source": {"type": "http", "port": 0}, "windows": [10]})
    with ResultStore(tmp_path / "r.db") as store:
        joiner = LabelJoiner(spec, store, produced=frozenset({"label"}))
        joiner.start()
        assert joiner.ready.wait(10)
        url = joiner.source.url  # type: ignore[attr-defined]
        assert httpx.post(url, json={"id": "x#1", "label": "3"}, timeout=10).status_code == 202
        wait_for(lambda: joiner.board().held == 1)

        # Execute: the looped data set stores x#1 twice in one batch (wrong, then right)
        twice = [result("x#1", "5", 0), result("x#1", "3", 1)]
        joiner.stored(store.add(twice), twice)
        wait_for(lambda: joiner.board().outcomes["joined"] == 1)
        # ... and a later label still joins (the join thread is alive)
        later = [result("x#2", "4", 2)]
        joiner.stored(store.add(later), later)
        assert httpx.post(url, json={"id": "x#2", "label": "4"}, timeout=10).status_code == 202
        wait_for(lambda: joiner.board().outcomes["joined"] == 2)
        finish(joiner)
        board = joiner.board()
        rows = store.labels_of(["x#1"])

    assert board.outcomes["joined"] == 2 and board.held == 0
    assert [f.value for f in board.live] == [1.0]  # x#1 joined the newest (right) answer
    assert rows["x#1"].correct is True


class Reader:
    """A label source read on a thread; after the first entry it waits for ``go``
    (a joiner that is behind), then takes the rest with a small delay each."""

    def __init__(self, source: object) -> None:
        self.source = source
        self.stop, self.go = threading.Event(), threading.Event()
        self.got: list[Incoming] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for entry in self.source.read(self.stop):  # type: ignore[attr-defined]
            self.got.append(entry)
            self.go.wait()
            time.sleep(0.0005)

    def end(self) -> None:
        self.go.set()
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()

    def labels(self) -> int:
        return sum(isinstance(e, LabelMessage) for e in self.got)


def posted(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"id": f"i{k}", "label": "1"} for k in range(start, start + n)]


def test_every_label_the_http_endpoint_accepted_is_handed_on_at_shutdown() -> None:
    source = HttpLabelsSpec(type="http", port=0).build(Fields())
    reader = Reader(source)
    reader.go.set()
    assert source.ready.wait(10)

    # Execute: 2,000 accepted; stop at once, while the reader is still taking them
    answer = httpx.post(source.url, json=posted(2000), timeout=30)  # type: ignore[attr-defined]
    reader.end()

    assert (answer.status_code, answer.json()) == (202, {"accepted": 2000})
    assert reader.labels() == 2000


def test_a_body_that_does_not_fit_is_refused_whole_and_none_of_it_is_queued() -> None:
    # Prepare: a reader that is behind, holding the first label; the queue nearly full
    source = HttpLabelsSpec(type="http", port=0).build(Fields())
    reader = Reader(source)
    assert source.ready.wait(10)
    url = source.url  # type: ignore[attr-defined]
    first = httpx.post(url, json=posted(MAX_QUEUED - 50), timeout=30)
    wait_for(lambda: len(reader.got) == 1)

    # Execute: 200 more do not fit (and the reader stays behind past the 5 s wait)
    refused = httpx.post(url, json=posted(200, start=MAX_QUEUED), timeout=30)
    reader.end()

    assert first.status_code == 202
    assert refused.status_code == 503 and refused.json()["accepted"] == 0
    assert reader.labels() == MAX_QUEUED - 50  # all of the first body, nothing of the second


def test_mqtt_labels_dropped_unread_are_counted_as_lost(tmp_path: Path) -> None:
    # Prepare: a broker that queues without limit (it loses nothing itself), and a reader
    # that is behind while more messages come than the client holds
    with Mosquitto(tmp_path / "mosquitto", extra_config=["max_queued_messages 0"]) as broker:
        spec = MqttLabelsSpec(type="mqtt", url=broker.url, topic="labels/#")
        source = spec.build(Fields())
        reader = Reader(source)
        assert source.ready.wait(20)
        sent = MAX_QUEUED + 200
        with MqttPublisher(broker.url) as publisher:
            publisher.publish(
                *[
                    MqttMessage(Topic("labels/a"), json.dumps(label).encode(), qos=1)
                    for label in posted(sent)
                ]
            )
        subscriber = source.subscriber  # type: ignore[attr-defined]
        wait_for(lambda: subscriber.dropped == sent - 1 - MAX_QUEUED, timeout=60)

        # Execute: the reader catches up
        reader.go.set()
        lost = lambda: sum(e.count for e in reader.got if isinstance(e, LostLabels))  # noqa: E731
        wait_for(lambda: reader.labels() + lost() == sent, timeout=60)
        reader.end()

    assert lost() == sent - 1 - MAX_QUEUED and reader.labels() == MAX_QUEUED + 1


def test_dropped_is_a_label_outcome_in_the_board_and_the_prometheus_counter(
    tmp_path: Path,
) -> None:
    from prometheus_client.core import Metric

    from fogline.pipeline._labels import label_families

    spec = LabelsSpec.model_validate({"source": {"type": "http", "port": 0}, "windows": [10]})
    with ResultStore(tmp_path / "r.db") as store:
        joiner = LabelJoiner(spec, store)
        joiner._join([LostLabels("mqtt labels/#", "3 messages dropped unread", 3)])
        board = joiner.board()

    assert board.outcomes["dropped"] == 3
    assert board.describe()[0] == "labels: 3 dropped"
    (counter, *_) = label_families(board, "p")
    assert isinstance(counter, Metric)
    assert {s.labels["outcome"]: s.value for s in counter.samples}["dropped"] == 3


def test_finish_returns_even_when_the_join_thread_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: more labels than the joiner's queue holds, and a join thread that ends at once
    # (a bug it did not survive): the reader must not wait on it for room
    rows = "".join(f"i{n},1\n" for n in range(5000))
    (tmp_path / "labels.csv").write_text("id,label\n" + rows)
    spec = LabelsSpec.model_validate(
        {"source": {"type": "csv", "path": str(tmp_path / "labels.csv")}, "windows": [10]}
    )

    def ends(self: LabelJoiner) -> None:
        raise RuntimeError("a bug in the join thread")

    monkeypatch.setattr(LabelJoiner, "_join_until_done", ends)
    with ResultStore(tmp_path / "r.db") as store:
        joiner = LabelJoiner(spec, store)
        joiner.start()
        # the reader has either read everything or is stuck waiting for room
        wait_for(lambda: joiner._source_done.is_set() or joiner._incoming.full())

        # Execute / Verify
        finish(joiner)
