"""Benchmark section: an online anomaly detector in the pipeline against River alone.

    python benchmarks/_monitor_online.py [--items 20000] [--rounds 5]
    python benchmarks/bench_monitor.py --only online

The stream is River's bundled Shuttle set (9 sensor readings per row), the
model River's HalfSpaceTrees at its defaults (seeded). Two ways to run it,
interleaved (A B, B A, ...) so a noisy neighbour hits both alike, median of
each:

- **River alone**: ``for x in rows: score_one(x); learn_one(x)`` over the
  rows as River's feature dicts, made beforehand (River's own rate).
- **pipeline**: a ``dataset`` source over the same rows, ``model: {online:
  river.anomaly.HalfSpaceTrees}``, an ``anomaly`` stage, every result stored
  durably in SQLite (the pipeline's promise), items per second as the run
  summary counts them.

Target: the pipeline keeps >= 90 % of River's rate. To show where the time
goes, the same pipeline also runs a detector that does nothing (its
``score_one`` returns 0): its rate is the pipeline's own cost per item, which
the model's cost adds to while the GIL serializes both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from river import anomaly, base

from fogline.examples.online import shuttle_stream
from fogline.model import TensorSpec
from fogline.monitor import OnlineEngine, OnlineSpec
from fogline.pipeline import Pipeline, parse_spec, plan

SEED = 42
HST = "river.anomaly.HalfSpaceTrees"


class NullDetector(base.AnomalyDetector):
    """A River anomaly detector that does nothing: the pipeline's own cost per item."""

    def learn_one(self, x: dict[Any, Any]) -> None:
        return None

    def score_one(self, x: dict[Any, Any]) -> float:
        return 0.0


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def river_alone(rows: list[dict[int, float]]) -> float:
    """Items per second of River's own loop over ready-made feature dicts."""
    model = anomaly.HalfSpaceTrees(seed=SEED)
    started = time.perf_counter()
    for x in rows:
        model.score_one(x)
        model.learn_one(x)
    return len(rows) / (time.perf_counter() - started)


def engine_alone(x: np.ndarray, batch: int) -> float:
    """Items per second of the online engine fed ready-made batches: River plus the conversions."""
    engine = OnlineEngine(OnlineSpec(HST, {"seed": SEED}), TensorSpec("features", "float32", (9,)))
    batches = [x[i : i + batch] for i in range(0, len(x), batch)]
    started = time.perf_counter()
    for chunk in batches:
        engine.run({"features": chunk})
    return len(x) / (time.perf_counter() - started)


#: Per pipeline run, the engine's seconds per item (OnlineEngine.seconds / items).
ENGINE_US: dict[str, list[float]] = {}


def pipeline_rate(
    data: Path, folder: Path, online: str, params: dict[str, Any], batch: int, name: str
) -> float:
    """Items per second of a pipeline run over ``data`` (an .npz), every result stored."""
    run = folder / f"run-{time.monotonic_ns()}"
    run.mkdir()
    spec = {
        "name": "online-bench",
        "sources": [{"type": "dataset", "name": "shuttle", "path": str(data)}],
        "model": {"online": online, "params": params, "max_batch": batch, "queue_size": 4 * batch},
        "postprocess": [{"type": "anomaly", "threshold": 0.6}],
        "store": {"path": str(run / "results.db")},
    }
    checked = plan(parse_spec(spec, base=run))
    pipeline = Pipeline(checked)
    try:
        snapshot = pipeline.run()
    finally:
        pipeline.close()
        checked.model.engine.close()
    items = snapshot.total("processed")
    assert items == int(np.load(data)["x"].shape[0]), snapshot.counts
    engine: Any = checked.model.engine
    ENGINE_US.setdefault(name, []).append(engine.seconds / items * 1e6)
    return snapshot.throughput


