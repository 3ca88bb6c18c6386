"""Architecture search on the bundled shapes detector: a network within 0.02 mAP@0.5 of the
current one at no more than half its latency.

The current detector is the committed ``fogline/examples/shapes/model.onnx`` (width 16,
depth 2, 3x3 kernels, 64x64 input; 20 epochs on the 3000 training scenes). Its latency
here, through the same Engine and timing the search uses, sets the budget: half of it.
The search trains a seeded sample of :data:`fogline.examples.shapes_torch.family`'s grid
for a short schedule each, ranks them on a fifth of the training scenes held out (the
search never sees the held-out scenes) and times every candidate; the chosen one (the best
mAP inside the budget) is then trained from scratch on the baseline's own schedule and compared
with the baseline: mAP@0.5 on the 500 held-out scenes, and latency timed in alternating
rounds with the baseline's so both see the same load.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fogline.data import Dataset
from fogline.model import EngineOptions, load_engine, measure, torch_to_onnx

TARGET_MAP_DROP = 0.02
TARGET_LATENCY_RATIO = 0.5
BATCH = 1
THREADS = 1
BASELINE_EPOCHS = 20  # examples/shapes_detector/train.py
#: Every engine here on ONNX Runtime's CPU provider, as the search times its candidates.
CPU = EngineOptions(threads=THREADS, providers=("CPUExecutionProvider",))


def _data(split: str, count: int | None = None) -> Dataset:
    from fogline.examples import shapes_split

    images, labels = shapes_split(split)
    images, labels = images[:count], labels[:count]
    batches = tuple(
        {"images": np.ascontiguousarray(images[i : i + 64])} for i in range(0, len(images), 64)
    )
    return Dataset(f"shapes {split}", batches, labels)


def _latency(paths: list[Path], feeds: list[dict[str, np.ndarray]], rounds: int) -> list[float]:
    """p50 ms of each model, the median over ``rounds`` alternating timings (same load for all)."""
    engines = [load_engine(p, options=CPU) for p in paths]
    try:
        samples: list[list[float]] = [[] for _ in engines]
        order = list(zip(engines, feeds, samples, strict=True))
        for round_ in range(rounds):
            for engine, feed, out in order if round_ % 2 == 0 else order[::-1]:
                out.append(measure(engine, feed, batch=BATCH, duration_s=0.5).p50)
        return [statistics.median(s) for s in samples]
    finally:
        for engine in engines:
            engine.close()


def _progress(label: str, done: int, total: int) -> None:
    if done < total:
        print(f"  [{done + 1}/{total}] {label}", flush=True)


def run(quick: bool) -> list[str]:
    try:
        import torch

        from fogline.examples import shapes_model_path
        from fogline.examples.shapes_torch import BASELINE, engine_map50, family
        from fogline.optimize import NasOptions, OptimizeOptions, nas_search
    except ImportError as exc:
        print(f"shapes NAS: skipped ({exc})")
        return [f"shapes NAS: skipped ({exc})"]
    sample, epochs, train_count, final_epochs = (
        (6, 1, 1000, 2) if quick else (16, 3, None, BASELINE_EPOCHS)
    )
    train, held = _data("train", train_count), _data("eval")
    held_images, held_labels = held.array("images"), list(held.labels)
    print(
        f"shapes NAS: {'quick: ' if quick else ''}{train.size} training scenes, {held.size} held out"
    )

    baseline_path = shapes_model_path()
    baseline_feed = {"images": held_images[:BATCH]}
    (baseline_ms,) = _latency([baseline_path], [baseline_feed], rounds=3)
    engine = load_engine(baseline_path, options=CPU)
    baseline_map = engine_map50(engine, held_images, held_labels, BASELINE["resolution"])
    engine.close()
    budget = baseline_ms * TARGET_LATENCY_RATIO
    print(
        f"  baseline {BASELINE}: mAP@0.5 {baseline_map:.4f}, p50 {baseline_ms:.3f} ms; budget {budget:.3f} ms"
    )

    started = time.perf_counter()
    result = nas_search(
        family,
        train,
        None,  # candidates ranked on a split of the training scenes: the held-out ones judge only the end
        NasOptions(
            latency_budget_ms=budget, epochs=epochs, final_epochs=final_epochs, sample=sample
        ),
        OptimizeOptions(threads=THREADS, batches=(BATCH,), duration_s=0.5),
        name="shapes",
        progress=_progress,
    )
    search_s = time.perf_counter() - started
    lines = [f"shapes NAS: {result.describe()}; search {search_s:.0f} s"]
    print("  Pareto front (mAP@0.5 after the short schedule, p50 latency):")
    for c in result.front:
        flag = " (chosen)" if c.chosen else ""
        line = f"front: {c.label}: mAP@0.5 {c.metric:.4f}, {c.latency_ms:.3f} ms, {c.params} params{flag}"
        print(f"    {line}")
        lines.append(f"shapes NAS {line}")
    chosen = result.chosen
    if chosen is None:
        fastest = result.fastest()
        lines.append(
            f"shapes NAS: FAIL: no candidate within {budget:.3f} ms"
            + (f" (fastest {fastest.label}: {fastest.latency_ms:.3f} ms)" if fastest else "")
        )
        return lines

    print(f"  training {chosen.label} from scratch for {final_epochs} epochs", flush=True)
    torch.manual_seed(0)
    net = family.build(chosen.knobs)
    family.fit(net, train, chosen.knobs, epochs=final_epochs, seed=0)
    with tempfile.TemporaryDirectory(prefix="fogline-nas-shapes-") as tmp:
        path = torch_to_onnx(
            net.eval(),
            family.example_input(chosen.knobs),
            Path(tmp) / "chosen.onnx",
            input_names=["images"],
            output_names=["detections"],
        )
        side = int(chosen.knobs["resolution"])
        engine = load_engine(path, options=CPU)
        chosen_map = engine_map50(engine, held_images, held_labels, side)
        engine.close()
        chosen_feed = {"images": family.prepare(held.limit(BATCH), chosen.knobs).array("images")}
        baseline_ms, chosen_ms = _latency(
            [baseline_path, path], [baseline_feed, chosen_feed], rounds=3 if quick else 7
        )
    drop, ratio = baseline_map - chosen_map, chosen_ms / baseline_ms
    verdict = "PASS" if drop <= TARGET_MAP_DROP and ratio <= TARGET_LATENCY_RATIO else "FAIL"
    lines.append(
        f"shapes NAS chosen {chosen.label} ({final_epochs} epochs): mAP@0.5 {chosen_map:.4f} vs "
        f"{baseline_map:.4f} (drop {drop:+.4f}, target <= {TARGET_MAP_DROP}), latency "
        f"{chosen_ms:.3f} vs {baseline_ms:.3f} ms (x{ratio:.2f}, target <= {TARGET_LATENCY_RATIO}): "
        f"{verdict}"
        + (
            ""
            if final_epochs == BASELINE_EPOCHS
            else f" [quick: {final_epochs} epochs, not the baseline's {BASELINE_EPOCHS}]"
        )
    )
    print(f"  {lines[-1]}")
    return lines


if __name__ == "__main__":  # the section alone: python benchmarks/_nas_shapes.py [--quick]
    import sys

    for result_line in run("--quick" in sys.argv[1:]):
        print(result_line)
