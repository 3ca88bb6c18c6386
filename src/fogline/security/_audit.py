"""The audit log: security-relevant events in an append-only, hash-chained JSON-lines file.

Each line is one event: ``{"seq", "time", "event", "fields", "prev", "hash"}``
where ``hash`` is SHA-256 over the canonical JSON of the line without it and
``prev`` is the hash of the line before (64 zeros for the first). Editing,
deleting or re-ordering a line breaks the chain at that line
(:func:`~fogline.security.verify_log` says where).

:meth:`AuditLog.record` is the one way to write an event; it appends under a
file lock (processes and threads alike) and fsyncs before it returns.
:meth:`AuditLog.checkpoint` appends a signed checkpoint (event
``audit.checkpoint``, see :mod:`._audit_signing`): the statement, signed with
the log's Ed25519 key, that the line before it ends the chain so far. With a
``signer`` and ``checkpoint_every=N`` one is added after every N events; the
agent also asks for one with each telemetry report, which carries it to the
controller. A log cut short at its end is found only against a checkpoint
kept elsewhere (the controller's copy): the chain itself cannot show it.

>>> import pathlib, tempfile
>>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
>>> log.record("key.created", fingerprint="ab12")["seq"]
1
>>> log.record("store.erased", where="source == 'cam-3'", rows=4)["seq"]
2
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fogline._files import file_lock
from fogline.errors import ConfigError

if TYPE_CHECKING:  # cryptography is loaded only by a log that signs
    from fogline.security._audit_signing import AuditSigner, Checkpoint

log = logging.getLogger(__name__)

#: The ``prev`` of the first line.
GENESIS = "0" * 64

#: The event of a signed checkpoint line; its fields are the :class:`Checkpoint`.
CHECKPOINT_EVENT = "audit.checkpoint"


def line_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``entry`` without its ``hash`` key."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def default_key_file(log: Path) -> Path:
    """Where a log's signing key is kept unless told: beside it, ``audit.jsonl`` → ``audit.key``."""
    return Path(log).with_suffix(".key")


class AuditLog:
    """One device's or controller's audit log file (created with its folder on first use).

    ``signer`` signs checkpoints (:meth:`checkpoint`); with ``checkpoint_every``
    one is appended by :meth:`record` after every that many events.
    ``fsync=False`` leaves flushing to the OS (a crash may lose the last
    events, never break the chain): for bulk writers that checkpoint often.
    """

    def __init__(
        self,
        path: Path,
        *,
        signer: AuditSigner | None = None,
        checkpoint_every: int | None = None,
        fsync: bool = True,
    ) -> None:
        if checkpoint_every is not None and (checkpoint_every < 1 or signer is None):
            raise ConfigError("checkpoint_every needs a signer and is at least 1 event")
        self.path = Path(path)
        self.signer = signer
        self.checkpoint_every = checkpoint_every
        self.fsync = fsync
        self._folder_made = False
        self._torn = False  # the file does not end with a newline: the next line starts one

    @classmethod
    def signed(cls, path: Path, *, checkpoint_every: int | None = None) -> AuditLog:
        """A log that signs its checkpoints with the key beside it (made on first use)."""
        from fogline.security._audit_signing import AuditSigner

        signer = AuditSigner(default_key_file(path))
        return cls(path, signer=signer, checkpoint_every=checkpoint_every)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``event`` (dotted name: ``release.installed``) with JSON ``fields``; return the line."""
        if not event or any(c.isspace() for c in event):
            raise ConfigError(
                f"audit event name {event!r}: one dotted word, like release.installed"
            )
        if event == CHECKPOINT_EVENT:
            raise ConfigError(f"{CHECKPOINT_EVENT} lines are written by checkpoint() only")
        with self._locked():
            entry = self._append(event, fields, self._tail())
            every = self.checkpoint_every
            if every is not None and entry["seq"] % every == 0:
                self._sign(entry)
        return entry

    def checkpoint(self) -> Checkpoint | None:
        """Sign the log's head now; the checkpoint (None: the log is empty).

        When the last line already is a checkpoint nothing is added and that
        one is returned, so asking with every telemetry report adds a line
        only when events came in between.
        """
        if self.signer is None:
            raise ConfigError(f"{self.path}: this log has no signing key to checkpoint with")
        from fogline.security._audit_signing import Checkpoint

        with self._locked():
            last = self._tail()
            if last is None:
                return None
            if last["event"] == CHECKPOINT_EVENT:
                return Checkpoint.from_dict(last["fields"], where=f"{self.path}: last line")
            return self._sign(last)

    def _sign(self, last: dict[str, Any]) -> Checkpoint:
        """Append a checkpoint of ``last`` (the log's last line); under the lock."""
        assert self.signer is not None
        point = self.signer.sign(int(last["seq"]), str(last["hash"]))
        self._append(CHECKPOINT_EVENT, point.as_dict(), last)
        return point

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not self._folder_made:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._folder_made = True
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            yield

    def _append(
        self, event: str, fields: dict[str, Any], last: dict[str, Any] | None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": 1 if last is None else int(last["seq"]) + 1,
            "time": round(time.time(), 6),
            "event": event,
            "fields": fields,
            "prev": GENESIS if last is None else str(last["hash"]),
        }
        entry["hash"] = line_hash(entry)
        line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, ("\n" if self._torn else "").encode() + (line + "\n").encode())
            self._torn = False
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def _tail(self) -> dict[str, Any] | None:
        """The last entry (None for a new log).

        A last line that is not an entry (a write cut short by a power loss,
        or an edit) is stepped over: the next event chains to the last
        entry before it, starting on a line of its own, and ``verify`` shows
        the bad line as ``malformed`` where it is.
        """
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            self._torn = False
            return None
        with fh:
            size = fh.seek(0, os.SEEK_END)
            block = 4096
            while True:
                start = max(0, size - block)
                fh.seek(start)
                data = fh.read(size - start)
                lines = data.split(b"\n")
                if start > 0:
                    lines = lines[1:]  # the first may be cut by the block's start
                skipped = 0
                for raw in reversed(lines):
                    if not raw.strip():
                        continue
                    entry = _entry(raw)
                    if entry is None:
                        skipped += 1
                        continue
                    self._torn = not data.endswith(b"\n")
                    if skipped:
                        log.warning(
                            "%s: %d line(s) at the end are not audit entries (a write cut "
                            "short?); the next event follows seq %s",
                            self.path,
                            skipped,
                            entry["seq"],
                        )
                    return entry
                if start == 0 or block >= 1 << 24:
                    break
                block *= 4
        self._torn = size > 0 and not data.endswith(b"\n")
        if size and any(line.strip() for line in lines):
            raise ConfigError(
                f"{self.path}: no line near the end is an audit entry; "
                "run `fogline audit verify` to see where the log was damaged"
            )
        return None


def _entry(raw: bytes) -> dict[str, Any] | None:
    """``raw`` as an audit entry, or None when it is not one."""
    try:
        entry = json.loads(raw)
        int(entry["seq"]), str(entry["hash"]), str(entry["event"])
    except (ValueError, KeyError, TypeError):
        return None
    return dict(entry) if isinstance(entry, dict) else None
