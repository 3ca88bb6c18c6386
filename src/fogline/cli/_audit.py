"""``fogline audit show|verify|checkpoint``: read, check and sign a device's or controller's audit log.

A device's log is ``DEV/audit.jsonl`` (the agent's data folder), the
controller's ``fleet-data/audit.jsonl``, a standalone pipeline's
``audit.jsonl`` beside its store. ``verify`` exits 0 when the log is whole
and 2 with every place it is damaged; ``--checkpoint`` checks it against a
checkpoint kept elsewhere (the controller's copy of the device's last one,
``fleet-data/audit-checkpoints/<device>.json``), which is what finds a log
cut short at its end.
"""

from __future__ import annotations

import json
import time
from collections import deque
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import app, console, console_err, needs_extra
from fogline.cli._fleet import _CONTROLLER, _DATA, _TOKEN, Api
from fogline.errors import ConfigError

audit = typer.Typer(
    help="The tamper-evident audit log: show it, verify its chain and signed checkpoints.",
    no_args_is_help=True,
)
app.add_typer(audit, name="audit")

_LOG = typer.Argument(
    Path("audit.jsonl"),
    help="The log: DEV/audit.jsonl on a device, fleet-data/audit.jsonl on the controller.",
)


def _entries(path: Path) -> Any:
    """The log's lines as dicts (a line that is not JSON comes as ``{"line": n, "bad": text}``)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such audit log")
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            try:
                entry = json.loads(raw)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError:
                yield {"line": number, "bad": raw.decode(errors="replace").strip()}
                continue
            entry["line"] = number
            yield entry


def _short(value: Any) -> Any:
    """Long hex (hashes, key ids, signatures) cut to 16 digits: a table row, not a dump."""
    if isinstance(value, str) and len(value) > 24 and all(c in "0123456789abcdef" for c in value):
        return value[:16] + "…"
    if isinstance(value, list):
        return [_short(item) for item in value]
    return value


def _fields(fields: Any) -> str:
    if not isinstance(fields, dict):
        return escape(str(fields))
    parts = []
    for key, value in fields.items():
        value = _short(value)
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(f"{key}={text}")
    return escape(" ".join(parts))


@audit.command("show")
def show(
    log: Path = _LOG,
    last: int = typer.Option(50, "--last", min=1, help="Show the last this many events."),
    event: str | None = typer.Option(
        None, "--event", help="Only this event, or a prefix ending in '.' (release.)."
    ),
) -> None:
    """The last events, oldest first: seq, when, event, its fields."""
    shown: deque[dict[str, Any]] = deque(maxlen=last)
    total = 0
    for entry in _entries(log):
        total += 1
        name = str(entry.get("event", ""))
        if (
            event is not None
            and name != event
            and not (event.endswith(".") and name.startswith(event))
        ):
            continue
        shown.append(entry)
    table = Table(title=f"audit log {escape(str(log))}", title_justify="left")
    for column in ("line", "seq", "when", "event", "fields"):
        table.add_column(column, justify="right" if column in ("line", "seq") else "left",
                         no_wrap=column != "fields", overflow="fold")  # fmt: skip
    for entry in shown:
        if "bad" in entry:
            table.add_row(str(entry["line"]), "", "", "[red]not an audit entry[/]",
                          escape(entry["bad"][:80]))  # fmt: skip
            continue
        when = entry.get("time")
        stamp = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))
            if isinstance(when, (int, float))
            else "?"
        )
        table.add_row(
            str(entry["line"]),
            str(entry.get("seq", "")),
            stamp,
            escape(str(entry.get("event", ""))),
            _fields(entry.get("fields")),
        )
    which = "" if event is None else f" {event}"
    table.caption = f"{len(shown):,} shown of {total:,} lines{escape(which)} · `fogline audit verify` checks them"
    table.caption_justify = "left"
    console.print(table, highlight=False)


@audit.command("verify")
def verify(
    log: Path = _LOG,
    public_key: Path | None = typer.Option(
        None,
        "--public-key",
        help="The key checkpoints must be signed by (PEM or hex); default: the .pub beside the log.",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="A checkpoint kept elsewhere (the controller's fleet-data/audit-checkpoints/DEV.json).",
    ),
    device: str | None = typer.Option(
        None, "--device", help="Check against the checkpoint the controller keeps for this device."
    ),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
) -> None:
    """Walk the hash chain and the signed checkpoints; exit 2 saying where the log is damaged."""
    needs_extra("secure", "cryptography")
    from fogline.security import Checkpoint, key_fingerprint, load_public_key, verify_log

    trusted = None
    key_from = ""
    if public_key is not None:
        trusted = load_public_key(public_key)
    elif log.with_suffix(".pub").is_file():
        trusted = load_public_key(log.with_suffix(".pub"))
        key_from = f" (the key beside the log, {log.with_suffix('.pub').name})"
    external = None
    if checkpoint is not None and device is not None:
        raise ConfigError(
            "give --checkpoint FILE or --device DEV (the controller's copy), not both"
        )
    if checkpoint is not None:
        try:
            kept = json.loads(checkpoint.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--checkpoint {checkpoint}: cannot read it: {exc}") from None
        external = Checkpoint.from_dict(kept, where=f"--checkpoint {checkpoint}")
    elif device is not None:
        kept = Api(controller, token, data).call("GET", f"/api/devices/{device}/audit-checkpoint")
        external = Checkpoint.from_dict(kept, where=f"the controller's checkpoint of {device}")
    report = verify_log(log, trusted=trusted, external=external)
    if report.intact:
        point = report.last_checkpoint
        signed = (
            "no checkpoint yet"
            if point is None
            else f"last checkpoint seq {point.seq} signed by {point.signer}"
        )
        against = (
            ""
            if external is None
            else f"; matches the checkpoint kept elsewhere (seq {external.seq})"
        )
        console.print(
            f"[green]intact[/]: {report.events:,} events, {signed}{escape(against)}",
            highlight=False,
        )
        if trusted is None and report.checkpoints:
            console.print(
                "checkpoints were checked against the key they name; give --public-key to "
                "check who signed them",
                highlight=False,
            )
        elif trusted is not None:
            console.print(
                f"trusted key {key_fingerprint(trusted)}{escape(key_from)}", highlight=False
            )
        return
    console_err.print(
        f"[red]damaged[/]: {escape(str(log))}: {len(report.damages)} problem(s) in "
        f"{report.lines:,} lines",
        highlight=False,
    )
    for damage in report.damages:
        console_err.print(f"  {escape(str(damage))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@audit.command("checkpoint")
def checkpoint_(
    log: Path = _LOG,
    key: Path | None = typer.Option(
        None,
        "--key",
        help="The signing key (PEM; made, 0600, if missing). Default: beside the log.",
    ),
) -> None:
    """Sign the log's head now (the agent does this with each telemetry report)."""
    needs_extra("secure", "cryptography")
    from fogline.security import AuditLog, AuditSigner

    if not log.is_file():
        raise ConfigError(f"{log}: no such audit log")
    signer = AuditSigner(log.with_suffix(".key") if key is None else key)
    point = AuditLog(log, signer=signer).checkpoint()
    if point is None:
        console.print("the log is empty: nothing to sign", highlight=False)
        return
    console.print(
        f"checkpoint seq {point.seq} hash {point.hash[:16]}… signed by {point.signer} "
        f"(public key {escape(str(signer.public_file))})",
        highlight=False,
    )
