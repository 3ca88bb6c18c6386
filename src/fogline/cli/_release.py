"""``fogline release create|list|verify``: signed releases in the controller's repository."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fogline.cli._app import FLEET_MODULES, app, console, console_err, needs_extra
from fogline.cli._controller import RELEASE_KEY_FILE
from fogline.cli._options import data_option

if TYPE_CHECKING:
    from fogline.fleet.controller import ReleaseKeys
    from fogline.security import ReleaseCheck, ReleaseRepository

release = typer.Typer(
    help="Signed releases (models, pipelines, model repositories).", no_args_is_help=True
)
app.add_typer(release, name="release")

_DATA = data_option("The controller's data folder (fogline keys init).")


_DB_KEY = typer.Option(
    None, "--db-key", help="The key of an encrypted registry (as 'fogline controller --db-key')."
)


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


def _damaged(check: ReleaseCheck) -> str:
    """The damaged files of a release in a table cell; the full lines go to stderr."""
    return ", ".join(f"{d.path} ({d.problem})" for d in check.damage)


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
    encrypt: bool = typer.Option(
        False,
        "--encrypt",
        help="Encrypt the files for the enrolled devices (only they can read the release).",
    ),
    db_key: Path | None = _DB_KEY,
    release_key_file: Path | None = RELEASE_KEY_FILE,
) -> None:
    """Sign FOLDER as a release: files stored by sha256, a signed release document."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import ReleaseRepository

    repo = ReleaseRepository(data)
    key_path = key or repo.layout.key_file("targets")
    options: dict[str, Any] = dict(
        expires=timedelta(days=expires_days),
        kind=kind,
        entry=entry,
        latency_budget_ms=latency_budget_ms,
        sample=sample,
        canary=canary,
        description=description,
    )
    recipients: list[str] = []
    if encrypt:
        with _release_keys(data, repo, db_key, release_key_file) as keys:
            published = keys.publish(folder, name, version, key_path, **options)
            recipients = keys.wrapped_for().get(
                f"{published.document.name} {published.document.version}", []
            )
    else:
        published = repo.create_release(folder, name, version, key_path, **options)
    doc = published.document
    table = Table(title=f"release {escape(doc.name)} {escape(doc.version)}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("kind", f"{doc.kind} (entry {escape(doc.entry)})")
    table.add_row("files", f"{len(doc.files)} ({_size(doc.total_length)})")
    table.add_row("document", f"{published.target} sha256 {published.sha256}")
    table.add_row("expires", doc.expires.strftime("%Y-%m-%d %H:%M UTC"))
    if doc.encryption is not None:
        table.add_row(
            "encrypted", f"{doc.encryption.cipher}, keys for {len(recipients)} device(s) in "
            f"{escape(doc.encryption.keys)}",
        )  # fmt: skip
    console.print(table)


@contextlib.contextmanager
def _release_keys(
    data: Path, repo: ReleaseRepository, db_key: Path | None, release_key_file: Path | None
) -> Iterator[ReleaseKeys]:
    """The controller's release keys over its registry (the controller may be running)."""
    from fogline.fleet.controller import Registry, ReleaseKeys, controller_key_source
    from fogline.security import KeySource
    from fogline.store import is_encrypted

    path = data / "registry.db"
    key = KeySource(file=db_key).load() if db_key or is_encrypted(path) else None
    registry = Registry(path, key=key)
    try:
        yield ReleaseKeys(data, registry, repo, key_source=controller_key_source(release_key_file))
    finally:
        registry.close()


@release.command("rewrap")
def rewrap(
    data: Path = _DATA,
    key: Path | None = typer.Option(
        None, "--key", help="The targets key (default DATA/keys/targets.pem)."
    ),
    db_key: Path | None = _DB_KEY,
    release_key_file: Path | None = RELEASE_KEY_FILE,
) -> None:
    """Wrap encrypted releases' keys for today's devices: new ones in, revoked ones out."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import ReleaseRepository

    repo = ReleaseRepository(data)
    with _release_keys(data, repo, db_key, release_key_file) as keys:
        changed = keys.rewrap(key)
        wrapped = keys.wrapped_for()
    table = Table(title=f"encrypted releases in {escape(str(data))}")
    for column in ("release", "keys for", "now"):
        table.add_column(column)
    for release_name, devices in wrapped.items():
        state = "[yellow]re-wrapped[/]" if release_name in changed else "[green]up to date[/]"
        table.add_row(escape(release_name), escape(", ".join(devices) or "no device"), state)
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


@release.command("verify")
def verify(
    name: str | None = typer.Argument(None, help="Only the releases of this name."),
    version: str | None = typer.Argument(None, help="Only this version of NAME."),
    data: Path = _DATA,
) -> None:
    """Hash the stored files of releases against the signed metadata; exit 2 if any differ."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.security import ReleaseRepository

    checks = ReleaseRepository(data).verify(name, version)
    if not checks:
        console.print(f"no releases in {escape(str(data))}")
        return
    table = Table(title=f"releases in {escape(str(data))}")
    for column in ("name", "version", "files", "size", "check"):
        table.add_column(column)
    for check in checks:
        doc = check.document
        table.add_row(
            escape(check.name),
            escape(check.version),
            "?" if doc is None else str(len(doc.files)),
            "?" if doc is None else _size(doc.total_length),
            "[green]ok[/]" if check.ok else f"[red]damaged[/]: {escape(_damaged(check))}",
        )
    console.print(table)
    damage = [d for check in checks for d in check.damage]
    for item in damage:  # one line each, as the CLI reports an error
        console_err.print(
            Text("error: ", style="bold red") + Text(str(item)), highlight=False, soft_wrap=True
        )
    if damage:
        raise typer.Exit(2)
