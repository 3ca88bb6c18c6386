"""The foundation's performance claims, measured in one run on this machine.

    python benchmarks/bench_optimize.py [--threads 2] [--quick]

1. MobileNetV2 (random convolutions, a linear head trained to tell apart
   the photographs that scikit-image ships): FP32 against static INT8
   throughput at batch 8, and file sizes.
2. What ``fogline optimize`` selects, against ONNX Runtime FP32 at batch 1,
   for that model and for a YOLO-style detector, with agreement figures.
3. ``Engine.run`` against a bare ``InferenceSession.run`` at batch 1.
4. The digits example: INT8 accuracy against FP32.
5. Energy per inference of every variant at batch 1 beside the FP32
   baseline's (the anchor), measured (RAPL, NVML) where the machine
   exposes its counters, else estimated from CPU time: each line says which.

Speed ratios are measured interleaved (A, B, A, B, … for several rounds,
median of each) so that a noisy neighbour hits both sides alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from models import mobilenet_v2, photo_crops, settle_batchnorm, yolo_style

from fogline.examples import digits_model_path
from fogline.model import EngineOptions, load_engine, time_calls, torch_to_onnx
from fogline.optimize import Dataset, OptimizeOptions, Report, load_dataset, optimize

PHOTOS = 7  # photo_crops cycles through seven bundled photographs: the classes


def interleaved(
    calls: dict[str, Callable[[], object]], batch: int, rounds: int, seconds: float
) -> dict[str, float]:
    """Median items/s of each call, measured in alternating rounds."""
    rates: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls.items())
    for round_index in range(rounds):
        # A B, then B A: whoever runs second in a round must not always be the same one.
        for name, call in order if round_index % 2 == 0 else reversed(order):
            stats = time_calls(call, batch=batch, warmup=3, duration_s=seconds, min_runs=5)
            rates[name].append(stats.throughput)
    return {name: float(np.median(values)) for name, values in rates.items()}


def train_head(model: torch.nn.Sequential, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Fit the last linear layer on frozen features: a real classification with margins."""
    with torch.no_grad():
        features = model[:-1](images)
    head: torch.nn.Linear = model[-1]
    head.reset_parameters()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(head(features), labels).backward()
        optimizer.step()


def build_models(folder: Path, quick: bool) -> dict[str, tuple[Path, Dataset, Dataset]]:
    torch.manual_seed(0)
    n_train, n_eval = (96, 96) if quick else (224, 315)
    crops = photo_crops(n_train + n_eval, 224)
    labels = torch.arange(n_train + n_eval) % PHOTOS
    mobilenet = mobilenet_v2(num_classes=PHOTOS)
    settle_batchnorm(mobilenet, crops[:64])
    train_head(mobilenet, crops[:n_train], labels[:n_train])
    mnv2 = torch_to_onnx(
        mobilenet,
        crops[:2],
        folder / "mobilenet_v2.onnx",
        input_names=["images"],
        output_names=["logits"],
    )
    x = crops.numpy()
    mnv2_cal = Dataset("crops", tuple({"images": x[i : i + 8]} for i in range(0, 64, 8)))
    mnv2_eval = Dataset(
        "crops",
        tuple({"images": x[i : i + 35]} for i in range(n_train, len(x), 35)),
        labels[n_train:].numpy(),
    )

    det_images = photo_crops(64 if quick else 96, 320, seed=1)
    detector = yolo_style()
    settle_batchnorm(detector, det_images[:32])
    det = torch_to_onnx(
        detector,
        det_images[:2],
        folder / "yolo_style.onnx",
        input_names=["images"],
        output_names=["scores", "boxes"],
    )
    d = det_images.numpy()
    det_cal = Dataset("crops", tuple({"images": d[i : i + 8]} for i in range(0, 32, 8)))
    det_eval = Dataset("crops", tuple({"images": d[i : i + 8]} for i in range(32, len(d), 8)))
    return {"mobilenet_v2": (mnv2, mnv2_cal, mnv2_eval), "yolo_style": (det, det_cal, det_eval)}


