"""``fogline demo``: the main job on the bundled digits example."""

from __future__ import annotations

from pathlib import Path

import typer

from fogline.cli._app import app, console
from fogline.cli._optimize import run_optimize
from fogline.examples import digits_model_path
from fogline.optimize import OptimizeOptions


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out/digits"), "--out", "-o", help="Where to write."),
    threads: int | None = typer.Option(None, min=1, help="Compute threads."),
    duration: float = typer.Option(1.0, min=0.01, help="Seconds to time each variant."),
) -> None:
    """Optimize the bundled digits classifier and show what each variant costs and gains."""
    console.rule("[bold]fogline demo[/]: optimize a digits classifier for this machine")
    console.print(
        f"model {digits_model_path()} (a small CNN trained on scikit-learn's load_digits)\n"
        "calibration: 256 training images · evaluation: 597 held-out images with labels\n"
        "objective: throughput at batch 32 — one image takes this model 0.05 ms, so call\n"
        "overhead hides any gain at batch 1; `fogline optimize` ranks by batch-1 latency\n"
        "unless told otherwise"
    )
    run_optimize(
        digits_model_path(),
        "fogline.examples:digits_calibration",
        "fogline.examples:digits_eval",
        out,
        OptimizeOptions(
            threads=threads,
            duration_s=duration,
            name="digits",
            batches=(1, 32),
            objective="throughput",
        ),
    )
    console.print(f"open {out / 'report.html'} to see accuracy against latency")
