"""The stdin source: JSON lines from a stream, and from a real pipe that stays open."""

from __future__ import annotations

import io
import os
import threading
import time

import numpy as np
import pytest

from fogline.pipeline import Corrupt, Item
from fogline.pipeline.sources import StdinSource, StdinSpec


def test_lists_and_objects_become_vectors_and_bad_lines_are_corrupt(reader) -> None:
    stream = io.StringIO(
        '[1, 2]\n{"data": [3, 4], "label": 7}\n\nnot json\n[1, "x"]\n{"value": 1}\n[[1, 2]]\n[5, 6]\n'
    )

    got = reader(StdinSource("in", stream=stream), 20)

    assert [type(g).__name__ for g in got] == ["Item", "Item"] + ["Corrupt"] * 4 + ["Item"]
    assert [g.position for g in got if isinstance(g, Corrupt)] == [
        "stdin:4",
        "stdin:5",
        "stdin:6",
        "stdin:7",
    ]
    items = [g for g in got if isinstance(g, Item)]
    assert [i.sequence for i in items] == [0, 1, 2]
    assert items[1].meta == {"position": "stdin:2", "label": "7"}
    assert items[2].data.dtype == np.float32 and items[2].data.tolist() == [5, 6]


@pytest.mark.parametrize(("line", "ok"), [("[1, 2, 3, 4, 5, 6]", True), ("[1, 2, 3]", False)])
def test_shape_reshapes_or_reports_a_mismatch(reader, line: str, ok: bool) -> None:
    source = StdinSpec(shape=[2, 3]).build("in")
    source.stream = [line]

    (got,) = reader(source, 1)

    assert isinstance(got, Item) == ok
    if ok:
        assert got.data.shape == (2, 3)  # type: ignore[union-attr]
    else:
        assert "do not fill shape [2, 3]" in got.reason  # type: ignore[union-attr]


def test_a_pipe_is_read_line_by_line_and_stop_ends_a_blocked_read() -> None:
    read_fd, write_fd = os.pipe()
    stop = threading.Event()
    got: list[Item | Corrupt] = []
    with os.fdopen(read_fd) as pipe:
        thread = threading.Thread(
            target=lambda: got.extend(StdinSource("in", stream=pipe).read(stop))
        )
        thread.start()
        os.write(write_fd, b"[1, 2]\n[3,")
        time.sleep(0.1)
        os.write(write_fd, b" 4]\n")
        time.sleep(0.2)
        stop.set()
        thread.join(2)
        os.close(write_fd)

    assert not thread.is_alive()
    assert [g.data.tolist() for g in got] == [[1, 2], [3, 4]]  # type: ignore[union-attr]
