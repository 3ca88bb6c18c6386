"""The label joiner on its own: a real store, a real HTTP label source, no pipeline.

Item ids that repeat (a looped data set, two sources replaying one data set)
and labels accepted just before shutdown must all end in a counted outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from fogline.pipeline._labels import LabelJoiner, LabelsSpec
from fogline.store import Result, ResultStore


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
