"""The controller's side of the audit logs: each device's latest checkpoint, and login failures.

:class:`CheckpointBook` keeps, per device, the newest signed checkpoint its
telemetry carried, in ``fleet-data/audit-checkpoints/<device>.json`` (the
file ``fogline audit verify DEV/audit.jsonl --checkpoint …`` takes). The
first key a device signs with is pinned; a checkpoint signed by another key,
or one with a bad signature, is refused, and one behind the kept one (the
device's log went back: cut, or replaced) is not taken — each of these is an
event in the controller's own audit log.

:class:`LoginFailures` records ``api.login_failed`` events with the client's
address, at most ``burst`` per ``window`` seconds: a flood of bad tokens
costs one summary line per window (``suppressed``: how many were not
written), not the disk.

Concurrency: the book is written by the controller's worker thread only;
:class:`LoginFailures` is called from the API's threads and holds a lock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fogline._files import atomic_write
from fogline.errors import ConfigError
from fogline.protocol import Telemetry, check_device_id
from fogline.security import AuditLog, Checkpoint

log = logging.getLogger("fogline.controller")


class CheckpointBook:
    """The newest audit checkpoint of each device, one JSON file per device in ``folder``."""

    def __init__(self, folder: Path, audit: AuditLog) -> None:
        self.folder = Path(folder)
        self.audit = audit

    def path(self, device_id: str) -> Path:
        return self.folder / f"{check_device_id(device_id)}.json"

    def latest(self, device_id: str) -> Checkpoint | None:
        """The kept checkpoint of ``device_id`` (None: none came yet)."""
        path = self.path(device_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read the kept checkpoint: {exc}") from None
        return Checkpoint.from_dict(data, where=str(path))

    def kept(self, device_id: str) -> dict[str, Any] | None:
        """The kept checkpoint of ``device_id`` as stored (JSON), for the API."""
        point = self.latest(device_id)
        return None if point is None else {**point.as_dict(), "device": device_id}

    def keep_reports(self, reports: Iterable[Telemetry]) -> int:
        """Keep the checkpoints these reports carry; how many were newer than the kept ones."""
        newest: dict[str, Checkpoint] = {}
        for report in reports:
            if report.audit is not None:
                point = Checkpoint.from_dict(report.audit.model_dump())
                held = newest.get(report.device_id)
                if held is None or point.seq >= held.seq:
                    newest[report.device_id] = point
        return sum(self.keep(device_id, point) for device_id, point in newest.items())

    def keep(self, device_id: str, point: Checkpoint) -> bool:
        """Keep ``point`` if it is signed by the device's key and newer; whether it was kept."""
        held = self.latest(device_id)
        trusted = None
        if held is not None:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            trusted = Ed25519PublicKey.from_public_bytes(bytes.fromhex(held.key))
        try:
            point.verify(trusted)
        except ConfigError as exc:
            log.warning("device %s: audit checkpoint refused: %s", device_id, exc)
            self.audit.record(
                "audit.checkpoint_refused", device=device_id, seq=point.seq, reason=str(exc)
            )
            return False
        if held is not None and point.seq <= held.seq:
            if point.seq < held.seq:
                log.warning(
                    "device %s: audit log went back from seq %d to %d",
                    device_id,
                    held.seq,
                    point.seq,
                )
                self.audit.record(
                    "audit.checkpoint_regressed", device=device_id, kept=held.seq, seq=point.seq
                )
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        data = json.dumps({**point.as_dict(), "device": device_id}, indent=2).encode()
        atomic_write(self.path(device_id), data + b"\n")
        return True


class LoginFailures:
    """Records failed logins at the API, at most ``burst`` per ``window`` seconds."""

    def __init__(
        self,
        audit: AuditLog,
        *,
        burst: int = 20,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.burst = burst
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._started = -float("inf")
        self._written = 0
        self._suppressed = 0

    def failed(self, client: str, path: str) -> bool:
        """Count one failure from ``client`` on ``path``; whether an event was written."""
        with self._lock:
            now = self._clock()
            if now - self._started >= self.window:
                self._started, self._written = now, 0
            if self._written >= self.burst:
                self._suppressed += 1
                return False
            self._written += 1
            fields: dict[str, Any] = {"client": client, "path": path}
            if self._suppressed:  # the ones the last full window did not write
                fields["suppressed"] = self._suppressed
                self._suppressed = 0
            try:
                self.audit.record("api.login_failed", **fields)
            except Exception:
                log.exception("audit log: could not record a login failure")
                return False
            return True
