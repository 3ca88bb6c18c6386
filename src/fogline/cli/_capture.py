"""``fogline capture list|export``: the hard examples a pipeline's ``capture:`` section kept."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import app, console
from fogline.cli._store_keys import DEVICE_KEY, store_key
from fogline.errors import ConfigError
from fogline.pipeline import check_export, redact_dataset
from fogline.security import AuditLog
from fogline.store import CaptureRecord, ResultStore, export_captures

capture = typer.Typer(
    help="Hard examples a pipeline captured: list them, export them as a dataset.",
    no_args_is_help=True,
)
app.add_typer(capture, name="capture")

_STORE = typer.Argument(..., help="The pipeline's results store (store.path, e.g. results.db).")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: an age (``30m``, ``2h``, ``7d``), a date or time (ISO 8601), or epoch seconds.

    >>> parse_since("2h", now=10_000.0), parse_since("1700000000")
    (2800.0, 1700000000.0)
    >>> parse_since("2026-12-04T22:00:00+00:00")
    1796421600.0
    >>> parse_since("yesterday")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: --since 'yesterday': give an age (30m, 2h, 7d), an ISO date or time (2026-12-04T22:00), or epoch seconds
    """
    value = text.strip()
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", value)
    if age:
        now = time.time() if now is None else now
        return now - float(age.group(1)) * _UNITS[age.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value).timestamp()  # no zone: local time
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: give an age (30m, 2h, 7d), an ISO date or time "
            "(2026-12-04T22:00), or epoch seconds"
        ) from None


def _open(path: Path, device_key: Path | None) -> ResultStore:
    if not path.is_file():  # opening would create an empty store
        raise ConfigError(f"{path}: no such store (the pipeline's store.path, e.g. results.db)")
    return ResultStore(path, key=store_key(path, device_key))


def _answer(answer: dict[str, Any]) -> str:
    """A classifier's ``label (score)``, else the answer's JSON, cut short."""
    if "label" in answer:
        score = answer.get("score")
        return (
            f"{answer['label']} ({score:.2f})" if isinstance(score, float) else str(answer["label"])
        )
    text = json.dumps(answer, separators=(",", ":"))
    return text if len(text) <= 40 else text[:39] + "…"


def _row(record: CaptureRecord) -> dict[str, Any]:
    c = record.capture
    array = c.array()
    return {
        "id": record.id,
        "item_id": c.item_id,
        "captured_at": c.captured_at,
        "source": c.source,
        "position": c.position,
        "model": c.model,
        "model_version": c.model_version,
        "reason": c.reason,
        "input_name": c.input_name,
        "shape": list(array.shape),
        "dtype": array.dtype.name,
        "answer": dict(c.answer),
        "label": record.label,
        "result_id": c.result_id,
        "bytes": c.bytes,
    }


@capture.command("list")
def list_(
    store: Path = _STORE,
    limit: int = typer.Option(20, "--limit", min=1, help="Show the newest this many."),
    since: str | None = typer.Option(None, "--since", help="Only those since: 2h, 7d, ISO date."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per capture."),
    device_key: Path | None = DEVICE_KEY,
) -> None:
    """The newest captures: item, when, why, the model's answer, the late label if one came."""
    after = None if since is None else parse_since(since)
    with _open(store, device_key) as opened:
        records = opened.captures(since=after, limit=limit, newest_first=True)[::-1]
        total = opened.capture_count()
        held = opened.capture_bytes()
    if as_json:
        for record in records:
            print(json.dumps(_row(record)))
        return
    table = Table(title=f"captures in {escape(str(store))}", title_justify="left")
    for column in ("id", "item id", "when", "reason", "answer", "label", "bytes"):
        table.add_column(
            column,
            justify="right" if column in ("id", "bytes") else "left",
            overflow="fold",  # an item id is what a label must name: shown whole
            no_wrap=column in ("id", "when", "answer", "bytes"),
        )
    for record in records:
        c = record.capture
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.captured_at))
        label = "" if record.label is None else str(record.label)
        table.add_row(
            str(record.id),
            escape(c.item_id),
            when,
            escape(c.reason),
            escape(_answer(dict(c.answer))),
            escape(label),
            f"{c.bytes:,}",
        )
    table.caption = f"{len(records):,} shown of {total:,} captures · {held:,} bytes in all"
    table.caption_justify = "left"
    console.print(table, highlight=False)


@capture.command("export")
def export(
    store: Path = _STORE,
    out: Path = typer.Option(..., "--out", help="The .npz file to write (data.npz)."),
    labelled_only: bool = typer.Option(
        False, "--labelled-only", help="Only captures whose late label arrived (with labels)."
    ),
    since: str | None = typer.Option(None, "--since", help="Only those since: 2h, 7d, ISO date."),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Class names in index order (a,b,c or a file, one per line), for named labels.",
    ),
    device_key: Path | None = DEVICE_KEY,
    pipeline: Path | None = typer.Option(
        None,
        "--pipeline",
        help="The pipeline file that wrote the store: its privacy: applies too (needed for an "
        "encrypted store whose recorded policy, STORE.privacy.json, is missing).",
    ),
) -> None:
    """Write the captures as a dataset (.npz) for optimize, fl and learn finetune.

    The pipeline's egress policy holds: with ``privacy.raw: never`` nothing is
    exported; with ``redact: [faces]`` faces are blurred before the file exists.
    """
    after = None if since is None else parse_since(since)
    names = None if classes is None else _classes(classes)
    policy = check_export(store, pipeline)
    redact = policy is not None and "faces" in policy.redact
    plain = out.with_name(f".unredacted-{out.name}") if redact else out
    with _open(store, device_key) as opened:
        done = export_captures(
            opened, plain, since=after, labelled_only=labelled_only, classes=names
        )
    blurred = None
    if redact:
        try:
            blurred = redact_dataset(plain, out)
        finally:
            plain.unlink(missing_ok=True)
        done = dataclasses.replace(done, path=out)
    AuditLog(store.parent / "audit.jsonl").record(
        "data.exported", store=str(store), out=str(done.path), items=done.items,
        labelled=done.labelled, since=after, labelled_only=labelled_only, faces_blurred=blurred,
    )  # fmt: skip
    shapes = ", ".join(f"{name} {list(shape)}" for name, shape in done.shapes.items())
    labels = f", labels [{done.items}]" if done.with_labels else ""
    console.print(f"wrote {escape(str(done.path))}: {shapes}{labels}", highlight=False)
    if blurred is not None:
        console.print(f"blurred {blurred} face(s) (privacy.redact: faces)", highlight=False)
    if done.duplicates:
        console.print(
            f"left out {done.duplicates} older capture(s) of item ids captured again "
            "(one per item, the newest, so a split cannot put one item on both sides)",
            highlight=False,
        )
    if not done.with_labels:
        console.print(
            f"{done.labelled:,} of {done.items:,} captures have a late label, so the file has "
            "no labels" + ("; --labelled-only exports those with theirs" if done.labelled else ""),
            highlight=False,
        )


def _classes(text: str) -> list[str]:
    path = Path(text)
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        return [name for name in names if name]
    return [name.strip() for name in text.split(",") if name.strip()]
