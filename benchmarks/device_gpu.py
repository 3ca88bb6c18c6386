"""The GPU variant search on MobileNetV2 and the YOLO-style detector, for ``device_gpu.sh``.

    python benchmarks/device_gpu.py OUT_FOLDER [--duration 0.5]

Builds the two reference networks of ``bench_optimize.py`` (its quick
settings), runs ``fogline optimize``'s search on each with the FP32 CPU
baseline, ORT FP16 on the CPU and every GPU variant this machine offers
(CUDA FP32/FP16, TensorRT FP16/INT8 where TensorRT is installed), and prints
one line per variant: where it ran, its speed, its agreement with FP32 and the
verdict. Each search's report.json is copied to ``OUT_FOLDER/optimize-NAME.json``
and the selected model stays in ``/tmp/fogline-gpu/NAME`` for ``fogline bench``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import onnxruntime as ort
from bench_optimize import build_models

from fogline.model import gpu_name, tensorrt_version
from fogline.optimize import OptimizeOptions, optimize

WORK = Path("/tmp/fogline-gpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--duration", type=float, default=0.5, help="seconds per batch size")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"onnxruntime {ort.__version__} providers {', '.join(ort.get_available_providers())}; "
        f"GPU {gpu_name(0)}; TensorRT {tensorrt_version()}",
        flush=True,
    )
    WORK.mkdir(parents=True, exist_ok=True)
    models = build_models(WORK, quick=True)
    for name, (model, calibration, evaluation) in models.items():
        started = time.perf_counter()
        options = OptimizeOptions(
            variants=("ort-fp16", "cuda-*", "tensorrt-*"),
            duration_s=args.duration,
            sensitivity=False,
            batches=(1, 8),
        )
        out = WORK / name
        report = optimize(
            model,
            calibration,
            evaluation,
            out,
            options,
            progress=lambda step, done, total, n=name: print(
                f"  [{n}] {done}/{total} {step}", file=sys.stderr, flush=True
            ),
        )
        took = time.perf_counter() - started
        print(f"\n{name}: selected {report.selected} ({report.speedup_text()}), {took:.0f} s")
        for v in report.variants:
            if v.status != "ok":
                print(f"  {v.name:<16} FAILED {v.error}")
                continue
            agree = f"top-1 {v.agreement.top1:.1f}%" if v.agreement else ""
            print(
                f"  {v.name:<16} {v.device:<27} p50 b1 {v.p50:8.3f} ms  "
                f"b8 {v.throughput:9.1f} items/s  {agree:<13} {v.budget_reason}"
            )
        for skipped, reason in report.skipped.items():
            if "not selected" not in reason:
                print(f"  skipped {skipped}: {reason}")
        shutil.copyfile(out / "report.json", args.out / f"optimize-{name}.json")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
