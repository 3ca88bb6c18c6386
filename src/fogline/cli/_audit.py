"""``fogline audit show|verify|checkpoint``: read, check and sign a device's or controller's audit log.

A device's log is ``DEV/audit.jsonl`` (the agent's data folder), the
controller's ``fleet-data/audit.jsonl``, a standalone pipeline's
``audit.jsonl`` beside its store. ``verify`` exits 0 when the chain is whole
and 2 with every place it is damaged; it says how many entries come after
the last signed checkpoint (``--strict``: exit 1 when any do), since a cut
among them cannot show in the file. ``--checkpoint`` checks it against a
checkpoint kept elsewhere (the controller's copy of the device's last one,
``fleet-data/audit-checkpoints/<device>.json``), which is what finds a log
cut short at its end; a device's log is checked by default against the
agent's copy of the last checkpoint it sent (``DEV/agent/audit-sent.json``).
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
from fogline.cli._options import file_option
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
    public_key: Path | None = file_option(
        "--public-key",
        "The key checkpoints must be signed by (PEM or hex); default: the .pub beside the log.",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="A checkpoint kept elsewhere (the controller's fleet-data/audit-checkpoints/DEV.json). "
        "Default for a device's log: the agent's copy of the last one it sent "
        "(DEV/agent/audit-sent.json), when there is one.",
    ),
    device: str | None = typer.Option(
        None, "--device", help="Check against the checkpoint the controller keeps for this device."
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="Exit 1 when entries after the last checkpoint are vouched for by no signature.",
    ),
    controller: str = _CONTROLLER,
    token: str | None = _TOKEN,
    data: Path = _DATA,
) -> None:
    """Walk the hash chain and the signed checkpoints; exit 2 saying where the log is damaged.

    Only a signature vouches for the end of a log: entries after the last
    checkpoint, and a log cut right after one, show as whole until checked
    against a checkpoint kept elsewhere (--checkpoint, --device).
    """
    needs_extra("secure", "cryptography")
    from fogline.security import (
        SENT_CHECKPOINT,
        Checkpoint,
        key_fingerprint,
        read_checkpoint,
        verify_log,
    )

    trusted, key_from = _trusted_key(log, public_key)
    if checkpoint is not None and device is not None:
        raise ConfigError(
            "give --checkpoint FILE or --device DEV (the controller's copy), not both"
        )
    external, against = None, ""
    sent = log.parent / SENT_CHECKPOINT
    if checkpoint is not None:
        external = read_checkpoint(checkpoint, where=f"--checkpoint {checkpoint}")
        against = f"the checkpoint in {checkpoint}"
    elif device is not None:
        kept = Api(controller, token, data).call("GET", f"/api/devices/{device}/audit-checkpoint")
        external = Checkpoint.from_dict(kept, where=f"the controller's checkpoint of {device}")
        against = f"the controller's checkpoint of {device}"
    elif sent.is_file():
        external = read_checkpoint(sent)
        against = f"the last checkpoint the agent sent, {SENT_CHECKPOINT}"
    report = verify_log(log, trusted=trusted, external=external)
    if not report.intact:
        console_err.print(
            f"[red]damaged[/]: {escape(str(log))}: {len(report.damages)} problem(s) in "
            f"{report.lines:,} lines",
            highlight=False,
        )
        for damage in report.damages:
            console_err.print(f"  {escape(str(damage))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    point = report.last_checkpoint
    signed = (
        "no checkpoint yet"
        if point is None
        else f"last checkpoint seq {point.seq} signed by {point.signer}"
    )
    matched = "" if external is None else f"; matches {against} (seq {external.seq})"
    if report.unvouched:
        verdict = "[yellow]chain intact, end not vouched for[/]"
    elif external is None:
        verdict = "[green]intact up to its last checkpoint[/]"
    else:
        verdict = "[green]intact[/]"
    console.print(
        f"{verdict}: {report.events:,} events, {signed}{escape(matched)}", highlight=False
    )
    if trusted is None and report.checkpoints:
        console.print(
            "checkpoints were checked against the key they name; give --public-key to "
            "check who signed them",
            highlight=False,
        )
    elif trusted is not None:
        console.print(f"trusted key {key_fingerprint(trusted)}{escape(key_from)}", highlight=False)
    elsewhere = (
        "--checkpoint FILE (the controller's fleet-data/audit-checkpoints/DEV.json) "
        "or --device DEV --controller URL"
    )
    if report.unvouched:
        events = "1 event" if report.unvouched == 1 else f"{report.unvouched:,} events"
        verb = "is" if report.unvouched == 1 else "are"
        after = (
            " (the log has no valid checkpoint)"
            if report.vouched_seq == 0
            else f" after seq {report.vouched_seq}, the last one a signed checkpoint vouches for,"
        )
        console.print(
            f"{events}{after} {verb} not vouched for by any signature: events cut from the end "
            f"would not show; check them against a later checkpoint kept elsewhere: {elsewhere}",
            highlight=False,
        )
        if strict:
            raise typer.Exit(1)
    elif external is None:
        console.print(
            f"whether the log went on after seq {report.vouched_seq} shows only against a "
            f"checkpoint kept elsewhere: {elsewhere}",
            highlight=False,
        )


def _trusted_key(log: Path, public_key: Path | None) -> tuple[Any, str]:
    """The key checkpoints must be signed by (given, or the .pub beside the log), and whence."""
    from fogline.security import load_public_key

    if public_key is not None:
        return load_public_key(public_key), ""
    beside = log.with_suffix(".pub")
    if beside.is_file():
        return load_public_key(beside), f" (the key beside the log, {beside.name})"
    return None, ""


@audit.command("checkpoint")
def checkpoint_(
    log: Path = _LOG,
    key: Path | None = file_option(
        "--key", "The signing key (PEM; made, 0600, if missing). Default: beside the log."
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
