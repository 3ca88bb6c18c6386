"""``fogline accuracy``: live accuracy from late labels, read back from a pipeline's store."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import app, console
from fogline.cli._store_keys import DEVICE_KEY, store_key
from fogline.errors import ConfigError
from fogline.store import ResultStore


@app.command()
def accuracy(
    store: Path = typer.Argument(..., help="A pipeline's results store (results.db)."),
    window: list[int] = typer.Option(
        [100, 1000], "--window", "-w", min=1, help="Over the last N joined labels (repeatable)."
    ),
    model_version: str | None = typer.Option(
        None, "--model-version", help="Only this model version."
    ),
    device_key: Path | None = DEVICE_KEY,
) -> None:
    """Accuracy (or mean absolute error) per model version over its last N joined labels."""
    if not store.is_file():
        raise ConfigError(f"{store}: no such store")
    with ResultStore(store, key=store_key(store, device_key)) as opened:
        figures = opened.accuracy(tuple(window), model_version=model_version)
        counts = opened.label_counts()
    table = Table(title=f"late labels in {escape(str(store))}", title_justify="left")
    table.add_column("model version")
    table.add_column("window", justify="right")
    table.add_column("labelled", justify="right")
    shown = [
        (name, heading)
        for name, heading in (("accuracy", "accuracy"), ("mae", "mean abs error"))
        if any(getattr(figure, name) is not None for figure in figures)
    ]
    for _, heading in shown:
        table.add_column(heading, justify="right")
    for figure in figures:
        values = []
        for name, _ in shown:
            value = getattr(figure, name)
            values.append(
                "" if value is None else f"{value:.2%}" if name == "accuracy" else f"{value:.4g}"
            )
        table.add_row(
            escape(figure.model_version), f"last {figure.window:,}", f"{figure.labelled:,}", *values
        )
    console.print(table, highlight=False)
    joined, waiting = counts
    unjoined = f" · {waiting:,} stored without a result" if waiting else ""
    console.print(f"{joined:,} labels joined to results{unjoined}", highlight=False)
