"""The optimization report: ``report.json`` for tools, ``report.html`` for people.

The HTML page holds the variant table and a plot of accuracy (or agreement
with FP32) against batch-1 latency, so the trade-off is seen at a glance;
after an architecture search, also every candidate and the Pareto front.
"""

from __future__ import annotations

import html
import json
import os
import platform
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fogline.optimize._measure import Agreement, Budget
from fogline.optimize._nas_report import nas_html
from fogline.optimize._nas_result import NasResult
from fogline.optimize._svg import svg_of

if TYPE_CHECKING:
    from fogline.optimize._search import OptimizeOptions


@dataclass
class VariantResult:
    """One variant: how it was built and what it measured."""

    name: str
    engine: str
    precision: str
    notes: str = ""
    status: str = "ok"
    error: str | None = None
    file: str = ""
    size_bytes: int = 0
    timings: dict[str, Any] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    memory_growth_mb: float = 0.0
    accuracy: float | None = None
    accuracy_drop: float | None = None
    agreement: Agreement | None = None
    within_budget: bool = False
    budget_reason: str = ""
    faster_than_baseline: bool = False
    confirmed_speedup: float | None = None
    selected: bool = False
    excluded_nodes: list[str] = field(default_factory=list)
    #: The execution providers asked for (ONNX Runtime), the one that ran it, and the GPU
    #: provider asked for that did not start (then the variant failed), if any.
    providers: list[str] = field(default_factory=list)
    device: str = ""
    fallback: str | None = None

    def failed(self, error: str) -> VariantResult:
        self.status, self.error = "failed", error.strip().splitlines()[0][:500]
        return self

    @property
    def p50(self) -> float:
        return self._first_latency("p50")

    @property
    def p99(self) -> float:
        return self._first_latency("p99")

    def _first_latency(self, key: str) -> float:
        by_batch: dict[str, dict[str, float]] = self.timings.get("latency_ms", {})
        first = next(iter(by_batch.values()), {})
        return float(first.get(key, 0.0))

    @property
    def throughput(self) -> float:
        values = list(self.timings.get("throughput", {}).values())
        return float(values[-1]) if values else 0.0

    @property
    def joules_per_item(self) -> float | None:
        """Joules per inference at the first batch size (None: not metered)."""
        values = list(self.timings.get("energy", {}).get("joules_per_item", {}).values())
        return float(values[0]) if values else None

    @property
    def energy_label(self) -> str:
        """``measured (RAPL package-0)`` or ``estimated (CPU time x 10 W per core)``; or empty."""
        return str(self.timings.get("energy", {}).get("label", ""))

    @property
    def energy_kind(self) -> str:
        """``measured`` or ``estimated``; empty when not metered."""
        energy = self.timings.get("energy") or {}
        if "measured" not in energy:
            return ""
        return "measured" if energy["measured"] else "estimated"

    def judge(self, baseline: VariantResult | None, budget: Budget) -> None:
        """Decide whether this variant stays inside the accuracy budget."""
        if baseline is None or baseline is self:
            self.accuracy_drop = 0.0 if self.accuracy is not None else None
            self.within_budget, self.budget_reason = True, "baseline"
            return
        agree = self.agreement
        reasons = []
        if self.accuracy is not None and baseline.accuracy is not None:
            self.accuracy_drop = round(baseline.accuracy - self.accuracy, 3)
        if budget.criterion == "accuracy" and self.accuracy_drop is not None:
            if self.accuracy_drop > budget.max_drop:
                reasons.append(
                    f"accuracy drop {self.accuracy_drop:.2f} pt > {budget.max_drop:g} pt"
                )
        elif budget.criterion == "top1":
            drop = 100.0 - agree.top1 if agree else 100.0
            if drop > budget.max_drop:
                reasons.append(f"top-1 disagreement {drop:.2f} pt > {budget.max_drop:g} pt")
        max_abs = budget.max_abs_error
        if max_abs is not None and (agree is None or agree.max_abs > max_abs):
            err = agree.max_abs if agree else float("inf")
            reasons.append(f"max abs error {err:.4g} > {max_abs:g}")
        max_rel = budget.max_rel_error
        if max_rel is not None and (agree is None or agree.max_rel > max_rel):
            err = agree.max_rel if agree else float("inf")
            reasons.append(f"max error {100 * err:.2f}% of output range > {100 * max_rel:g}%")
        self.within_budget = not reasons
        self.budget_reason = "; ".join(reasons) or "within budget"

    def summary(self) -> dict[str, Any]:
        return {
            "latency_ms": {"p50": self.p50, "p99": self.p99},
            "throughput": self.throughput,
            "joules_per_item": self.joules_per_item,
            "accuracy": self.accuracy,
            "agreement": self.agreement.to_dict() if self.agreement else None,
        }

    def to_dict(self) -> dict[str, Any]:
        latency = dict(self.timings.get("latency_ms", {}))
        return {
            "name": self.name,
            "engine": self.engine,
            "precision": self.precision,
            "device": self.device,
            "fallback": self.fallback,
            "providers": self.providers,
            "status": self.status,
            "error": self.error,
            "file": self.file,
            "size_bytes": self.size_bytes,
            "latency_ms": {"p50": self.p50, "p99": self.p99, **latency},
            "throughput": self.throughput,
            "throughput_by_batch": self.timings.get("throughput", {}),
            "joules_per_item": self.joules_per_item,
            "energy": self.timings.get("energy") or None,
            "peak_memory_mb": self.peak_memory_mb,
            "memory_growth_mb": self.memory_growth_mb,
            "accuracy": None if self.accuracy is None else round(self.accuracy, 3),
            "accuracy_drop": self.accuracy_drop,
            "agreement": self.agreement.to_dict() if self.agreement else None,
            "within_budget": self.within_budget,
            "budget": self.budget_reason,
            "faster_than_baseline": self.faster_than_baseline,
            "confirmed_speedup": self.confirmed_speedup,
            "selected": self.selected,
            "excluded_nodes": self.excluded_nodes,
            "notes": self.notes,
        }


