"""The audit log: security-relevant events in an append-only, hash-chained JSON-lines file.

Each line is one event: ``{"seq", "time", "event", "fields", "prev", "hash"}``
where ``hash`` is SHA-256 over the canonical JSON of the line without it and
``prev`` is the hash of the line before (64 zeros for the first). Editing,
deleting or re-ordering a line breaks the chain at that line.

:meth:`AuditLog.record` is the one way to write an event; it appends under a
file lock (processes and threads alike) and fsyncs before it returns.

>>> import pathlib, tempfile
>>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "audit.jsonl")
>>> log.record("key.created", fingerprint="ab12")["seq"]
1
>>> log.record("store.erased", where="source == 'cam-3'", rows=4)["seq"]
2
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from fogline._files import file_lock
from fogline.errors import ConfigError

#: The ``prev`` of the first line.
GENESIS = "0" * 64


def line_hash(entry: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``entry`` without its ``hash`` key."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class AuditLog:
    """One device's or controller's audit log file (created with its folder on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append ``event`` (dotted name: ``release.installed``) with JSON ``fields``; return the line."""
        if not event or any(c.isspace() for c in event):
            raise ConfigError(
                f"audit event name {event!r}: one dotted word, like release.installed"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            seq, prev = self._tail()
            entry: dict[str, Any] = {
                "seq": seq + 1,
                "time": round(time.time(), 6),
                "event": event,
                "fields": fields,
                "prev": prev,
            }
            entry["hash"] = line_hash(entry)
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def _tail(self) -> tuple[int, str]:
        """The last line's ``seq`` and ``hash`` (0 and :data:`GENESIS` for a new log)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                block = min(size, 65536)
                fh.seek(size - block)
                lines = fh.read(block).splitlines()
        except FileNotFoundError:
            return 0, GENESIS
        for raw in reversed(lines):
            if raw.strip():
                try:
                    last = json.loads(raw)
                    return int(last["seq"]), str(last["hash"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ConfigError(
                        f"{self.path}: the last line is not an audit entry; "
                        "run `fogline audit verify` to see where the log was damaged"
                    ) from exc
        return 0, GENESIS
