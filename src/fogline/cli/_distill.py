"""``fogline distill``: teach a smaller student network from a teacher, then compare."""

from __future__ import annotations

from pathlib import Path

import typer

from fogline.cli._app import app, console, parse_batches
from fogline.cli._optimize import run_optimize, torch_baseline
from fogline.model import Signature
from fogline.optimize import (
    Dataset,
    FitOptions,
    OptimizeOptions,
    VariantPlan,
    distill_plan,
    load_torch_factory,
)


@app.command()
def distill(
    teacher: str = typer.Option(..., help="module:function returning the trained teacher."),
    student: str = typer.Option(..., help="module:function returning the (untrained) student."),
    train: str = typer.Option(..., "--train", "-t", help="Training data (.npz, folder, callable)."),
    evaluation: str | None = typer.Option(
        None, "--eval", "-e", help="Eval data (with labels for accuracy)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the result to."),
    epochs: int = typer.Option(10, min=1, help="Training epochs."),
    temperature: float = typer.Option(4.0, min=0.01, help="Softmax temperature of the targets."),
    alpha: float = typer.Option(
        0.7, min=0.0, max=1.0, help="Weight of the teacher's soft targets (labels get the rest)."
    ),
    learning_rate: float = typer.Option(1e-3, min=0.0, help="Adam learning rate."),
    max_accuracy_drop: float = typer.Option(
        1.0, min=0.0, help="Budget in percentage points against the teacher."
    ),
    threads: int | None = typer.Option(None, min=1, help="Compute threads to measure with."),
    batch: str = typer.Option("1,8", help="Batch sizes to measure."),
    duration: float = typer.Option(1.0, min=0.01, help="Seconds to time each model per batch."),
    input_names: str = typer.Option("input", help="Input names, comma-separated."),
    output_names: str = typer.Option("output", help="Output names, comma-separated."),
    name: str | None = typer.Option(None, help="Model name for the manifest."),
) -> None:
    """Train a small student from a teacher and keep it if it stays inside the budget.

    Both are measured and reported like `optimize` does.
    """
    fit_options = FitOptions(
        epochs=epochs, temperature=temperature, alpha=alpha, learning_rate=learning_rate
    )
    student_net = load_torch_factory(student)
    options = OptimizeOptions(
        max_accuracy_drop=max_accuracy_drop,
        threads=threads,
        batches=parse_batches(batch),
        duration_s=duration,
        variants=("torch-distilled-student",),
        sensitivity=False,
        name=name or student.partition(":")[2],
    )
    with torch_baseline(teacher, train, input_names, output_names) as (path, teacher_net):

        def plans(signature: Signature, data: Dataset) -> list[VariantPlan]:
            return [distill_plan(teacher_net, student_net, data, signature, fit_options)]

        console.print(f"distilling {teacher} into {student} for {epochs} epoch(s)")
        run_optimize(path, train, evaluation, out, options, train=train, extra_plans=plans)
