"""``fogline inspect``: a model's signature and what would run it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import app, console
from fogline.cli._bench import device_text, load_for_bench


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="A model file, or a folder with fogline.yaml."),
    backend: str = typer.Option("auto", help="auto, onnxruntime, openvino or litert."),
) -> None:
    """Show inputs, outputs (dynamic dimensions as names or ?), opset and producer."""
    engine, model_file = load_for_bench(model, backend, None, None)
    sig = engine.signature
    console.print(
        f"[bold]{escape(model_file)}[/] · {engine.backend} · {engine.precision} · "
        f"{device_text(engine)}",
        highlight=False,
    )
    table = Table()
    for column in ("", "name", "dtype", "shape"):
        table.add_column(column)
    for kind, specs in (("input", sig.inputs), ("output", sig.outputs)):
        for spec in specs:
            table.add_row(kind, escape(spec.name), spec.dtype, escape(spec.describe_shape()))
    console.print(table)
    opset = ", ".join(f"{k} {v}" for k, v in sig.opset.items()) or "n/a"
    console.print(f"opset: {opset} · producer: {sig.producer or 'n/a'}")
