"""Measuring: latency percentiles, throughput and peak memory, on real calls."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from fogline.model import EngineOptions, LatencyStats, PeakMemory, load_engine, measure, time_calls
from fogline.power import CpuTimeMeter, open_meter


@pytest.fixture(scope="module")
def digits_engine(digits_onnx: Path):
    return load_engine(digits_onnx, options=EngineOptions(threads=1))


@pytest.mark.parametrize("batch", [1, 8])
def test_measure_reports_ordered_percentiles(digits_engine, batch: int):
    # Execute
    stats = measure(digits_engine, batch=batch, warmup=2, duration_s=0.1, min_runs=10)

    # Assert
    assert isinstance(stats, LatencyStats)
    assert stats.batch == batch
    assert stats.runs >= 10
    assert 0 < stats.p50 <= stats.p90 <= stats.p99
    assert stats.mean > 0
    assert stats.throughput > 0
    assert set(stats.to_dict()) == {
        "batch",
        "runs",
        "p50",
        "p90",
        "p99",
        "mean",
        "throughput",
        "joules_per_item",
        "energy",
    }


def test_measure_reports_energy_per_item_with_its_label(digits_engine):
    # Prepare: the estimate, declared at 6 W per core
    meter = CpuTimeMeter(watts_per_core=6.0)

    # Execute
    stats = measure(digits_engine, batch=4, warmup=2, duration_s=0.2, min_runs=10, meter=meter)

    # Assert: the energy of the timed calls, per item (not per batch), labelled as an estimate
    assert stats.energy is not None
    assert stats.energy.label == "estimated (CPU time x 6 W per core)"
    assert stats.energy.joules > 0
    assert stats.joules_per_item == pytest.approx(stats.energy.joules / (4 * stats.runs))
    assert stats.to_dict()["energy"]["measured"] is False


def test_measure_picks_the_meter_for_the_engines_device(digits_engine):
    stats = measure(digits_engine, batch=1, warmup=1, duration_s=0.05, min_runs=5)

    assert stats.energy is not None
    expected = open_meter(digits_engine.device)
    assert (stats.energy.source, stats.energy.note) == (expected.source, expected.why)


def test_measure_uses_the_feeds_it_is_given(digits_engine, eval_pixels: np.ndarray):
    # Prepare: a batch of 16 real images, recorded as batch 16
    feeds = {"pixels": eval_pixels[:16]}

    # Execute
    stats = measure(digits_engine, feeds, batch=16, warmup=1, duration_s=0.05, min_runs=5)

    # Assert
    assert stats.batch == 16
    assert stats.runs >= 5


def test_throughput_is_batch_over_latency(digits_engine):
    stats = measure(digits_engine, batch=4, warmup=1, duration_s=0.1, min_runs=10)
    assert stats.throughput == pytest.approx(4 * 1000.0 / stats.mean, rel=1e-6)


def test_time_calls_sees_a_two_millisecond_sleep():
    # Execute
    stats = time_calls(lambda: time.sleep(0.002), warmup=1, duration_s=0.1, min_runs=10)

    # Assert
    assert 2.0 <= stats.p50 <= 20.0
    assert stats.runs >= 10


def test_time_calls_stops_at_max_runs():
    calls: list[None] = []

    stats = time_calls(lambda: calls.append(None), warmup=3, duration_s=30.0, max_runs=50)

    assert stats.runs == 50
    assert len(calls) == 53


def test_time_calls_makes_at_least_min_runs_past_the_deadline():
    stats = time_calls(lambda: time.sleep(0.001), warmup=0, duration_s=0.0, min_runs=15)
    assert stats.runs == 15


def test_peak_memory_sees_a_200_mb_array():
    # Execute: allocate and touch every page, keep it alive to the end of the block
    with PeakMemory(interval_s=0.001) as memory:
        block = np.ones(200 << 20, dtype=np.uint8)
        assert int(block[::4096].sum()) == len(block[::4096])

    # Assert
    assert memory.growth_mb > 100
    assert memory.peak_mb >= memory.start_mb + memory.growth_mb - 1e-9
    del block


def test_peak_memory_of_an_idle_block_is_small():
    with PeakMemory() as memory:
        time.sleep(0.02)
    assert 0 <= memory.growth_mb < 50
