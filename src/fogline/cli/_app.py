"""The shared Typer application and consoles."""

from __future__ import annotations

import os

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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


def counted_progress(what: str) -> Progress:
    """A transient bar counting ``what`` (rounds, epochs): ``what 3/10 ━━━ description 0:00:04``."""
    return Progress(
        TextColumn(what),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


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


def needs_extra(extra: str, *modules: str) -> None:
    """Raise a one-line ConfigError naming the extra to install when a module is missing."""
    import importlib.util

    def present(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            return False

    missing = [name for name in modules if not present(name)]
    if missing:
        from fogline.errors import ConfigError

        raise ConfigError(
            f"this command needs {', '.join(missing)} (not installed here): "
            f"pip install 'fogline[{extra}]'"
        )


#: What the fleet commands that sign, verify or serve need (the ``fleet`` extra).
FLEET_MODULES = ("tuf", "securesystemslib", "cryptography", "starlette", "uvicorn")
