"""Verify an audit log: walk its chain once, in a stream, and say where and how it was damaged.

What each kind of damage looks like, and how it is named (:class:`AuditDamage`):

- ``edited``: a line's content does not match its own hash; or a line whose
  hash was made again, which the next line's ``prev`` no longer matches.
- ``deleted``: ``seq`` jumps forward and the missing ones never come.
- ``reordered``: ``seq`` jumps, and the missing ones come later (or one goes back).
- ``truncated``: the first line is not seq 1 (the start was cut), or the
  log ends before a checkpoint held elsewhere says it reached.

A log cut after its last checkpoint is a whole chain: nothing in the file can
show the cut. So the report also says how far a signature vouches for the
log (:attr:`AuditReport.vouched_seq`: its own last checkpoint, or the one
held elsewhere) and how many events come after that
(:attr:`AuditReport.unvouched`): those are the ones a cut could have taken
from, unseen, until they are checked against a later checkpoint kept elsewhere.
- ``forged``: a checkpoint whose signature does not hold, is by another
  key than the trusted one, or vouches for a hash the log does not have.
- ``malformed``: a line that is not an audit entry (not JSON, torn write).

Lines are checked on a fast path first: the line's bytes without its
``,"hash":"…"`` member *are* the canonical JSON its hash was made from, so a
line whose bytes hash right needs no JSON parsing; only lines that fail it
are parsed, to say what is wrong with them.

>>> import pathlib, tempfile
>>> from fogline.security._audit import AuditLog
>>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
>>> for n in range(3):
...     _ = log.record("key.created", n=n)
>>> verify_log(log.path).intact
True
>>> lines = log.path.read_bytes().splitlines(keepends=True)
>>> _ = log.path.write_bytes(lines[0] + lines[2])
>>> print(verify_log(log.path).damages[0])
line 2 (seq 3): deleted: seq 2 is missing before this line
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fogline.errors import ConfigError
from fogline.security._audit import CHECKPOINT_EVENT, GENESIS, line_hash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from fogline.security._audit_signing import Checkpoint

DamageKind = Literal["edited", "deleted", "reordered", "truncated", "forged", "malformed"]

# The end of a canonical line: hash, prev, seq, time (keys sort so), then the closing brace.
_TAIL = re.compile(
    rb',"hash":"([0-9a-f]{64})","prev":"([0-9a-f]{64})","seq":(\d+),"time":([-+.eE0-9]+)}$'
)
_CHECKPOINT_START = b'{"event":"' + CHECKPOINT_EVENT.encode() + b'"'


@dataclass(frozen=True)
class AuditDamage:
    """One place the log is damaged: its line number (1-based), the seq there, what broke."""

    line: int
    seq: int | None
    kind: DamageKind
    message: str

    def __str__(self) -> str:
        seq = "" if self.seq is None else f" (seq {self.seq})"
        return f"line {self.line}{seq}: {self.kind}: {self.message}"


@dataclass
class AuditReport:
    """What :func:`verify_log` found: counts, the last checkpoint, and every damage."""

    path: Path
    lines: int = 0
    events: int = 0  # lines that are not checkpoints
    last_seq: int = 0
    last_hash: str = GENESIS
    checkpoints: int = 0
    last_checkpoint: Checkpoint | None = None
    #: The checkpoint held elsewhere (the controller's) that the log was checked against.
    external: Checkpoint | None = None
    damages: list[AuditDamage] = field(default_factory=list)
    #: The last seq a valid signature vouches for (0: none does).
    vouched_seq: int = 0
    #: Events after ``vouched_seq``: nothing proves the log did not go on after them.
    unvouched: int = 0

    @property
    def intact(self) -> bool:
        """No damage found; the entries after ``vouched_seq`` are whole *as far as they go*."""
        return not self.damages


def verify_log(
    path: Path,
    *,
    trusted: Ed25519PublicKey | None = None,
    external: Checkpoint | None = None,
) -> AuditReport:
    """Check the chain, every checkpoint in it, and ``external`` (a checkpoint held elsewhere).

    ``trusted`` is the key checkpoints must be signed by (None: each is
    checked against the key it names, which proves only that it is whole).
    """
    path = Path(path)
    report = AuditReport(path, external=external)
    if external is not None:
        _check_signature(
            report, external, trusted, line=0, seq=external.seq, where="the external checkpoint"
        )
    walk = _Walk(report, trusted, external)
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                walk.line(number, raw)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such audit log") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the audit log: {exc.strerror or exc}") from exc
    walk.finish()
    report.damages.sort(key=lambda d: d.line)
    return report


class _Walk:
    """The state of one pass over the lines."""

    def __init__(
        self, report: AuditReport, trusted: Ed25519PublicKey | None, external: Checkpoint | None
    ) -> None:
        self.report = report
        self.trusted = trusted
        self.external = external
        self.prev_seq = 0
        self.prev_hash = GENESIS
        self.prev_line = 0
        self.high = 0  # the highest seq so far
        self.seen_external = False
        self.since_checkpoint = 0  # events after the last valid checkpoint
        self.after_external = 0  # events after the external checkpoint's seq
        #: seq → line where it was expected but missing; resolved as deleted or re-ordered.
        self.missing: dict[int, int] = {}
        self.gaps: list[tuple[int, int, int, int]] = []  # (line, seq there, first, last missing)

    def damage(self, line: int, seq: int | None, kind: DamageKind, message: str) -> None:
        self.report.damages.append(AuditDamage(line, seq, kind, message))

    def line(self, number: int, raw: bytes) -> None:
        self.report.lines = number
        text = raw.rstrip(b"\n")
        start = text.rfind(b',"hash":"')
        match = _TAIL.match(text, start) if start >= 0 else None
        if match is not None:
            head = text[: match.start()] + text[match.start() + 74 :]  # without ,"hash":"<64>"
            own = match.group(1).decode()
            if hashlib.sha256(head).hexdigest() == own:
                seq = int(match.group(3))
                is_checkpoint = text.startswith(_CHECKPOINT_START)
                entry = json.loads(text) if is_checkpoint else None
                self.chain(number, seq, match.group(2).decode(), own, entry)
                return
        self.slow(number, text, complete=raw.endswith(b"\n"))

    def slow(self, number: int, text: bytes, *, complete: bool) -> None:
        """A line that failed the fast path: say what is wrong with it."""
        try:
            entry = json.loads(text)
            seq, own, prev = int(entry["seq"]), str(entry["hash"]), str(entry["prev"])
            str(entry["event"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            what = (
                "not an audit entry; the file ends here without a newline (a write cut short)"
                if not complete
                else "not an audit entry (not JSON, or a field is missing)"
            )
            self.damage(number, None, "malformed", what)
            return
        if line_hash(entry) != own:
            self.damage(number, seq, "edited", "the line does not match its own hash")
        else:  # hashes right, but not as record() writes it: written by something else
            self.damage(number, seq, "edited", "the line was re-written (not in canonical form)")
        self.chain(number, seq, prev, own, entry if entry["event"] == CHECKPOINT_EVENT else None)

    def chain(
        self, number: int, seq: int, prev: str, own: str, checkpoint: dict[str, Any] | None
    ) -> None:
        expected = self.high + 1
        if number == 1 and seq != 1:
            self.damage(
                number, seq, "truncated", f"the log starts at seq {seq}: seq 1 to {seq - 1} cut"
            )
        elif seq > expected:
            for missing in range(expected, min(seq, expected + 100_000)):
                self.missing.setdefault(missing, number)
            self.gaps.append((number, seq, expected, seq - 1))
        elif seq < expected and seq not in self.missing:  # a missing one is reported below
            self.damage(
                number,
                seq,
                "reordered",
                f"seq {seq} comes after seq {self.prev_seq} (line {self.prev_line})",
            )
        elif seq == expected and self.prev_seq == seq - 1 and prev != self.prev_hash:
            if number == 1:
                self.damage(number, seq, "edited", "the first line's prev is not the genesis hash")
            else:
                self.damage(
                    self.prev_line,
                    self.prev_seq,
                    "edited",
                    f"line {number}'s prev does not match this line's hash: this line was "
                    "replaced (its hash made again)",
                )
        if seq in self.missing:
            where = self.missing.pop(seq)
            self.damage(
                number, seq, "reordered", f"seq {seq} belongs before line {where}; moved here"
            )
        if checkpoint is not None:
            self.checkpoint(number, seq, checkpoint)
        else:
            self.report.events += 1
            self.since_checkpoint += 1
            if self.external is not None and seq > self.external.seq:
                self.after_external += 1
        if self.external is not None and seq == self.external.seq:
            self.seen_external = True
            if own != self.external.hash:
                self.damage(
                    number,
                    seq,
                    "forged",
                    f"the checkpoint held elsewhere (signed by {self.external.signer}) says seq "
                    f"{seq} has hash {self.external.hash[:16]}…; this log has {own[:16]}…: "
                    "rewritten up to here",
                )
        self.prev_seq, self.prev_hash, self.prev_line = seq, own, number
        self.high = max(self.high, seq)
        self.report.last_seq, self.report.last_hash = seq, own

    def checkpoint(self, number: int, seq: int, entry: dict[str, Any]) -> None:
        from fogline.security._audit_signing import Checkpoint

        self.report.checkpoints += 1
        try:
            point = Checkpoint.from_dict(entry.get("fields"), where="checkpoint")
        except ConfigError as exc:
            self.damage(number, seq, "forged", str(exc))
            return
        if not _check_signature(self.report, point, self.trusted, line=number, seq=seq):
            return
        if point.seq != self.prev_seq or point.hash != self.prev_hash:
            self.damage(
                number,
                seq,
                "forged",
                f"the checkpoint vouches for seq {point.seq} with hash {point.hash[:16]}…, but "
                f"the line before is seq {self.prev_seq} with hash {self.prev_hash[:16]}…: "
                "the log before it was rewritten",
            )
            return
        self.report.last_checkpoint = point
        self.since_checkpoint = 0

    def finish(self) -> None:
        report, external = self.report, self.external
        if report.last_checkpoint is not None:
            report.vouched_seq, report.unvouched = report.last_checkpoint.seq, self.since_checkpoint
        else:
            report.unvouched = self.since_checkpoint
        if external is not None and self.seen_external and external.seq > report.vouched_seq:
            report.vouched_seq, report.unvouched = external.seq, self.after_external
        for number, seq, first, last in self.gaps:
            gone = [s for s in range(first, last + 1) if self.missing.get(s) == number]
            if gone:
                span = f"seq {gone[0]}" if len(gone) == 1 else f"seq {gone[0]} to {gone[-1]}"
                verb = "is" if len(gone) == 1 else "are"
                self.damage(number, seq, "deleted", f"{span} {verb} missing before this line")
        external = self.external
        if external is not None and not self.seen_external and external.seq > self.high:
            self.damage(
                self.report.lines + 1,
                None,
                "truncated",
                f"the log ends at seq {self.high}, but the checkpoint held elsewhere "
                f"(signed by {external.signer}) covers seq {external.seq}: "
                f"{external.seq - self.high} or more events were cut from the end",
            )


def _check_signature(
    report: AuditReport,
    point: Checkpoint,
    trusted: Ed25519PublicKey | None,
    *,
    line: int,
    seq: int,
    where: str = "the checkpoint",
) -> bool:
    try:
        point.verify(trusted)
    except ConfigError as exc:
        report.damages.append(AuditDamage(line, seq, "forged", f"{where}: {exc}"))
        return False
    return True
