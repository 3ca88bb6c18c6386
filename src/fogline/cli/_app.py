"""The shared Typer application and consoles."""

from __future__ import annotations

import os

import typer
from rich.console import Console

app = typer.Typer(
    name="fogline",
    help="Edge AI in one system: make a model fit this device, and measure it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
if not console.is_terminal and "COLUMNS" not in os.environ:
    console = Console(width=140)  # logs and CI: wide tables rather than wrapped cells
console_err = Console(stderr=True)


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,8"`` → ``(1, 8)``; a clear error for anything else."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(
            f"expected comma-separated positive integers, got {text!r}", param_hint="--batch"
        )
    return values
