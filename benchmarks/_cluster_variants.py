"""A step in load from half to twice capacity: SLO violations with variant switching, against one variant.

The model is MobileNetV2 (width 1.0, 224x224, 1000 classes; ``models.py``)
and its cheaper variant the same network at width 0.35 (a student's size:
about a fifth of the multiply-adds), both exported to ONNX with random
weights (speed is what is measured here, not accuracy), each run by ONNX
Runtime on one thread. First the capacity ``C`` of the pipeline on the
full model is measured (unpaced items, the same run). Then the same pipeline
is run twice against the same open-loop load: ``C/2`` items a second, then
``2C``, then ``C/2`` again; once on the full model alone, once with both
variants and a policy (p99 over the SLO, or the queue over 8, for 1 s: one
step down; every signal inside 0.6 of its limit and the load inside 0.6 of the
full model's measured capacity for 3 s: one step up).

An item's latency is measured from the moment the load schedule released it
(not from when the pipeline got round to reading it), to the moment its
result was stored; an item over the SLO is a violation.

    python benchmarks/bench_cluster.py --only variants [--quick]
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

SIZE = 224
SLO_S = 0.25  # one of the histogram's bucket bounds, so violations are counted exactly


def _mobilenet(width: float) -> Any:
    """MobileNetV2 at a width multiplier (models.py's), in inference mode for the export."""
    import models

    return models.mobilenet_v2(num_classes=1000, width=width).eval()


def _export(folder: Path) -> dict[str, Path]:
    import torch

    from fogline.model import torch_to_onnx

    torch.manual_seed(0)
    sample = torch.zeros(1, 3, SIZE, SIZE)
    return {
        name: torch_to_onnx(
            _mobilenet(width),
            sample,
            folder / f"{name}.onnx",
            input_names=["image"],
            output_names=["logits"],
        )
        for name, width in (("mobilenetv2-1.0", 1.0), ("mobilenetv2-0.35", 0.35))
    }


def _step_source_spec() -> Any:
    """A source spec for this benchmark: items released on an open-loop schedule of rates."""
    from fogline.pipeline import ArraySpec, Item, SourceSpec

    class StepSource:
        def __init__(self, name: str, phases: list[tuple[float, float]]) -> None:
            self.name, self.phases = name, phases
            rng = np.random.default_rng(0)
            self.images = rng.random((16, 3, SIZE, SIZE), dtype=np.float32)

        def read(self, stop: threading.Event) -> Iterator[Item]:
            start = time.monotonic()
            due, sequence, phase_start = start, 0, start
            for rate, seconds in self.phases:
                end = phase_start + seconds
                while due < end:
                    wait = due - time.monotonic()
                    if wait > 0 and stop.wait(wait):
                        return
                    item = Item(self.name, sequence, time.time(), self.images[sequence % 16])
                    item.t0 = due  # released now by the schedule, whenever the pipeline reads it
                    yield item
                    sequence += 1
                    due += 1.0 / rate
                phase_start = end

    class StepSpec(SourceSpec):
        type: Literal["step"] = "step"  # type: ignore[assignment]
        phases: list[tuple[float, float]]  # (items per second, seconds)
        live: ClassVar[bool] = False

        def output(self) -> ArraySpec:
            return ArraySpec((3, SIZE, SIZE), "float32")

        def build(self, name: str) -> StepSource:  # type: ignore[override]
            return StepSource(name, self.phases)

    return StepSpec


def _run(
    folder: Path, model: dict[str, Any], phases: list[tuple[float, float]], max_items: int | None
) -> tuple[Any, dict[float, float], Any]:
    """One pipeline run; its snapshot, the end-to-end histogram (bound → cumulative), variants."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families

    from fogline.pipeline import Pipeline, parse_spec, plan

    spec = parse_spec(
        {
            "name": "step",
            "sources": [{"type": "synthetic", "shape": [3, SIZE, SIZE]}],
            "model": {**model, "max_batch": 4, "max_wait_ms": 5, "threads": 1},
            "store": False,
        },
        base=folder,
    )
    step = _step_source_spec()(phases=phases, queue=16)
    spec = spec.model_copy(update={"sources": [step]})
    checked = plan(spec)
    runner = Pipeline(checked)
    registry = CollectorRegistry()
    registry.register(runner.metrics.prometheus_collector("step"))
    try:
        snapshot = runner.run(max_items=max_items)
    finally:
        runner.close()
        checked.model.engine.close()
    from prometheus_client import generate_latest

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("stage") == "end_to_end":
                buckets[float(sample.labels["le"])] = sample.value
    return snapshot, buckets, snapshot.extra.get("variants")


def run(quick: bool) -> list[str]:
    import logging

    logging.getLogger("fogline").setLevel(logging.WARNING)
    folder = Path(tempfile.mkdtemp(prefix="fogline-variants-"))
    print("variants: exporting MobileNetV2 at width 1.0 and 0.35 (224x224, random weights)")
    files = _export(folder)
    full, student = files["mobilenetv2-1.0"], files["mobilenetv2-0.35"]
    fixed = {"path": str(full)}
    # Capacity: unpaced items through the full model (the feeder always has one ready).
    count = 120 if quick else 400
    snapshot, _, _ = _run(folder, fixed, [(1e6, 3600.0)], count)
    capacity = snapshot.throughput
    print(f"  capacity on {full.stem}: {capacity:.1f} items/s ({count} unpaced items)")
    snapshot, _, _ = _run(folder, {"path": str(student)}, [(1e6, 3600.0)], count)
    student_capacity = snapshot.throughput
    print(f"  capacity on {student.stem}: {student_capacity:.1f} items/s")
    calm, busy = (4.0, 8.0) if quick else (15.0, 30.0)
    phases = [(capacity / 2, calm), (capacity * 2, busy), (capacity / 2, calm * 2)]
    shown = " → ".join(f"{rate:.0f}/s for {seconds:g} s" for rate, seconds in phases)
    print(f"  load: {shown}; SLO {SLO_S * 1000:.0f} ms end to end")
    policy = {
        "slo_p99_ms": SLO_S * 1000,
        "max_queue": 8,
        "window_s": 2,
        "down_after_s": 1,
        "up_after_s": 3,
        "margin": 0.6,
    }
    switching = {
        "variants": [
            {"name": "full", "path": str(full)},
            {"name": "student", "path": str(student)},
        ],
        "policy": policy,
    }
    rows = {}
    for label, model in (("one variant", fixed), ("switching", switching)):
        snapshot, buckets, board = _run(folder, model, phases, None)
        total = snapshot.total("processed")
        late = total - buckets.get(SLO_S, 0.0)
        lost = snapshot.total("produced") - total
        e2e = snapshot.stages.get("end_to_end")
        rows[label] = (total, late, lost, e2e.p99 if e2e else float("nan"), board)
        served = f", {board.describe()}" if board is not None else ""
        print(
            f"  {label}: {total:,} processed, {late:,.0f} over the SLO ({late / total:.1%}), "
            f"{lost} not processed, p99 {rows[label][3] * 1000:.0f} ms{served}"
        )
        if board is not None:
            for switch in board.switches:
                print(f"    {switch.describe()}")
    one, sw = rows["one variant"], rows["switching"]
    ratio = one[1] / sw[1] if sw[1] else float("inf")
    return [
        f"variants: step {capacity / 2:.0f} → {capacity * 2:.0f} → {capacity / 2:.0f} items/s "
        f"(capacity {capacity:.0f}/s on MobileNetV2-1.0, {student_capacity:.0f}/s on the 0.35 "
        f"student; 1 ORT thread), SLO {SLO_S * 1000:.0f} ms: items over the SLO "
        f"{sw[1]:,.0f} of {sw[0]:,} switching vs {one[1]:,.0f} of {one[0]:,} on one variant "
        f"({ratio:.1f}x fewer; INFaaS anchor: 1.6x); p99 {sw[3] * 1000:.0f} vs "
        f"{one[3] * 1000:.0f} ms; {len(sw[4].switches) if sw[4] else 0} switches, "
        f"items dropped {sw[2]} vs {one[2]}",
    ]


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    for line in run("--quick" in sys.argv):
        print(line)
