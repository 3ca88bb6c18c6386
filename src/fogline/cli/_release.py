"""``fogline release create|list``: signed releases in the controller's repository."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import FLEET_MODULES, app, console, needs_extra

release = typer.Typer(
    help="Signed releases (models, pipelines, model repositories).", no_args_is_help=True
)
app.add_typer(release, name="release")

_DATA = typer.Option(..., "--data", help="The controller's data folder (fogline keys init).")


def _size(length: int) -> str:
    """
    >>> _size(1536), _size(3 * 1024 * 1024)
    ('1.5 KiB', '3.0 MiB')
    """
    value = float(length)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@release.command("create")
def create(
    folder: Path = typer.Argument(..., help="The model folder (or file) to release."),
    name: str = typer.Option(..., "--name", help="Release name (like a device id)."),
    version: str = typer.Option(..., "--version", help="PEP 440 version, newer than any before."),
    data: Path = _DATA,
    key: Path | None = typer.Option(
        None, "--key", help="The targets key (default DATA/keys/targets.pem)."
    ),
    expires_days: float = typer.Option(365.0, "--expires-days", min=0.0001),
    kind: str | None = typer.Option(None, "--kind", help="model, pipeline or serve (inferred)."),
    entry: str | None = typer.Option(None, "--entry", help="What to run, relative (inferred)."),
    latency_budget_ms: float | None = typer.Option(None, "--latency-budget-ms", min=0.001),
    sample: str | None = typer.Option(None, "--sample", help="Relative .npz of sample inputs."),
    canary: str | None = typer.Option(None, "--canary", help="Relative .npz with x and y."),
    description: str = typer.Option("", "--description"),
) -> None:
    """Sign FOLDER as a release: files stored by sha256, a signed release document."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import ReleaseRepository

    repo = ReleaseRepository(data)
    published = repo.create_release(
        folder,
        name,
        version,
        key or repo.layout.key_file("targets"),
        expires=timedelta(days=expires_days),
        kind=kind,
        entry=entry,
        latency_budget_ms=latency_budget_ms,
        sample=sample,
        canary=canary,
        description=description,
    )
    doc = published.document
    table = Table(title=f"release {escape(doc.name)} {escape(doc.version)}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("kind", f"{doc.kind} (entry {escape(doc.entry)})")
    table.add_row("files", f"{len(doc.files)} ({_size(doc.total_length)})")
    table.add_row("document", f"{published.target} sha256 {published.sha256}")
    table.add_row("expires", doc.expires.strftime("%Y-%m-%d %H:%M UTC"))
    console.print(table)


@release.command("list")
def list_(data: Path = _DATA) -> None:
    """Every signed release, by name and version."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import ReleaseRepository

    table = Table(title=f"releases in {escape(str(data))}")
    for column in ("name", "version", "kind", "entry", "files", "size", "created", "expires"):
        table.add_column(column)
    for doc in ReleaseRepository(data).releases():
        table.add_row(
            escape(doc.name),
            escape(doc.version),
            doc.kind,
            escape(doc.entry),
            str(len(doc.files)),
            _size(doc.total_length),
            doc.created.strftime("%Y-%m-%d %H:%M"),
            doc.expires.strftime("%Y-%m-%d") + (" [red](expired)[/]" if doc.is_expired() else ""),
        )
    console.print(table)