@dataclass
class Report:
    """What ``fogline optimize`` found; ``selected`` names the winning variant."""

    model: str
    selected: str
    baseline: str
    variants: list[VariantResult]
    skipped: dict[str, str]
    settings: dict[str, Any]
    machine: dict[str, Any]
    created: str
    #: The architecture search the model came from (``fogline optimize --nas``), if any.
    nas: NasResult | None = None

    @classmethod
    def build(
        cls,
        model: Path,
        selected: VariantResult,
        baseline: VariantResult,
        results: list[VariantResult],
        skipped: dict[str, str],
        options: OptimizeOptions,
        budget: Budget,
        *,
        on_gpu: bool = False,
    ) -> Report:
        import onnxruntime

        machine: dict[str, Any] = {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "onnxruntime": onnxruntime.__version__,
            "providers": onnxruntime.get_available_providers(),
        }
        if on_gpu:
            from fogline.model import gpu_name, tensorrt_version

            machine["gpu"] = gpu_name(0)
            machine["tensorrt"] = tensorrt_version()
        try:
            import openvino

            machine["openvino"] = openvino.__version__
        except ImportError:
            pass
        settings = {
            "max_accuracy_drop": options.max_accuracy_drop,
            "max_abs_error": budget.max_abs_error,
            "max_rel_error": budget.max_rel_error,
            "criterion": budget.criterion,
            "objective": options.objective,
            "threads": options.threads,
            "batches": list(options.batches),
            "calibration_size": options.calibration_size,
        }
        return cls(
            str(model),
            selected.name,
            baseline.name,
            results,
            skipped,
            settings,
            machine,
            datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )

    def variant(self, name: str) -> VariantResult:
        return next(v for v in self.variants if v.name == name)

    def speedup(self) -> float:
        """How much faster the selection is than the baseline, by the search's objective."""
        base, chosen = self.variant(self.baseline), self.variant(self.selected)
        if self.settings.get("objective") == "throughput":
            return chosen.throughput / base.throughput if base.throughput else 0.0
        return base.p50 / chosen.p50 if chosen.p50 else 0.0

    def speedup_text(self) -> str:
        """``"1.52x the batch-1 speed of ort-fp32"`` or the throughput equivalent."""
        batches = self.settings.get("batches") or [1]
        if self.settings.get("objective") == "throughput":
            what = f"the throughput at batch {batches[-1]}"
        else:
            what = f"the batch-{batches[0]} speed"
        return f"{self.speedup():.2f}x {what} of {self.baseline}"

    def energy_text(self) -> str:
        """How the variants' energy was obtained: their labels, and why no better meter was used.

        The variants of one run share a meter unless some ran on a GPU, so this is
        usually one label: ``"estimated (CPU time x 10 W per core) · no RAPL ..."``.
        """
        seen: dict[str, str] = {}
        for v in self.variants:
            energy = v.timings.get("energy") or {}
            if energy.get("label"):
                seen.setdefault(str(energy["label"]), str(energy.get("note") or ""))
        return "; ".join(f"{label} · {note}" if note else label for label, note in seen.items())

    def to_dict(self) -> dict[str, Any]:
        nas = {} if self.nas is None else {"nas": self.nas.to_dict()}
        return {
            "model": self.model,
            "selected": self.selected,
            "baseline": self.baseline,
            "speedup_vs_baseline": round(self.speedup(), 3),
            "settings": self.settings,
            "machine": self.machine,
            "created": self.created,
            "variants": [v.to_dict() for v in self.variants],
            "skipped": self.skipped,
            **nas,
        }


