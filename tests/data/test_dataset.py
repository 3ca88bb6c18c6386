"""The Dataset value object: it checks itself, counts, joins and cuts its batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.data import Dataset
from fogline.errors import DataError


@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=6), items=st.integers(0, 60))
def test_limit_keeps_the_first_items_and_their_labels(sizes: list[int], items: int) -> None:
    total = sum(sizes)
    x = np.arange(total, dtype=np.float32)
    ends = np.cumsum(sizes)
    data = Dataset(
        "d", tuple({"x": x[end - n : end]} for n, end in zip(sizes, ends, strict=True)), x
    )

    cut = data.limit(items)

    assert cut.size == min(items, total)
    assert cut.labels is not None and cut.labels.tolist() == x[: cut.size].tolist()
    assert data.array("x").tolist() == x.tolist()


def test_a_batch_without_arrays_or_with_arrays_of_different_lengths_is_refused() -> None:
    with pytest.raises(DataError, match="batch 0 holds no arrays"):
        Dataset("d", ({},))
    with pytest.raises(DataError, match="batch 1 has arrays of different lengths"):
        Dataset("d", ({"a": np.zeros(2)}, {"a": np.zeros(2), "b": np.zeros(3)}))


def test_labels_must_count_one_per_item() -> None:
    with pytest.raises(DataError, match="d: 4 items but 3 labels"):
        Dataset("d", ({"x": np.zeros((4, 2))},), labels=np.arange(3))
