"""Late labels: what joining them costs the digits pipeline, and how fast they join.

The digits pipeline (the eval set, looping) runs with and without a
``labels:`` section whose HTTP endpoint a client process feeds at
:data:`RATE` labels a second (ids ``digits_eval#i``, so every label meets
the newest result of its item): the join thread's store lookups and writes
share the store with the result writer. Runs interleaved; the figure is the
throughput lost, beside how many labels a second were joined.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fogline.examples import LABELS, digits_model_path, digits_split
from fogline.pipeline import LabelsSpec, Pipeline, Snapshot, parse_spec, plan

DATA = "fogline.examples:digits_eval"


def _spec(labels: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "digits",
        "sources": [{"type": "dataset", "name": "digits", "function": DATA, "loop": True}],
        "model": {"path": str(digits_model_path().parent), "max_batch": 64, "max_wait_ms": 2},
        "postprocess": [{"type": "classify", "labels": LABELS}],
        "store": {"sync": False},
    }
    if labels:
        spec["labels"] = {"source": {"type": "http", "port": 0}, "windows": [100, 1000]}
    return spec


#: The label client, a process of its own (labels come from elsewhere): POST ``RATE`` labels a
#: second, 100 a request, the eval set's round and round, until it is killed.
CLIENT = """
import json, sys, time, httpx
url, rate, path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
labels = json.load(open(path))
with httpx.Client(timeout=30) as client:
    n, start = 0, time.monotonic()
    while True:
        body = [labels[(n + k) % len(labels)] for k in range(100)]
        try:
            client.post(url, json=body)
        except httpx.HTTPError:
            sys.exit(0)
        n += 100
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
"""
#: Labels a second the client sends: every item of a pipeline at a few thousand items a
#: second would not be labelled; a tenth to a third of them is a heavy label stream.
RATE = 1000
#: The labels the client sends, written once by the benchmark (the client imports only httpx).
TRUTH = Path(tempfile.gettempdir()) / "fogline-bench-labels.json"


def _write_truth() -> None:
    truth = [str(y) for y in digits_split("eval")[1]]
    labels = [{"id": f"{DATA}#{i}", "label": t} for i, t in enumerate(truth)]
    TRUTH.write_text(json.dumps(labels))


def _feed(pipeline: Pipeline, stop: threading.Event) -> None:
    """Start the label client once the endpoint listens; stop it when ``stop`` is set."""
    while pipeline.labels is None and not stop.is_set():
        time.sleep(0.01)
    if pipeline.labels is None or not pipeline.labels.ready.wait(10):
        return
    url = pipeline.labels.source.url  # type: ignore[attr-defined]
    client = subprocess.Popen([sys.executable, "-c", CLIENT, url, str(RATE), str(TRUTH)])
    try:
        stop.wait()
    finally:
        client.kill()
        client.wait()


def _run(labels: bool, folder: Path, items: int) -> tuple[Snapshot, float]:
    checked = plan(parse_spec(_spec(labels), base=Path(tempfile.mkdtemp(dir=folder))))
    engine = checked.model.engine
    stop = threading.Event()
    try:
        engine.run(engine.signature.sample_feeds(batch=64))  # warm-up
        pipeline = Pipeline(checked)
        feeder = threading.Thread(target=_feed, args=(pipeline, stop), daemon=True)
        feeder.start()
        try:
            snap = pipeline.run(max_items=items)
        finally:
            stop.set()
            feeder.join()
            pipeline.close()
    finally:
        engine.close()
    if snap.total("processed") != items:
        raise SystemExit(f"the digits pipeline lost items: {snap.counts}")
    board = snap.extra.get("labels")
    joined = board.outcomes["joined"] if board is not None else 0
    return snap, joined / snap.elapsed if snap.elapsed else 0.0


def _join_cost(n: int) -> tuple[float, float]:
    """CPU and wall seconds per label of the join path alone (lookups, compare, one write per
    100 labels), on a store of ``n`` digits results: load on the machine cannot blur CPU time."""
    from fogline.pipeline._label_sources import LabelMessage
    from fogline.pipeline._labels import LabelJoiner
    from fogline.store import Result, ResultStore

    outputs = {
        "label": "3",
        "score": 0.99,
        "confident": True,
        "top_k": [{"label": "3", "score": 0.99}],
    }
    with tempfile.TemporaryDirectory() as folder, ResultStore(Path(folder) / "r.db") as store:
        for start in range(0, n, 500):
            store.add(
                Result("digits", i, time.time(), "digits", "1", outputs, item_id=f"{DATA}#{i}")
                for i in range(start, start + 500)
            )
        spec = LabelsSpec.model_validate({"source": {"type": "http"}})
        joiner = LabelJoiner(spec, store, produced=frozenset(outputs))
        labels = [LabelMessage(f"{DATA}#{i}", "3", time.time(), "bench") for i in range(n)]
        wall, cpu = time.perf_counter(), time.thread_time()
        for start in range(0, n, 100):
            joiner._join(labels[start : start + 100])
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        assert joiner.board().outcomes["joined"] == n
    return cpu / n, wall / n


def run(quick: bool) -> list[str]:
    items, rounds = (8_000, 2) if quick else (20_000, 6)
    print(
        f"\n(labels) The digits pipeline with and without late labels posted to its HTTP "
        f"endpoint ({RATE:,}/s from another process): {items:,} items per run, {rounds} rounds, interleaved"
    )
    _write_truth()
    rates: dict[bool, list[float]] = {False: [], True: []}
    joined: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            for labels in (False, True) if r % 2 == 0 else (True, False):
                snap, per_s = _run(labels, Path(folder), items)
                rates[labels].append(snap.throughput)
                if labels:
                    joined.append(per_s)
                print(
                    f"     {'with' if labels else 'without'} labels: {snap.throughput:,.0f} items/s"
                    + (f", {per_s:,.0f} labels joined/s" if labels else ""),
                    file=sys.stderr,
                )
    without, with_ = statistics.median(rates[False]), statistics.median(rates[True])
    pairs = [w / wo for w, wo in zip(rates[True], rates[False], strict=True)]
    lines = [
        f"digits pipeline throughput: {without:,.0f} items/s without labels, {with_:,.0f} with "
        f"late labels joined at {statistics.median(joined):,.0f}/s on their own thread: "
        f"{100 * (1 - with_ / without):.1f} % lost by the medians, "
        f"{100 * (1 - statistics.median(pairs)):.1f} % by the median of {rounds} back-to-back pairs"
    ]
    cpu, wall = _join_cost(5_000 if quick else 20_000)
    lines.append(
        f"the join path alone: {1e6 * cpu:.0f} us CPU per label ({100 * cpu * RATE:.1f} % of a core "
        f"at {RATE:,} labels/s), {1e6 * wall:.0f} us wall with a commit (fsync) per 100 labels"
    )
    for line in lines:
        print(f"   {line}")
    return lines