def _budget_text(settings: dict[str, Any]) -> str:
    criterion, drop = settings.get("criterion"), settings.get("max_accuracy_drop")
    parts = {
        "accuracy": f"accuracy drop at most {drop} pt on the labelled eval data",
        "top1": f"top-1 disagreement with FP32 at most {drop} pt",
        "abs": "outputs close to FP32",
    }
    text = parts.get(str(criterion), str(criterion))
    if settings.get("max_rel_error") is not None:
        text += f", max error at most {100 * settings['max_rel_error']:g}% of each output's range"
    if settings.get("max_abs_error") is not None:
        text += f", max abs error at most {settings['max_abs_error']}"
    return text


def _machine_text(machine: dict[str, Any]) -> str:
    text = f"{machine['cpu']} ({machine['cores']} cores)"
    if machine.get("gpu"):
        text += f" with {machine['gpu']} (TensorRT {machine.get('tensorrt', 'unknown')})"
    return text


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_reports(report: Report, folder: Path) -> None:
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    (folder / "report.html").write_text(render_html(report))


def _plot_svg(report: Report) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "<p><em>Install matplotlib to see the accuracy/latency plot.</em></p>"
    ok = [v for v in report.variants if v.status == "ok"]
    use_accuracy = all(v.accuracy is not None for v in ok)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for index, v in enumerate(ok):
        y = float(v.accuracy or 0.0) if use_accuracy else (v.agreement.top1 if v.agreement else 0.0)
        colour = "tab:green" if v.selected else ("tab:blue" if v.within_budget else "tab:red")
        ax.scatter(v.p50, y, s=70 if v.selected else 40, color=colour, zorder=3)
        # Variants often sit on top of each other: stagger their labels.
        ax.annotate(
            v.name,
            (v.p50, y),
            textcoords="offset points",
            fontsize=8,
            xytext=(6, 10 * (index % 5) - 18),
            arrowprops={"arrowstyle": "-", "lw": 0.4},
        )
    ax.set_xlabel("latency p50 at batch 1 (ms)")
    ax.set_ylabel("accuracy (%)" if use_accuracy else "top-1 agreement with FP32 (%)")
    ax.set_title("green: selected · blue: within budget · red: outside budget", fontsize=9)
    ax.grid(True, alpha=0.3)
    return svg_of(fig)


def render_html(report: Report) -> str:
    rows = []
    for v in report.variants:
        d = v.to_dict()
        agree = d["agreement"] or {}
        cls = "sel" if v.selected else ("bad" if not v.within_budget else "")
        cells = [
            v.name + (" ★" if v.selected else ""),
            f"{v.engine} ({v.device.removesuffix('ExecutionProvider')})" if v.device else v.engine,
            v.precision,
            v.status,
            f"{v.size_bytes / 1024:.0f} KiB" if v.size_bytes else "",
            f"{v.p50:.3f}" if v.status == "ok" else "",
            f"{v.p99:.3f}" if v.status == "ok" else "",
            f"{v.throughput:.1f}" if v.status == "ok" else "",
            # NVML and the CPU-time estimate can share this column: each row says which it is
            ""
            if v.joules_per_item is None
            else f"{1000 * v.joules_per_item:.3f} ({v.energy_kind or 'unlabelled'})",
            f"{v.peak_memory_mb:.0f}",
            "" if v.accuracy is None else f"{v.accuracy:.2f}",
            str(agree.get("top1", "")),
            str(agree.get("max_abs", "")),
            v.error or v.budget_reason,
            v.notes,
        ]
        rows.append(
            f'<tr class="{cls}">'
            + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
            + "</tr>"
        )
    # The latency and energy columns hold the first batch size's figures (items/s the last's)
    first = (report.settings.get("batches") or [1])[0]
    heads = [
        "variant",
        "engine",
        "precision",
        "status",
        "size",
        f"p50 ms (b{first})",
        f"p99 ms (b{first})",
        "items/s",
        f"mJ/item (b{first})",
        "peak MiB",
        "accuracy %",
        "top-1 agree %",
        "max abs err",
        "verdict",
        "notes",
    ]
    skipped = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(r)}</li>" for k, r in report.skipped.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fogline optimize report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; }}
td, th {{ border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: left; }}
tr.sel {{ background: #e4f7e4; font-weight: bold; }} tr.bad {{ color: #a33; }}
</style></head><body>
<h1>fogline optimize</h1>
<p>Model <code>{html.escape(report.model)}</code> on {html.escape(_machine_text(report.machine))}. Selected <b>{html.escape(report.selected)}</b>:
{html.escape(report.speedup_text())}.
Budget: {html.escape(_budget_text(report.settings))}.
Energy per inference: {html.escape(report.energy_text() or "not metered")}.</p>
{_plot_svg(report)}
<table><tr>{"".join(f"<th>{h}</th>" for h in heads)}</tr>{"".join(rows)}</table>
<h2>Not built here</h2><ul>{skipped or "<li>none</li>"}</ul>
{"" if report.nas is None else nas_html(report.nas)}
<p><small>Created {html.escape(report.created)}.</small></p>
</body></html>
"""
