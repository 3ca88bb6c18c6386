"""Benchmark section: recovering from a change in the input with capture → late labels → fine-tune → gate → swap.

    python benchmarks/_monitor_recovery.py [--quick]
    python benchmarks/bench_monitor.py --only recovery

The bundled digits model meets a camera whose images changed (``invert``:
light digits on dark, or ``shift``: moved two pixels right, as
:func:`fogline.examples.digits_drifting_stream` changes them). Every step is
the real one:

1. **static**: the held-out digits, changed, in ONNX Runtime: what the
   unchanged model gets right after the change (its accuracy on the
   unchanged held-out digits is the original figure, 98.99 %).
2. **capture + late labels**: a pipeline runs the model over the changed
   *training* images (1200, as the device's traffic after the change), with
   the drift stage on its input (KS against the calibration images) and
   ``capture: {when: drift.alarm}``; their labels arrive late through the
   ``labels:`` section (the stream's own, replayed behind it). The pipeline's
   live accuracy is the static model's on that traffic. ``fogline capture
   export``'s function writes the labelled captures as an ``.npz``.
3. **fine-tune + gate**: for each N, the first N labelled captures train a
   candidate, with 400 original training images replayed among them
   (``--layers all`` from the PyTorch source; and ``--layers last``, the head
   re-fitted on the ONNX model alone); the last 200 captures are the gate's held-out new
   data, the original held-out digits its forgetting check (default margins:
   +2 points, at most 1 point forgotten).
4. **swap**: a candidate that passed runs in the pipeline over the changed
   held-out digits (never trained on), with their late labels: its live
   accuracy is the recovered figure. Target: within 2 points of the original.

The held-out digits are the same images before and after the change, so
"recovered" means the same images, changed, are read as well as before.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fogline.examples import (
    DRIFT_AT,
    LABELS,
    digits_drifting_stream,
    digits_model_path,
    digits_split,
)
from fogline.monitor import FinetuneOptions, GateOptions, finetune
from fogline.pipeline import Pipeline, parse_spec, plan
from fogline.store import ResultStore, export_captures

DIGITS = digits_model_path().parent
TORCH_SOURCE = "fogline.examples.digits_torch:teacher"
#: Within how many points of the original accuracy counts as recovered.
TARGET_POINTS = 2.0
GATE_HOLDOUT = 200
REPLAY = 400


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def changed(images: np.ndarray, change: str) -> np.ndarray:
    """uint8 grey levels 0..16 changed as the drifting stream changes them."""
    if change == "invert":
        return (16 - images).astype(np.uint8)
    moved = np.zeros_like(images)
    moved[:, :, 2:] = images[:, :, :-2]
    return moved


def run_pipeline(model: Path, stream: Path, folder: Path, *, capture: bool) -> dict[str, Any]:
    """The digits pipeline over ``stream`` with its late labels; live accuracy and captures."""
    folder.mkdir(parents=True)
    postprocess: list[dict[str, Any]] = [{"type": "classify", "labels": LABELS}]
    spec: dict[str, Any] = {
        "name": "recovery",
        "sources": [{"type": "dataset", "name": "camera", "path": str(stream), "rate": 4000}],
        "preprocess": [
            {"type": "normalize", "scale": 0.0625},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
        "model": {"path": str(model), "max_batch": 32, "max_wait_ms": 5},
        "postprocess": postprocess,
        "labels": {
            "source": {"type": "delayed", "path": str(stream), "delay_s": 0.2, "rate": 4000},
            "windows": [100_000],
            "wait_s": 10,
        },
        "store": {"path": str(folder / "results.db")},
    }
    if capture:
        postprocess.append(
            {
                "type": "drift",
                "on": "input",
                "detector": "ks",
                "reference": "fogline.examples:digits_calibration",
            }
        )
        spec["capture"] = {"when": "drift.alarm"}
    checked = plan(parse_spec(spec, base=folder))
    pipeline = Pipeline(checked)
    try:
        pipeline.run()
    finally:
        pipeline.close()
        checked.model.engine.close()
    with ResultStore(folder / "results.db") as store:
        (live,) = store.accuracy((100_000,))
        exported = None
        if capture:
            exported = export_captures(store, folder / "captured.npz", labelled_only=True)
    return {"accuracy": live.accuracy, "labelled": live.labelled, "export": exported}


def sweep(change: str, quick: bool, root: Path) -> list[str]:
    X, y = digits_split("train")
    Xe, ye = digits_split("eval")
    raw_train = np.rint(X[:, 0] * 16).astype(np.uint8)
    raw_eval = np.rint(Xe[:, 0] * 16).astype(np.uint8)
    # The same change as the monitoring example's stream, which changes the held-out digits.
    assert np.array_equal(changed(raw_eval, change), digits_drifting_stream(change)[0][DRIFT_AT:])
    folder = root / change
    folder.mkdir()
    traffic, heldout = folder / "traffic.npz", folder / "heldout.npz"
    np.savez(traffic, x=changed(raw_train, change), y=y)
    np.savez(heldout, x=changed(raw_eval, change), y=ye)
    np.savez(folder / "replay.npz", pixels=X[:REPLAY], labels=y[:REPLAY])

    static = run_pipeline(DIGITS, heldout, folder / "static", capture=False)
    stream = run_pipeline(DIGITS, traffic, folder / "capture", capture=True)
    export = stream["export"]
    data = np.load(export.path)
    pixels, labels = data["pixels"], data["labels"]
    log(
        f"{change}: static model {static['accuracy']:.2%} on the changed held-out digits, "
        f"{stream['accuracy']:.2%} live on the changed traffic; {export.items} captured and labelled"
    )
    np.savez(folder / "gate.npz", pixels=pixels[-GATE_HOLDOUT:], labels=labels[-GATE_HOLDOUT:])
    pool = len(labels) - GATE_HOLDOUT
    original = 0.9899
    target = original - TARGET_POINTS / 100
    # Up to every labelled capture the gate's held-out part leaves.
    counts = [n for n in ((100, 400) if quick else (50, 100, 200, 400)) if n < pool]
    counts += [] if quick else [pool]
    lines = [
        f"recovery ({change}): static model after the change {static['accuracy']:.2%} on the "
        f"changed held-out digits (live {stream['accuracy']:.2%} over {stream['labelled']} "
        f"labelled items of traffic); original {original:.2%}, target >= {target:.2%}"
    ]
    for layers in ("all", "last"):
        first: int | None = None
        for n in counts:
            np.savez(folder / f"train-{n}.npz", pixels=pixels[:n], labels=labels[:n])
            out = folder / f"candidate-{layers}-{n}"
            started = time.perf_counter()
            result = finetune(
                DIGITS,
                str(folder / f"train-{n}.npz"),
                str(folder / "gate.npz"),
                out,
                original="fogline.examples:digits_eval",
                replay=str(folder / "replay.npz"),
                options=FinetuneOptions(
                    layers=layers, epochs=20, torch_source=TORCH_SOURCE if layers == "all" else None
                ),
                gate=GateOptions(min_gain=0.02, max_forgetting=0.01),
            )
            seconds = time.perf_counter() - started
            verdict = result.verdict
            swapped = None
            if result.passed:
                swapped = run_pipeline(out, heldout, folder / f"swap-{layers}-{n}", capture=False)
            recovered = swapped is not None and swapped["accuracy"] >= target
            if recovered and first is None:
                first = n
            log(
                f"{change} layers={layers} N={n}: gate {'passed' if result.passed else 'FAILED'} "
                f"(gate set {verdict.holdout[0]:.2%} -> {verdict.holdout[1]:.2%}, original "
                f"{verdict.original[0]:.2%} -> {verdict.original[1]:.2%}); after the swap "
                + ("-" if swapped is None else f"{swapped['accuracy']:.2%}")
                + f" on the changed held-out digits ({seconds:.1f} s)"
            )
            lines.append(
                f"  layers={layers:4} N={n:4}: gate {'pass' if result.passed else 'FAIL'} "
                f"(new data {verdict.holdout[0]:.2%} -> {verdict.holdout[1]:.2%}, forgot "
                f"{verdict.forgetting * 100:+.2f} pts), after swap "
                + ("   -" if swapped is None else f"{swapped['accuracy']:.2%}")
                + (" RECOVERED" if recovered else "")
            )
        lines.append(
            f"  layers={layers}: "
            + (
                f"back within {TARGET_POINTS:g} points of the original after {first} labelled items"
                if first is not None
                else f"not back within {TARGET_POINTS:g} points with up to {counts[-1]} labelled items"
            )
        )
    return lines


def run(quick: bool) -> list[str]:
    import torch

    # The digits network is tiny: one thread trains it as fast as two, and on a shared,
    # busy machine two threads waiting on each other's barriers take minutes instead.
    torch.set_num_threads(1)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fogline-recovery-") as tmp:
        for change in ("invert",) if quick else ("invert", "shift"):
            lines += sweep(change, quick, Path(tmp))
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one change, two counts")
    args = parser.parse_args()
    run(args.quick)
