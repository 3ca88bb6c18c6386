"""The one histogram: its buckets, what it counts, and the text Prometheus reads back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from fogline.metrics import BUCKETS, PIPELINE_STAGE_SECONDS, SERVE_REQUEST_SECONDS, Histogram


def test_one_set_of_buckets_from_half_a_millisecond_to_ten_seconds() -> None:
    # The pipeline's bounds, a superset of what the server used (it stopped at 5 s).
    assert BUCKETS == (
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    )  # fmt: skip
    assert Histogram().bounds == BUCKETS


def test_a_value_on_a_bound_counts_in_that_bucket() -> None:
    # Prepare
    histogram = Histogram()

    # Execute: le means "less than or equal"
    for value in (0.0005, 0.0006, 10.0, 10.5):
        histogram.observe(value)

    # Assert
    rows = dict(histogram.cumulative())
    assert (rows["0.0005"], rows["0.001"], rows["5.0"], rows["10.0"], rows["+Inf"]) == (
        1,
        2,
        2,
        3,
        4,
    )
    assert list(rows) == [repr(b) for b in BUCKETS] + ["+Inf"]
    assert histogram.count == 4 and histogram.total == pytest.approx(20.5011)


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=50))
def test_cumulative_counts_never_go_down_and_end_at_the_count(values: list[float]) -> None:
    histogram = Histogram()
    for value in values:
        histogram.observe(value)
    counts = [count for _, count in histogram.cumulative()]
    assert counts == sorted(counts)
    assert counts[-1] == histogram.count == len(values)
    assert histogram.total == pytest.approx(math.fsum(values))


def test_merged_adds_counts_and_sums() -> None:
    a, b = Histogram(), Histogram()
    a.observe(0.002)
    b.observe(0.002)
    b.observe(3.0)

    both = Histogram.merged([a, b])

    assert both.counts == [x + y for x, y in zip(a.counts, b.counts, strict=True)]
    assert both.total == pytest.approx(3.004)
    assert Histogram.merged([]).cumulative()[-1] == ("+Inf", 0)


def test_merging_different_bounds_is_refused() -> None:
    with pytest.raises(ValueError, match="different bounds"):
        Histogram.merged([Histogram((1.0,))])


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf)])
def test_bad_bounds_are_refused(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bounds"):
        Histogram(bounds)


@pytest.mark.parametrize("name", [PIPELINE_STAGE_SECONDS, SERVE_REQUEST_SECONDS])
def test_prometheus_parses_the_lines_back(name: str) -> None:
    # Prepare
    histogram = Histogram()
    for value in (0.004, 0.03, 0.03, 7.0):
        histogram.observe(value)
    text = f"# TYPE {name} histogram\n" + "\n".join(
        histogram.lines(name, {"stage": 'end "to" end', "pipeline": "p"})
    )

    # Execute
    (family,) = text_string_to_metric_families(text + "\n")

    # Assert
    assert family.name == name and family.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == f"{name}_bucket"}
    assert buckets["0.005"] == 1 and buckets["0.05"] == 3 and buckets["10.0"] == 4
    assert buckets["+Inf"] == 4
    sums = {s.name: s.value for s in family.samples if not s.name.endswith("_bucket")}
    assert sums == {f"{name}_sum": pytest.approx(7.064), f"{name}_count": 4.0}
    assert {s.labels["stage"] for s in family.samples} == {'end "to" end'}
