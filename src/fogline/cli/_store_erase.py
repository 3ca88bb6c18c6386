"""``fogline store erase STORE --where EXPR``: delete what matches from every table, leave no copy.

The library does the work (:func:`fogline.store.erase`); this prints the
counts per table and records a ``store.erased`` event in ``audit.jsonl``
beside the store: the fields and operators asked (``item_id == ?``), the
request's fingerprint (an HMAC with the device key when there is one) and
the counts, never a value.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import console, console_err
from fogline.cli._capture import parse_since
from fogline.cli._store import store
from fogline.cli._store_keys import DEVICE_KEY, optional_device_key, store_key
from fogline.errors import ConfigError


@store.command("erase")
def erase_(
    path: Path = typer.Argument(..., help="The results store (store.path, e.g. results.db)."),
    where: str = typer.Option(
        "",
        "--where",
        help='What to erase: source == "cam-3", time < "2026-12-01", model/version, and/or/not.',
    ),
    since: str | None = typer.Option(None, "--since", help="Only from then on: 2h, 7d, ISO date."),
    until: str | None = typer.Option(None, "--until", help="Only before then: 2h, 7d, ISO date."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; erase nothing."),
    fingerprint: bool = typer.Option(
        False,
        "--fingerprint",
        help="Print the request's fingerprint (as store.erased records it) and erase nothing: "
        "to find which audit entry a request was.",
    ),
    device_key: Path | None = DEVICE_KEY,
) -> None:
    """Erase matching results, their outbox messages, captures and labels; scrub the file."""
    from fogline.security import AuditLog
    from fogline.store import ResultStore, compile_where, erase, erase_digest

    if not path.is_file():  # opening would create an empty store
        raise ConfigError(f"{path}: no such store (the pipeline's store.path, e.g. results.db)")
    after = None if since is None else parse_since(since)
    before = None if until is None else parse_since(until)
    key = store_key(path, device_key)
    audit_key = key if key is not None or (dry_run and not fingerprint) else optional_device_key()
    if fingerprint:  # --since/--until as dates: a relative one (2h) means another time each run
        compile_where(where, since=after, until=before)
        digest = erase_digest(where, since=after, until=before, key=audit_key)
        console.print(digest, highlight=False, soft_wrap=True)
        return
    audit = None if dry_run else AuditLog(path.parent / "audit.jsonl")
    with ResultStore(path, key=key) as opened:
        done = erase(
            opened,
            where,
            since=after,
            until=before,
            dry_run=dry_run,
            audit=audit,
            audit_key=audit_key,
        )
    verb = "would erase" if dry_run else "erased"
    console.print(f"{verb} from {escape(str(path))}:", highlight=False)
    table = Table()
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, count in done.counts().items():
        table.add_row(name, f"{count:,}")
    console.print(table, highlight=False)
    if dry_run:
        console.print("dry run: nothing was erased", highlight=False)
        return
    if audit is not None:
        console.print(f"recorded store.erased in {escape(str(audit.path))}", highlight=False)
    if not done.scrubbed:
        console_err.print(
            "[red]error[/]: the rows are gone, but another process holds the store's WAL, so "
            "old copies may remain in it; stop what uses the store and run "
            f"`fogline store erase {escape(str(path))} --where 'time < 0'` to scrub it",
            highlight=False,
        )
        raise typer.Exit(2)