def interleaved(calls: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            got[name].append(calls[name]())
            log(f"{name}: {got[name][-1]:,.0f} items/s")
    return got


def section(items: int = 20_000, rounds: int = 5, batch: int = 64) -> list[str]:
    """The benchmark's lines: River alone, the engine alone, the pipeline, its own cost."""
    x, _ = shuttle_stream()
    x = x[:items]
    rows = [dict(enumerate(row)) for row in x.tolist()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "shuttle.npz"
        np.savez(data, x=x)
        null = "_monitor_online:NullDetector"
        rates = interleaved(
            {
                "river": lambda: river_alone(rows),
                "engine": lambda: engine_alone(x, batch),
                "pipeline": lambda: pipeline_rate(
                    data, folder, HST, {"seed": SEED}, batch, "pipeline"
                ),
                "pipeline-null": lambda: pipeline_rate(data, folder, null, {}, batch, "null"),
            },
            rounds,
        )
    river, engine, piped, null_rate = (
        statistics.median(rates[k]) for k in ("river", "engine", "pipeline", "pipeline-null")
    )
    best = {name: max(values) for name, values in rates.items()}
    # Each round's ratio compares runs made moments apart: steadier than a ratio of medians
    # when the machine's load swings between rounds.
    share = ratio(rates["pipeline"], rates["river"])
    engine_share = ratio(rates["engine"], rates["river"])
    model_us, own_us, piped_us = 1e6 / river, 1e6 / null_rate, 1e6 / piped
    in_engine = statistics.median(ENGINE_US["pipeline"])
    serial = [
        1e6 / (1e6 / r + 1e6 / n) / r
        for r, n in zip(rates["river"], rates["pipeline-null"], strict=True)
    ]
    return [
        f"online anomaly detector: HalfSpaceTrees at River's defaults on River's Shuttle set, "
        f"{items:,} items, max_batch {batch}; {rounds} interleaved rounds: median rates, and "
        "the median [range] of each round's ratio to River",
        f"  River alone (score_one + learn_one)   {river:8,.0f} items/s  {model_us:6.1f} us/item",
        f"  engine alone (arrays -> River dicts)  {engine:8,.0f} items/s  {1e6 / engine:6.1f} "
        f"us/item  {spread(engine_share)} of River's rate",
        f"  pipeline, every result stored         {piped:8,.0f} items/s  {piped_us:6.1f} us/item  "
        f"{spread(share)} of River's rate (target >= 90 %): "
        f"{'PASS' if statistics.median(share) >= 0.9 else 'FAIL'}",
        f"    of which in the engine (River + conversions) {in_engine:.1f} us/item, "
        f"the rest ({piped_us - in_engine:.1f} us/item) the pipeline's threads",
        f"  pipeline, a do-nothing detector       {null_rate:8,.0f} items/s  {own_us:6.1f} us/item"
        f"  (source, batcher, anomaly stage, store: the pipeline's own cost)",
        f"  serial estimate 1 / (River's cost + the pipeline's own) {spread(serial)} of River's "
        "rate: the GIL runs them one at a time",
        f"  best of {rounds} (each one's least disturbed run): River {best['river']:,.0f}, "
        f"engine {best['engine']:,.0f} ({best['engine'] / best['river']:.1%}), pipeline "
        f"{best['pipeline']:,.0f} ({best['pipeline'] / best['river']:.1%}), do-nothing pipeline "
        f"{best['pipeline-null']:,.0f} items/s",
    ]


def ratio(values: list[float], base: list[float]) -> list[float]:
    return [v / b for v, b in zip(values, base, strict=True)]


def spread(ratios: list[float]) -> str:
    """``= 45.1% [38.0-52.3%]``: the median and range of per-round ratios."""
    return f"= {statistics.median(ratios):.1%} [{min(ratios):.1%}-{max(ratios):.1%}]"


def run(quick: bool) -> list[str]:
    """The section for ``bench_monitor.py``: its lines, printed and returned."""
    lines = section(4_000, 1) if quick else section()
    for line in lines:
        print(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    for line in section(args.items, args.rounds, args.batch):
        print(line)


if __name__ == "__main__":
    main()