def run_optimize(
    name: str, model: Path, cal: Dataset, ev: Dataset, out: Path, threads: int, duration: float
) -> Report:
    started = time.perf_counter()
    report = optimize(
        model,
        cal,
        ev,
        out,
        OptimizeOptions(threads=threads, duration_s=duration),
        progress=lambda step, done, total: print(
            f"  [{name}] {done}/{total} {step}", file=sys.stderr, flush=True
        ),
    )
    print(f"  optimize {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return report


def energy_line(name: str, report: Report) -> tuple[str, dict[str, object]]:
    """Joules per inference of each variant at batch 1 beside the FP32 baseline's."""
    base = report.variant(report.baseline).joules_per_item or 0.0
    per_variant = {
        v.name: v.joules_per_item
        for v in report.variants
        if v.status == "ok" and v.joules_per_item is not None
    }
    cells = ", ".join(
        f"{variant} {1000 * joules:.3f} mJ ({joules / base:.2f}x)" if base else variant
        for variant, joules in per_variant.items()
        if variant != report.baseline
    )
    line = (
        f"{name} energy per inference, batch 1, {report.energy_text()}: "
        f"{report.baseline} {1000 * base:.3f} mJ (anchor); {cells}"
    )
    return line, {"label": report.energy_text(), "joules_per_item": per_variant}


def session_call(path: Path, threads: int, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feeds)


def engine_call(
    path: Path, backend: str, precision: str, threads: int, feeds: dict[str, np.ndarray]
) -> Callable[[], object]:
    engine = load_engine(
        path, backend=backend, options=EngineOptions(threads=threads, precision=precision)
    )
    return lambda: engine.run(feeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and images")
    args = parser.parse_args()
    rounds, seconds, duration = (3, 0.5, 0.5) if args.quick else (7, 1.0, 1.0)
    threads = args.threads
    results: dict[str, object] = {"threads": threads, "onnxruntime": ort.__version__}
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = build_models(folder, args.quick)
        reports = {
            name: run_optimize(name, path, cal, ev, folder / f"out-{name}", threads, duration)
            for name, (path, cal, ev) in models.items()
        }

        # 1. FP32 against static INT8 at batch 8 (MobileNetV2).
        mnv2 = reports["mobilenet_v2"]
        out = folder / "out-mobilenet_v2"
        fp32 = mnv2.variant("ort-fp32")
        statics = [
            v
            for v in mnv2.variants
            if v.name.startswith(("ort-int8-static", "ort-int8-mixed")) and v.status == "ok"
        ]
        int8 = max(statics, key=lambda v: v.throughput)
        batch8 = {
            "images": np.ascontiguousarray(models["mobilenet_v2"][2].batches[0]["images"][:8])
        }
        rates = interleaved(
            {
                "fp32": engine_call(out / fp32.file, "onnxruntime", "fp32", threads, batch8),
                "int8": engine_call(out / int8.file, "onnxruntime", "int8", threads, batch8),
            },
            8,
            rounds,
            seconds,
        )
        speedup8 = rates["int8"] / rates["fp32"]
        size_ratio = int8.size_bytes / fp32.size_bytes
        lines.append(
            f"MobileNetV2 batch 8, {threads} threads: FP32 {rates['fp32']:.1f} items/s, "
            f"{int8.name} {rates['int8']:.1f} items/s -> {speedup8:.2f}x "
            f"(target >= 1.6x)"
        )
        lines.append(
            f"MobileNetV2 size: FP32 {fp32.size_bytes / 1e6:.2f} MB, INT8 "
            f"{int8.size_bytes / 1e6:.2f} MB -> {100 * size_ratio:.0f}% (target <= 30%)"
        )
        results["int8_vs_fp32_batch8"] = {
            "fp32": rates["fp32"],
            "int8": rates["int8"],
            "speedup": speedup8,
            "size_ratio": size_ratio,
            "variant": int8.name,
        }

        # 2. The selected variant against ONNX Runtime FP32 at batch 1.
        for name, report in reports.items():
            chosen = report.variant(report.selected)
            base = report.variant("ort-fp32")
            out = folder / f"out-{name}"
            one = {"images": np.ascontiguousarray(models[name][2].batches[0]["images"][:1])}
            rates = interleaved(
                {
                    "fp32": session_call(out / base.file, threads, one),
                    "selected": engine_call(
                        out / chosen.file, chosen.engine, chosen.precision, threads, one
                    ),
                },
                1,
                rounds,
                seconds,
            )
            speedup = rates["selected"] / rates["fp32"]
            agree = chosen.agreement.to_dict() if chosen.agreement else {}
            acc = (
                f", accuracy {chosen.accuracy:.2f}% vs FP32 {base.accuracy:.2f}%"
                if chosen.accuracy is not None and base.accuracy is not None
                else ""
            )
            lines.append(
                f"{name}: optimize selected {chosen.name}; batch 1 {1000 / rates['selected']:.2f} "
                f"ms vs ORT FP32 {1000 / rates['fp32']:.2f} ms -> {speedup:.2f}x (target >= 1.5x); "
                f"top-1 agreement {agree.get('top1')}%, max abs err {agree.get('max_abs')}{acc}"
            )
            results[f"selected_{name}"] = {
                "variant": chosen.name,
                "speedup": speedup,
                "agreement": agree,
                "accuracy": chosen.accuracy,
                "fp32_accuracy": base.accuracy,
                "criterion": report.settings.get("criterion"),
            }
            others = ", ".join(
                f"{v.name} {v.p50:.2f} ms {v.budget_reason}"
                for v in report.variants
                if v.status == "ok"
            )
            print(f"  {name} variants: {others}", file=sys.stderr)

        # 5. Energy per inference of each variant beside the FP32 baseline's.
        for name, report in reports.items():
            line, figures = energy_line(name, report)
            lines.append(line)
            results[f"energy_{name}"] = figures

        # 3. Engine.run against a bare InferenceSession.run, batch 1, same file.
        path = folder / "out-mobilenet_v2" / fp32.file
        one = {"images": np.ascontiguousarray(models["mobilenet_v2"][2].batches[0]["images"][:1])}
        rates = interleaved(
            {
                "bare": session_call(path, threads, one),
                "engine": engine_call(path, "onnxruntime", "fp32", threads, one),
            },
            1,
            rounds * 2,
            seconds,
        )
        overhead = 100.0 * (rates["bare"] / rates["engine"] - 1.0)
        lines.append(
            f"Engine.run overhead vs bare InferenceSession.run, MobileNetV2 batch 1: "
            f"{overhead:+.2f}% (target <= 3%)"
        )
        results["engine_overhead_pct"] = overhead

    # 4. Digits: INT8 accuracy within one point of FP32.
    with tempfile.TemporaryDirectory() as tmp:
        signature = load_engine(digits_model_path()).signature
        report = optimize(
            digits_model_path(),
            load_dataset("fogline.examples:digits_calibration", signature),
            load_dataset("fogline.examples:digits_eval", signature),
            Path(tmp) / "digits",
            OptimizeOptions(threads=threads, duration_s=duration / 2, sensitivity=False),
        )
        base = report.variant("ort-fp32")
        int8s = [
            v
            for v in report.variants
            if v.precision == "int8" and v.status == "ok" and v.engine == "onnxruntime"
        ]
        worst = min(int8s, key=lambda v: v.accuracy or 0.0)
        chosen = report.variant(report.selected)
        lines.append(
            f"digits: FP32 accuracy {base.accuracy:.2f}%, ONNX Runtime INT8 variants "
            f"{min(v.accuracy or 0 for v in int8s):.2f}..{max(v.accuracy or 0 for v in int8s):.2f}% "
            f"(worst drop {(base.accuracy or 0) - (worst.accuracy or 0):.2f} pt, target <= 1 pt); "
            f"selected {chosen.name} at {chosen.accuracy:.2f}%"
        )
        line, figures = energy_line("digits", report)
        lines.append(line)
        results["energy_digits"] = figures
        results["digits"] = {
            "fp32": base.accuracy,
            "int8": {v.name: v.accuracy for v in int8s},
            "selected": chosen.name,
        }

    print("\n".join(lines))
    print(json.dumps(results, indent=2, default=float), file=sys.stderr)


if __name__ == "__main__":
    main()
