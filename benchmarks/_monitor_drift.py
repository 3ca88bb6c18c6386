"""Drift: the detectors on streams with a known change point, and their cost in a pipeline.

(a) Streams made from data sets that ship inside installed packages (nothing
downloaded): scikit-learn's digits (64 pixels; the images moved two pixels,
or inverted), the digits model's confidence on those images (one number),
wine (13 features; the classes seen change), breast cancer (30 features; the
class mix goes from 10 % to 50 % malignant), and River's bundled Phishing set
(9 features; the mix goes from 20 % to 80 % phishing). Each run draws
``PRE`` clean items, then ``POST`` changed ones, fed in batches of 16 (the
pipeline step's default ``every``); the reference is drawn apart from the
stream. Reported per detector at its defaults: false alarms per 10,000 clean
items, and items from the change to the first alarm (median over seeds),
beside River's ADWIN at its defaults on the same stream (fed each item's
mean value, the simplest one-number summary, since it takes one number).

(b) The digits pipeline (digits on a loop → model, batch <= 64 → classify →
SQLite) with and without ``drift`` on the input (64 features, KS) and on the
score (ADWIN), every item fed (the default) and with ``budget: 0.005``, runs
interleaved; target: at most 5 % of the throughput lost. Also the process's
CPU time per item, and the two steps' own cost timed alone.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fogline.examples import DRIFT_AT, digits_drifting_stream, digits_model_path, digits_split
from fogline.monitor import DETECTORS, make_detector
from fogline.pipeline import Pipeline, Snapshot, parse_spec, plan

Draw = Callable[[np.random.Generator, int], np.ndarray]


@dataclass(frozen=True)
class Stream:
    name: str
    reference: Draw
    clean: Draw
    changed: Draw


def _pool(x: np.ndarray) -> Draw:
    return lambda rng, n: x[rng.integers(0, len(x), n)]


def _mix(a: np.ndarray, b: np.ndarray, share_b: float) -> Draw:
    def draw(rng: np.random.Generator, n: int) -> np.ndarray:
        pick_b = rng.random(n) < share_b
        out = a[rng.integers(0, len(a), n)]
        out[pick_b] = b[rng.integers(0, len(b), int(pick_b.sum()))]
        return out

    return draw


def _confidence(pixels: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(digits_model_path()), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"pixels": pixels.astype(np.float32)})[0]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p.max(1) / p.sum(1))[:, None]


def streams() -> list[Stream]:
    from river.datasets import Phishing
    from sklearn.datasets import load_breast_cancer, load_wine

    train = digits_split("train")[0].reshape(-1, 64).astype(np.float64)
    raw, _ = digits_drifting_stream("shift")
    clean = raw[:DRIFT_AT].reshape(-1, 64) / 16.0
    shifted = raw[DRIFT_AT:].reshape(-1, 64) / 16.0
    inverted = (16 - raw[:DRIFT_AT]).reshape(-1, 64) / 16.0
    wine = load_wine()
    cancer = load_breast_cancer()
    benign, malignant = cancer.data[cancer.target == 1], cancer.data[cancer.target == 0]
    rows = list(Phishing())
    x = np.array([[float(v) for v in row.values()] for row, _ in rows])
    y = np.array([bool(label) for _, label in rows])
    conf_train = _confidence(train[:300].reshape(-1, 1, 8, 8))
    conf_clean = _confidence(clean.reshape(-1, 1, 8, 8))
    conf_shift = _confidence(shifted.reshape(-1, 1, 8, 8))
    before_wine = wine.data[wine.target < 2]
    return [
        Stream(
            "digits pixels, moved 2 px (64 features)", _pool(train), _pool(clean), _pool(shifted)
        ),
        Stream(
            "digits pixels, inverted (64 features)", _pool(train), _pool(clean), _pool(inverted)
        ),
        Stream(
            "digits model confidence, images moved 2 px (1 number)",
            _pool(np.concatenate([conf_train, conf_clean])),
            _pool(conf_clean),
            _pool(conf_shift),
        ),
        Stream(
            "wine, classes 0-1 then class 2 (13 features)",
            _pool(before_wine),
            _pool(before_wine),
            _pool(wine.data[wine.target == 2]),
        ),
        Stream(
            "breast cancer, 10 % then 50 % malignant (30 features)",
            _mix(benign, malignant, 0.1),
            _mix(benign, malignant, 0.1),
            _mix(benign, malignant, 0.5),
        ),
        Stream(
            "River Phishing, 20 % then 80 % phishing (9 features)",
            _mix(x[~y], x[y], 0.2),
            _mix(x[~y], x[y], 0.2),
            _mix(x[~y], x[y], 0.8),
        ),
    ]


class _RiverAdwin:
    """River's ADWIN at its defaults on each item's mean value: the anchor."""

    def __init__(self) -> None:
        from river.drift import ADWIN

        self.detector = ADWIN()

    def raised(self, batch: np.ndarray) -> list[int]:
        out = []
        for i, value in enumerate(batch.mean(axis=1).tolist()):
            self.detector.update(value)
            if self.detector.drift_detected:
                out.append(i)
        return out


def _one_run(
    stream: Stream, name: str, seed: int, pre: int, post: int
) -> tuple[int, int | None, float]:
    rng = np.random.default_rng(seed)
    reference = stream.reference(rng, 500).astype(np.float64)
    items = np.concatenate([stream.clean(rng, pre), stream.changed(rng, post)]).astype(np.float64)
    alarms: list[int] = []
    if name == "River ADWIN":
        anchor = _RiverAdwin()
        started = time.perf_counter()
        for start in range(0, len(items), 16):
            alarms += [start + i for i in anchor.raised(items[start : start + 16])]
    else:
        detector = make_detector(name, reference, reference.shape[1])
        started = time.perf_counter()
        for start in range(0, len(items), 16):
            state = detector.update(items[start : start + 16])
            if state.raised is not None:
                alarms.append(start + state.raised)
    seconds = time.perf_counter() - started
    false = sum(1 for a in alarms if a < pre)
    after = [a - pre for a in alarms if a >= pre]
    return false, (after[0] if after else None), seconds / len(items)


def part_detectors(quick: bool) -> list[str]:
    seeds, pre, post = (3, 3000, 1500) if quick else (10, 10_000, 2000)
    print(
        f"\n(a) Drift detectors at their defaults: {pre:,} clean items then {post:,} changed, "
        f"{seeds} seeds, batches of 16"
    )
    lines = []
    names = [*DETECTORS, "River ADWIN"]
    for stream in streams():
        parts = []
        print(f"   {stream.name}")
        for name in names:
            runs = [_one_run(stream, name, seed, pre, post) for seed in range(seeds)]
            false = sum(r[0] for r in runs) * 10_000 / (seeds * pre)
            delays = [r[1] for r in runs if r[1] is not None]
            missed = seeds - len(delays)
            delay = f"{statistics.median(delays):.0f}" if delays else "-"
            us = 1e6 * statistics.median(r[2] for r in runs)
            shown = "River ADWIN (defaults, item mean)" if name == "River ADWIN" else name
            text = f"{shown}: {false:.1f} FA/10k, delay {delay}"
            if missed:
                text += f" (missed {missed} of {seeds})"
            print(f"     {text}, {us:.2f} us/item")
            parts.append(text)
        lines.append(f"{stream.name}: " + "; ".join(parts))
    return lines


# --- (b) the cost in the digits pipeline --------------------------------------------------------

LABELS = [str(i) for i in range(10)]
INPUT_DRIFT = {
    "type": "drift",
    "on": "input",
    "detector": "ks",
    "reference": "fogline.examples:digits_calibration",
}
SCORE_DRIFT = {"type": "drift", "on": "score", "detector": "adwin", "key": "score_drift"}


def _spec(drift: str) -> dict[str, Any]:
    """The digits pipeline; ``drift``: ``none``, ``every item`` or ``budget`` (0.5 % each)."""
    post: list[dict[str, Any]] = [{"type": "classify", "labels": LABELS}]
    if drift != "none":
        extra = {"budget": 0.005} if drift == "budget" else {}
        post += [{**INPUT_DRIFT, **extra}, {**SCORE_DRIFT, **extra}]
    return {
        "name": "digits",
        "sources": [
            {
                "type": "dataset",
                "name": "digits",
                "function": "fogline.examples:digits_eval",
                "loop": True,
            }
        ],
        "model": {"path": str(digits_model_path().parent), "max_batch": 64, "max_wait_ms": 2},
        "postprocess": post,
        "store": {"sync": False},
    }


def _run_pipeline(spec: dict[str, Any], folder: Path, items: int) -> tuple[Snapshot, float]:
    """The run's snapshot, and the process's CPU seconds while it ran (setup left out)."""
    base = Path(tempfile.mkdtemp(dir=folder))
    checked = plan(parse_spec(spec, base=base))
    engine = checked.model.engine
    try:
        engine.run(engine.signature.sample_feeds(batch=64))  # warm-up
        pipeline = Pipeline(checked)
        try:
            started = time.process_time()
            snap = pipeline.run(max_items=items)
            cpu = time.process_time() - started
        finally:
            pipeline.close()
    finally:
        engine.close()
    if snap.total("processed") != items:
        raise SystemExit(f"the digits pipeline lost items: {snap.counts}")
    return snap, cpu


def _stage_cost(items: int) -> float:
    """Seconds per item of the two drift steps alone, every item fed (no budget), on real items."""
    from fogline.model import Signature, TensorSpec
    from fogline.pipeline._item import Item
    from fogline.pipeline.stages import DriftSpec

    signature = Signature((TensorSpec("pixels", "float32", ("batch", 1, 8, 8)),), ())
    steps: list[Any] = [
        DriftSpec.model_validate({**INPUT_DRIFT, "budget": None}).build(signature),
        DriftSpec.model_validate({**SCORE_DRIFT, "budget": None}).build(signature),
    ]
    pixels = digits_split("eval")[0]
    scores = _confidence(pixels)[:, 0].tolist()
    made = [
        Item("digits", i, 0.0, pixels[i % len(pixels)], result={"score": scores[i % len(pixels)]})
        for i in range(items)
    ]
    started = time.perf_counter()
    for item in made:
        for step in steps:
            step(item)
    return (time.perf_counter() - started) / items


def part_pipeline(quick: bool) -> list[str]:
    items, rounds = (3_000, 2) if quick else (20_000, 8)
    settings = ("none", "every item", "budget")
    print(
        f"\n(b) The digits pipeline without drift, with drift on input (64 features, ks) and score "
        f"(adwin) on every item, and with `budget: 0.005` on both: {items:,} items per run, "
        f"{rounds} rounds, interleaved"
    )
    rates: dict[str, list[float]] = {name: [] for name in settings}
    cpu: dict[str, list[float]] = {name: [] for name in settings}  # CPU seconds per item
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            for name in settings if r % 2 == 0 else settings[::-1]:
                snap, seconds = _run_pipeline(_spec(name), Path(folder), items)
                rates[name].append(snap.throughput)
                cpu[name].append(seconds / items)
                print(f"     {name}: {rates[name][-1]:,.0f} items/s", file=sys.stderr)
    without = statistics.median(rates["none"])
    lines = []
    for name in settings[1:]:
        with_ = statistics.median(rates[name])
        lost = 1.0 - with_ / without
        # Each round ran the settings back to back: their ratio cancels load that drifts.
        paired = 1.0 - statistics.median(
            w / wo for w, wo in zip(rates[name], rates["none"], strict=True)
        )
        more_cpu = statistics.median(cpu[name]) / statistics.median(cpu["none"]) - 1
        verdict = "PASS" if max(lost, paired) <= 0.05 else "FAIL"
        lines.append(
            f"digits pipeline, drift on input (ks, 64 features) and score (adwin), {name}: "
            f"{with_:,.0f} vs {without:,.0f} items/s without: {100 * lost:.1f} % lost by the "
            f"medians, {100 * paired:.1f} % by the median of {rounds} back-to-back pairs; CPU "
            f"per item {100 * more_cpu:+.1f} % (target <= 5 % lost: {verdict})"
        )
    cost = _stage_cost(20_000 if not quick else 4_000)
    lines.append(
        f"the two drift steps alone, every item fed: {1e6 * cost:.1f} us/item on the collector "
        f"thread = {100 * cost * without:.1f} % of an item's time at {without:,.0f} items/s"
    )
    for line in lines:
        print(f"   {line}")
    return lines


def run(quick: bool) -> list[str]:
    return part_detectors(quick) + part_pipeline(quick)
