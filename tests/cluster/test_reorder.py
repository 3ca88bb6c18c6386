"""The reorder window: results leave in sequence order, bounded, and late ones are said to be late."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.cluster import ReorderWindow


def test_out_of_order_results_leave_in_order():
    window = ReorderWindow[str](size=8)
    out = []
    for seq in (2, 0, 3, 1, 4):
        out += [r.seq for r in window.push(seq, f"r{seq}")]
    assert out == [0, 1, 2, 3, 4]
    assert window.held == 0 and window.late == 0


def test_a_gap_wider_than_the_window_is_given_up_and_its_item_comes_late():
    window = ReorderWindow[int](size=3)
    assert window.push(1, 1) == []
    assert window.push(2, 2) == []
    released = window.push(3, 3)  # 3 is 3 ahead of the missing 0: stop waiting for it
    assert [(r.seq, r.late) for r in released] == [(1, False), (2, False), (3, False)]
    (late,) = window.push(0, 0)
    assert (late.seq, late.late) == (0, True)
    assert window.late == 1 and window.skipped == 1


def test_a_skipped_number_does_not_hold_the_others_back():
    window = ReorderWindow[int](size=100)
    assert window.push(1, 1) == []
    assert [r.seq for r in window.skip(0)] == [1]
    assert window.skipped == 0


def test_flush_gives_what_is_held_in_order():
    window = ReorderWindow[int](size=100)
    window.push(5, 5)
    window.push(3, 3)
    assert [r.seq for r in window.flush()] == [3, 5]
    assert window.next == 6


def test_a_window_of_nothing_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        ReorderWindow[int](size=0)


@given(
    order=st.permutations(list(range(60))),
    size=st.integers(min_value=1, max_value=70),
    dropped=st.sets(st.integers(min_value=0, max_value=59), max_size=10),
)
def test_every_result_leaves_once_in_order_unless_late_and_held_stays_bounded(
    order: list[int], size: int, dropped: set[int]
):
    window = ReorderWindow[int](size=size)
    out = []
    for seq in order:
        if seq in dropped:
            continue
        out += window.push(seq, seq)
        assert window.held <= size
    out += window.flush()
    on_time = [r.seq for r in out if not r.late]
    assert sorted(r.seq for r in out) == sorted(set(range(60)) - dropped)  # each once
    assert on_time == sorted(on_time)  # what is not late leaves in order
    assert window.late == sum(r.late for r in out)
    if size >= 60:  # a window as wide as the stream is never given up on
        assert window.late == 0 and [r.seq for r in out] == sorted(set(range(60)) - dropped)
