"""``fogline optimize``: find the fastest variant that keeps the accuracy, here."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fogline.cli._app import app, console, parse_batches
from fogline.errors import ConfigError
from fogline.model import Signature, TensorSpec, load_onnx, onnx_signature
from fogline.optimize import (
    CALIBRATION_METHODS,
    NOT_SELECTED,
    Dataset,
    FitOptions,
    NasOptions,
    OptimizeOptions,
    Report,
    VariantPlan,
    export,
    load_dataset,
    load_torch_factory,
    optimize,
    parse_prune,
    prune_plan,
    quantized,
)


class Objective(str, Enum):
    latency = "latency"
    throughput = "throughput"


def variant_table(report: Report) -> Table:
    table = Table(title=f"variants of {Path(report.model).name} (selected: {report.selected})")
    batches = report.settings.get("batches") or [1]
    for column in (
        "variant",
        "prec",
        "KiB",
        f"p50 ms b{batches[0]}",
        f"p99 ms b{batches[0]}",
        f"items/s b{batches[-1]}",
        f"mJ/item b{batches[0]}",
        "accuracy",
        "agree",
        "max err",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("variant", "verdict") else "right")
    for v in report.variants:
        if v.status != "ok":
            table.add_row(
                v.name,
                v.precision,
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                "",
                f"[red]failed: {escape(v.error or '')}[/]",
            )
            continue
        if v.selected:
            verdict = "[bold green]selected[/]"
        elif not v.within_budget:
            verdict = f"[red]{escape(v.budget_reason)}[/]"
        elif v.name == report.baseline:
            verdict = "baseline"
        elif v.faster_than_baseline:
            verdict = "slower than selected"
        elif v.confirmed_speedup is not None:
            verdict = f"re-timed: only {v.confirmed_speedup:.2f}x"
        else:
            verdict = "not faster"
        table.add_row(
            v.name,
            v.precision,
            f"{v.size_bytes / 1024:,.0f}",
            f"{v.p50:.3f}",
            f"{v.p99:.3f}",
            f"{v.throughput:,.0f}",
            "" if v.joules_per_item is None else f"{1000 * v.joules_per_item:.3f}",
            "" if v.accuracy is None else f"{v.accuracy:.2f}%",
            f"{v.agreement.top1:.1f}%" if v.agreement else "",
            f"{v.agreement.max_abs:.3g}" if v.agreement else "",
            verdict,
        )
    return table


ExtraPlans = Callable[[Signature, Dataset], list[VariantPlan]]


def run_optimize(
    model: Path,
    calibration: str,
    evaluation: str | None,
    out: Path,
    options: OptimizeOptions,
    *,
    train: str | None = None,
    extra_plans: ExtraPlans | None = None,
) -> Report:
    """Load data, search with a progress bar, print the table; shared with ``demo``.

    ``extra_plans`` builds more variants (pruning, distillation) from the
    model's signature and the training data (``train``, else the calibration data).
    """
    # The signature is read from the file: no runtime session just for that.
    signature = onnx_signature(load_onnx(model, with_external_data=False), model)
    calib = load_dataset(calibration, signature)
    evald = load_dataset(evaluation, signature) if evaluation else None
    plans: list[VariantPlan] = []
    if extra_plans is not None:
        plans = extra_plans(signature, load_dataset(train, signature) if train else calib)
    report = with_bar(
        lambda step: optimize(model, calib, evald, out, options, progress=step, extra_plans=plans)
    )
    print_report(report, out)
    return report


Step = Callable[[str, int, int], None]


def with_bar(search: Callable[[Step], Report]) -> Report:
    """Run ``search`` under the variant search's progress bar."""
    with Progress(
        TextColumn("[bold]optimize[/] {task.description:<28}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def on_step(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        return search(on_step)


def print_report(report: Report, out: Path) -> None:
    """The variant table, what was skipped, the selection and the files written."""
    console.print(variant_table(report))
    if report.energy_text():
        console.print(f"energy per inference {escape(report.energy_text())}", highlight=False)
    for name, reason in report.skipped.items():
        if reason == NOT_SELECTED:
            continue  # the user asked for fewer variants; report.json still lists them
        console.print(f"[dim]skipped {name}: {escape(reason)}[/]")
    chosen = report.variant(report.selected)
    on = "" if chosen.device in ("", "CPUExecutionProvider") else f", {chosen.device}"
    console.print(
        f"selected [bold]{report.selected}[/] ({chosen.engine}, {chosen.precision}{on}): "
        f"{report.speedup_text()}"
    )
    console.print(
        f"wrote {out / ('model' + Path(chosen.file).suffix)}, "
        f"{out / 'fogline.yaml'}, {out / 'report.json'}, {out / 'report.html'}"
    )


@app.command("optimize")
def optimize_command(
    model: Path | None = typer.Argument(None, help="The FP32 .onnx model (or use --from-torch)."),
    calibration: str | None = typer.Option(
        None,
        "--calibration",
        "-c",
        help="Calibration data: .npz, image folder, or module:function (with --nas: --train).",
    ),
    evaluation: str | None = typer.Option(
        None, "--eval", "-e", help="Eval data (with labels for accuracy)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the result to."),
    max_accuracy_drop: float = typer.Option(
        1.0, min=0.0, help="Budget in percentage points (accuracy or top-1 agreement with FP32)."
    ),
    max_abs_error: float | None = typer.Option(
        None, min=0.0, help="Also bound the max abs output error."
    ),
    threads: int | None = typer.Option(None, min=1, help="Compute threads to measure with."),
    batch: str = typer.Option("1,8", help="Batch sizes to measure, the first one ranks."),
    duration: float = typer.Option(1.0, min=0.01, help="Seconds to time each variant per batch."),
    calibrate: str = typer.Option(
        ",".join(CALIBRATION_METHODS), help="Static INT8 calibration methods, comma-separated."
    ),
    variants: str | None = typer.Option(
        None, help="Only these variants (glob, comma-separated); ort-fp32 always runs."
    ),
    objective: Objective = typer.Option(
        Objective.latency, help="Rank by batch-1 latency or by throughput at the last batch."
    ),
    sensitivity: bool = typer.Option(
        True, help="Keep sensitive layers in FP32 when INT8 misses the budget."
    ),
    keep_variants: bool = typer.Option(True, help="Keep every variant's file in OUT/variants."),
    name: str | None = typer.Option(None, help="Model name for the manifest."),
    version: str = typer.Option("1", help="Model version for the manifest."),
    from_torch: str | None = typer.Option(
        None, help="Start from a PyTorch model: module:function returning a trained nn.Module."
    ),
    prune: str = typer.Option(
        "magnitude:0.5,structured:0.25",
        help="With --from-torch: pruning variants as METHOD:AMOUNT (magnitude, structured).",
    ),
    train: str | None = typer.Option(
        None,
        help="With --from-torch: fine-tuning data (default: the calibration data); "
        "with --nas: the training data.",
    ),
    epochs: int = typer.Option(3, min=0, help="With --from-torch: fine-tuning epochs."),
    prune_int8: bool = typer.Option(
        True, help="With --from-torch: also quantize each pruned model to static INT8."
    ),
    input_names: str = typer.Option(
        "input", help="With --from-torch: input names, comma-separated."
    ),
    output_names: str = typer.Option(
        "output", help="With --from-torch: output names, comma-separated."
    ),
    nas: str | None = typer.Option(
        None,
        help="Search a family of networks (module:name, a fogline.optimize.Family) "
        "instead of starting from a model.",
    ),
    latency_budget_ms: float | None = typer.Option(
        None, help="With --nas: the latency the chosen network must keep (p50, first --batch)."
    ),
    search_epochs: int = typer.Option(
        5, min=1, help="With --nas: epochs each candidate is trained for."
    ),
    final_epochs: int = typer.Option(
        40, min=1, help="With --nas: epochs the chosen network is trained for, from scratch."
    ),
    sample: int | None = typer.Option(
        None, min=1, help="With --nas: try this many candidates drawn from the grid (default: all)."
    ),
    seed: int = typer.Option(
        0, help="With --nas: seed of the sample, of the validation split and of every training."
    ),
    val_fraction: float = typer.Option(
        0.2,
        min=0.0,
        max=1.0,
        help="With --nas: share of --train held out to rank the candidates on "
        "(--eval only judges the chosen network).",
    ),
    provider: list[str] | None = typer.Option(
        None,
        help="Only these ONNX Runtime execution providers (cpu, cuda, tensorrt; repeat). "
        "Default: every one this build offers; CUDA and TensorRT add the GPU variants.",
    ),
) -> None:
    """Find the fastest variant of a model that stays inside the accuracy budget.

    Builds and measures FP32, FP16, INT8 dynamic and static, OpenVINO and, with
    --from-torch, pruned variants, on this machine. With --nas, first searches
    a family of networks for the best one inside --latency-budget-ms.
    """
    methods = tuple(m.strip() for m in calibrate.split(",") if m.strip())
    unknown = [m for m in methods if m not in CALIBRATION_METHODS]
    if unknown or not methods:
        raise ConfigError(
            f"--calibrate: unknown method(s) {', '.join(unknown) or '(none)'}; "
            f"use {', '.join(CALIBRATION_METHODS)}"
        )
    if nas is not None and (model is not None or from_torch is not None):
        raise ConfigError("--nas searches its own networks: give no MODEL and no --from-torch")
    if nas is None and (model is None) == (from_torch is None):
        raise ConfigError("give either a MODEL file or --from-torch module:function, not both")
    if nas is None and calibration is None:
        raise ConfigError(
            "--calibration: give the calibration data (.npz, folder, module:function)"
        )
    options = OptimizeOptions(
        max_accuracy_drop=max_accuracy_drop,
        max_abs_error=max_abs_error,
        threads=threads,
        batches=parse_batches(batch),
        duration_s=duration,
        methods=methods,
        variants=tuple(v.strip() for v in variants.split(",")) if variants else (),
        objective=objective.value,
        sensitivity=sensitivity,
        keep_variants=keep_variants,
        name=name,
        version=version,
        providers=_with_cpu(provider),
    )
    if nas is not None:
        if train is None or evaluation is None or latency_budget_ms is None:
            raise ConfigError("--nas needs --train DATA, --eval DATA and --latency-budget-ms B")
        from fogline.cli._optimize_nas import run_nas

        search = NasOptions(
            latency_budget_ms, search_epochs, final_epochs, sample, seed, val_fraction
        )
        run_nas(nas, train, evaluation, out, search, options)
        return
    assert calibration is not None
    if model is not None:
        run_optimize(model, calibration, evaluation, out, options)
        return
    assert from_torch is not None
    pruning = parse_prune(prune)
    fit_options = FitOptions(epochs=epochs)
    with torch_baseline(from_torch, calibration, input_names, output_names) as (path, net):

        def plans(signature: Signature, data: Dataset) -> list[VariantPlan]:
            pruned = [prune_plan(net, m, a, data, signature, fit_options) for m, a in pruning]
            if prune_int8:
                pruned += [quantized(p, methods[0]) for p in pruned]
            return pruned

        if options.name is None:
            options.name = from_torch.partition(":")[2]
        run_optimize(path, calibration, evaluation, out, options, train=train, extra_plans=plans)


def _with_cpu(providers: list[str] | None) -> tuple[str, ...] | None:
    """The providers given, checked against this build, with the CPU (the baseline's) added."""
    if not providers:
        return None
    import onnxruntime

    from fogline.model import provider_name

    chosen = tuple(dict.fromkeys([*(provider_name(p) for p in providers), "CPUExecutionProvider"]))
    available = onnxruntime.get_available_providers()
    missing = [p for p in chosen if p not in available]
    if missing:
        raise ConfigError(
            f"--provider: {', '.join(missing)} not in this onnxruntime build (it has "
            f"{', '.join(available)}); GPU providers need onnxruntime-gpu, see docs/gpu.md"
        )
    return chosen


@contextlib.contextmanager
def torch_baseline(
    factory: str, data: str, input_names: str, output_names: str
) -> Iterator[tuple[Path, Any]]:
    """Build the PyTorch model and export it to a temporary ONNX file, the FP32 baseline."""
    net = load_torch_factory(factory)
    inputs = tuple(n.strip() for n in input_names.split(",") if n.strip())
    outputs = tuple(n.strip() for n in output_names.split(",") if n.strip())
    probe = load_dataset(data, _loose_signature(inputs))
    with tempfile.TemporaryDirectory(prefix="fogline-torch-") as tmp:
        path = Path(tmp) / f"{factory.partition(':')[2] or 'model'}.onnx"
        signature = Signature(
            _loose_signature(inputs).inputs, tuple(TensorSpec(n, "float32", ()) for n in outputs)
        )
        export(net, signature, probe, path)
        yield path, net


def _loose_signature(inputs: tuple[str, ...]) -> Signature:
    """A signature that names the inputs but accepts any float32 shape (to read data first)."""
    if not inputs:
        raise ConfigError("--input-names: name at least one input")
    return Signature(tuple(LooseSpec(n, "float32", ()) for n in inputs), ())


class LooseSpec(TensorSpec):
    """A tensor spec that accepts every shape."""

    def accepts_shape(self, shape: tuple[int, ...]) -> bool:
        return True
