"""The synthetic source: patterns, dtypes, count, and the rate load tests need."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fogline.pipeline.sources import SyntheticSpec


@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    dtype=st.sampled_from(["float32", "float16", "uint8", "int8", "int64", "bool"]),
    pattern=st.sampled_from(["random", "zeros", "sine"]),
)
def test_every_item_has_the_declared_shape_and_dtype(shape, dtype, pattern) -> None:
    spec = SyntheticSpec(shape=shape, dtype=dtype, pattern=pattern, count=3)

    items = list(spec.build("s").read(threading.Event()))

    assert [i.sequence for i in items] == [0, 1, 2]
    assert all(i.data.shape == tuple(shape) and i.data.dtype == np.dtype(dtype) for i in items)
    assert spec.output().shape == tuple(shape) and spec.output().dtype == np.dtype(dtype).name


def test_it_produces_more_than_50k_small_items_a_second() -> None:
    source = SyntheticSpec(shape=[8], count=100_000).build("load")

    started = time.perf_counter()
    produced = sum(1 for _ in source.read(threading.Event()))
    rate = produced / (time.perf_counter() - started)

    assert produced == 100_000 and rate > 50_000


def test_the_same_seed_gives_the_same_stream_and_items_cannot_be_changed_in_place() -> None:
    def first(seed: int) -> list[np.ndarray]:
        source = SyntheticSpec(shape=[4], count=3, seed=seed).build("s")
        return [i.data for i in source.read(threading.Event())]  # type: ignore[union-attr]

    a, b = first(1), first(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], first(2)[0])
    with pytest.raises(ValueError, match="read-only"):
        a[0][:] = 0  # shared with later items: stages make new arrays instead


def test_bad_shapes_and_dtypes_are_refused() -> None:
    with pytest.raises(ValidationError, match="must be positive"):
        SyntheticSpec(shape=[3, 0])
    with pytest.raises(ValidationError, match="unknown dtype"):
        SyntheticSpec(shape=[3], dtype="float33")
    with pytest.raises(ValidationError, match="numeric or bool"):
        SyntheticSpec(shape=[3], dtype="str")
