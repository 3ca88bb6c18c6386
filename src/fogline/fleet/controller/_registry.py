"""The controller's registry: devices, enrolment tokens, desired states, deployments, telemetry.

One SQLite file, opened by :func:`fogline.store.open_database` with the
registry's own :data:`MIGRATIONS` (WAL, ``synchronous=NORMAL``: the registry
is rebuilt from the devices' retained state if its last commits are lost),
behind one lock, so the MQTT worker, the rollout loop and the HTTP API may
all call it. Every write is one transaction; :meth:`Registry.ingest` takes a
whole batch of device messages at once, which is what keeps a thousand
devices cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fogline.errors import ConfigError, StoreError
from fogline.fleet.controller._monitoring import store_monitoring
from fogline.fleet.controller._records import Device, Inbox, device_from_row
from fogline.fleet.controller._schema import MIGRATIONS, SCHEMA_VERSION
from fogline.protocol import DesiredState, DeviceState
from fogline.store import database_errors, open_database

#: The columns of a telemetry row (table ``metrics``), in the order the API lists them.
METRIC_COLUMNS = (
    "device_id", "time", "release", "version", "items", "items_per_second", "p50_ms", "p99_ms",
    "errors", "drops", "accuracy", "drift", "cpu_percent", "memory_mb",
    "joules", "joules_per_item", "energy", "energy_measured",
)  # fmt: skip

if TYPE_CHECKING:
    from fogline.security import DeviceKey

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Device", "Inbox", "Registry"]


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Registry:
    """The controller's SQLite registry; safe to share between threads."""

    def __init__(self, path: Path, *, timeout: float = 10.0, key: DeviceKey | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._conn = open_database(
            self.path,
            MIGRATIONS,
            what="registry",
            timeout=timeout,
            synchronous="NORMAL",  # rebuilt from the devices' retained state (see the module)
            foreign_keys=False,  # it has always run without them; turning them on is a change
            key=key,  # the controller's `--db-key`: the file is encrypted (SQLCipher)
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if not self._conn.in_transaction:
                    self._conn.execute("BEGIN IMMEDIATE")
                yield self._conn
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, database_errors()):
                    raise StoreError(f"{self.path}: {exc}") from exc
                raise

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._conn.execute(sql, args))
            except database_errors() as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    # -- events ---------------------------------------------------------------------------

    def event(
        self,
        kind: str,
        message: str,
        *,
        device_id: str | None = None,
        deployment: str | None = None,
        now: float | None = None,
    ) -> None:
        with self._tx() as conn:
            _insert_event(
                conn, time.time() if now is None else now, kind, message, device_id, deployment
            )

    def events(
        self, *, deployment: str | None = None, device: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first, of one deployment and/or one device.

        A device's events are its own (enrolment, a release it failed or
        refused) and those of every deployment that reached it: a rollback is
        recorded once per deployment, with no device, and belongs on the page
        of each device it sent back. A device still waiting in a later wave
        was never touched by the deployment, so that deployment's events are
        not listed for it.
        """
        sql = "SELECT time, kind, device_id, deployment, message FROM events"
        where: list[str] = []
        args: list[object] = []
        if deployment is not None:
            where.append("deployment = ?")
            args.append(deployment)
        if device is not None:
            where.append(
                "(device_id = ? OR (device_id IS NULL AND deployment IN ("
                "SELECT deployment FROM deployment_devices "
                "WHERE device_id = ? AND status != 'waiting')))"
            )
            args += [device, device]
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._rows(sql + " ORDER BY id DESC LIMIT ?", [*args, limit])
        keys = ("time", "kind", "device_id", "deployment", "message")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # -- devices and enrolment ------------------------------------------------------------

    def create_token(
        self, *, group: str = "default", tags: Iterable[str] = (), ttl: float = 86400.0
    ) -> str:
        """A one-time enrolment token for one device of ``group`` (only its digest is kept)."""
        token = secrets.token_urlsafe(24)
        now = time.time()
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO tokens VALUES (?,?,?,?,?,NULL)",
                (_digest(token), group, json.dumps(sorted(tags)), now, now + ttl),
            )
        return token

    def redeem_token(self, token: str, device_id: str) -> Device:
        """Use ``token`` once to enrol ``device_id``; ``ConfigError`` says why it cannot."""
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                "SELECT grp, tags, expires, used_by FROM tokens WHERE digest = ?", (_digest(token),)
            ).fetchone()
            if row is None:
                raise ConfigError("unknown enrolment token; create one with 'fogline fleet token'")
            grp, tags, expires, used_by = row
            if used_by is not None:
                raise ConfigError(f"this enrolment token was already used by {used_by!r}")
            if expires < now:
                raise ConfigError("this enrolment token has expired; create a new one")
            conn.execute(
                "UPDATE tokens SET used_by = ? WHERE digest = ?", (device_id, _digest(token))
            )
            conn.execute(
                "INSERT INTO devices (id, grp, tags, enrolled_at) VALUES (?,?,?,?) "
                "ON CONFLICT (id) DO UPDATE SET grp = excluded.grp, tags = excluded.tags, "
                "enrolled_at = excluded.enrolled_at",
                (device_id, grp, tags, now),
            )
        self.event("enrolled", f"enrolled in group {grp}", device_id=device_id)
        device = self.device(device_id)
        assert device is not None
        return device

    def set_group(self, device_id: str, group: str, tags: Iterable[str] | None = None) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO devices (id, grp) VALUES (?, ?) "
                "ON CONFLICT (id) DO UPDATE SET grp = excluded.grp",
                (device_id, group),
            )
            if tags is not None:
                conn.execute(
                    "UPDATE devices SET tags = ? WHERE id = ?",
                    (json.dumps(sorted(tags)), device_id),
                )

    def device(self, device_id: str) -> Device | None:
        rows = self._rows(
            "SELECT id, grp, tags, enrolled_at, last_seen, online, state FROM devices WHERE id = ?",
            (device_id,),
        )
        return device_from_row(rows[0]) if rows else None

    def devices_by_id(self, device_ids: Sequence[str]) -> dict[str, Device]:
        """The known devices among ``device_ids``, in a few queries rather than one each."""
        found: dict[str, Device] = {}
        for chunk in _chunks(device_ids):
            rows = self._rows(
                "SELECT id, grp, tags, enrolled_at, last_seen, online, state FROM devices "
                f"WHERE id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update((row[0], device_from_row(row)) for row in rows)
        return found

    def devices(self, group: str | None = None) -> list[Device]:
        sql = "SELECT id, grp, tags, enrolled_at, last_seen, online, state FROM devices"
        if group is None:
            return [device_from_row(row) for row in self._rows(sql + " ORDER BY id")]
        return [
            device_from_row(row) for row in self._rows(sql + " WHERE grp = ? ORDER BY id", (group,))
        ]

    def groups(self) -> list[str]:
        return [row[0] for row in self._rows("SELECT DISTINCT grp FROM devices ORDER BY grp")]

    # -- what devices report ---------------------------------------------------------------

    def ingest(self, inbox: Inbox, *, now: float | None = None) -> int:
        """Store one batch of states, presence and telemetry; returns new telemetry rows.

        Unknown devices are registered in group ``default`` when they first
        report (a broker without authentication lets anyone in; enrolment is
        what a secured fleet uses). Telemetry is deduplicated on its key, so
        a report delivered twice counts once. A release that turns ``failed``
        or ``refused`` is recorded as an event of the device (see
        :func:`_setbacks`), once per transition, not on every report; so is
        each drift alarm a report says was raised (see
        :func:`~fogline.fleet.controller._monitoring.store_monitoring`).
        """
        now = time.time() if now is None else now
        added = 0
        with self._tx() as conn:
            for state in inbox.states:
                for kind, message, deployment in _setbacks(conn, state):
                    _insert_event(conn, now, kind, message, state.device_id, deployment)
                conn.execute(
                    "INSERT INTO devices (id, last_seen, state) VALUES (?,?,?) "
                    "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, "
                    "state = excluded.state",
                    (state.device_id, now, state.model_dump_json()),
                )
            for device_id, presence in inbox.presence:
                conn.execute(
                    "INSERT INTO devices (id, last_seen, online) VALUES (?,?,?) "
                    "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, "
                    "online = excluded.online",
                    (device_id, now, int(presence.online)),
                )
            for key, report in inbox.telemetry:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO telemetry VALUES (?,?,?,?,?)",
                    (key, report.device_id, report.time, now, report.model_dump_json()),
                )
                if cursor.rowcount == 0:
                    continue
                added += 1
                conn.execute(
                    "INSERT INTO devices (id, last_seen) VALUES (?,?) "
                    "ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
                    (report.device_id, now),
                )
                conn.executemany(
                    f"INSERT INTO metrics ({', '.join(METRIC_COLUMNS)}) "
                    f"VALUES ({','.join('?' * len(METRIC_COLUMNS))})",
                    [
                        (
                            report.device_id,
                            report.time,
                            release,
                            report.versions.get(release),
                            m.items,
                            m.items_per_second,
                            m.p50_ms,
                            m.p99_ms,
                            m.errors,
                            m.drops,
                            m.accuracy,
                            m.drift,
                            report.cpu_percent,
                            report.memory_mb,
                            m.joules,
                            m.joules_per_item,
                            m.energy,
                            None if m.energy_measured is None else int(m.energy_measured),
                        )
                        for release, m in report.metrics.items()
                    ],
                )
                for kind, message, deployment in store_monitoring(conn, report, now):
                    _insert_event(conn, now, kind, message, report.device_id, deployment)
        return added

    def metrics(
        self,
        *,
        devices: Sequence[str] | None = None,
        release: str | None = None,
        since: float = 0.0,
        limit: int = 10000,
    ) -> list[dict[str, Any]]:
        """Telemetry rows (one per device, release and report), oldest first."""
        sql = f"SELECT {', '.join(METRIC_COLUMNS)} FROM metrics WHERE time >= ?"
        args: list[object] = [since]
        if release is not None:
            sql += " AND release = ?"
            args.append(release)
        if devices is not None:
            sql += f" AND device_id IN ({','.join('?' * len(devices))})"
            args.extend(devices)
        rows = self._rows(sql + " ORDER BY time DESC LIMIT ?", [*args, limit])
        found = [dict(zip(METRIC_COLUMNS, row, strict=True)) for row in reversed(rows)]
        for row in found:
            if row["energy_measured"] is not None:
                row["energy_measured"] = bool(row["energy_measured"])
        return found

    def apply_retention(self, *, max_age: float, now: float | None = None) -> int:
        """Drop telemetry older than ``max_age`` seconds; returns the rows removed."""
        cutoff = (time.time() if now is None else now) - max_age
        with self._tx() as conn:
            removed = conn.execute("DELETE FROM metrics WHERE time < ?", (cutoff,)).rowcount
            conn.execute("DELETE FROM telemetry WHERE time < ?", (cutoff,))
            conn.execute("DELETE FROM monitoring WHERE time < ?", (cutoff,))
        return int(removed)

    # -- desired state ---------------------------------------------------------------------

    def desired(self, device_id: str) -> DesiredState:
        rows = self._rows("SELECT body FROM desired WHERE device_id = ?", (device_id,))
        return DesiredState.model_validate_json(rows[0][0]) if rows else DesiredState(generation=0)

    def generations(self, device_ids: Sequence[str]) -> dict[str, int]:
        """The desired-state generation of each of ``device_ids`` that has one."""
        found: dict[str, int] = {}
        for chunk in _chunks(device_ids):
            rows = self._rows(
                "SELECT device_id, generation FROM desired "
                f"WHERE device_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update((device_id, int(generation)) for device_id, generation in rows)
        return found

    def all_desired(self) -> dict[str, DesiredState]:
        return {
            device_id: DesiredState.model_validate_json(body)
            for device_id, body in self._rows("SELECT device_id, body FROM desired")
        }

    def set_release(
        self,
        device_ids: Iterable[str],
        release: str,
        version: str | None,
        *,
        deployment: str | None,
        rollback: bool = False,
    ) -> list[tuple[str, DesiredState]]:
        """Point ``release`` of each device at ``version`` (None removes it); the new states.

        Each device's generation grows by one. With ``rollback`` the device
        is also told it may go back to that older version.
        """
        changed: list[tuple[str, DesiredState]] = []
        with self._tx() as conn:
            for device_id in device_ids:
                row = conn.execute(
                    "SELECT body FROM desired WHERE device_id = ?", (device_id,)
                ).fetchone()
                old = (
                    DesiredState.model_validate_json(row[0]) if row else DesiredState(generation=0)
                )
                releases = dict(old.releases)
                back = {k: v for k, v in old.rollback.items() if k != release}
                if version is None:
                    releases.pop(release, None)
                else:
                    releases[release] = version
                    if rollback:
                        back[release] = version
                new = DesiredState(
                    generation=old.generation + 1,
                    releases=releases,
                    rollback=back,
                    deployment=deployment,
                )
                conn.execute(
                    "INSERT INTO desired VALUES (?,?,?) ON CONFLICT (device_id) DO UPDATE SET "
                    "generation = excluded.generation, body = excluded.body",
                    (device_id, new.generation, new.model_dump_json()),
                )
                changed.append((device_id, new))
        return changed

    # -- deployments (rows only; the logic is in _rollout) ----------------------------------

    def execute(self, sql: str, args: Sequence[object] = ()) -> None:
        with self._tx() as conn:
            conn.execute(sql, args)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self._tx() as conn:
            conn.executemany(sql, rows)

    def query(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._rows(sql, args)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._tx() as conn:
            yield conn


def _insert_event(
    conn: sqlite3.Connection,
    now: float,
    kind: str,
    message: str,
    device_id: str | None,
    deployment: str | None,
) -> None:
    conn.execute(
        "INSERT INTO events (time, kind, device_id, deployment, message) VALUES (?,?,?,?,?)",
        (now, kind, device_id, deployment, message),
    )


def _setbacks(conn: sqlite3.Connection, state: DeviceState) -> list[tuple[str, str, str | None]]:
    """``(kind, message, deployment)`` for each release ``state`` newly reports failed or refused.

    "Newly" means its status differs from the one the registry holds: the
    agent re-publishes an unchanged state (on reconnect, as its retained
    message), and that must not add an event each time, while a retry that
    fails again has a new ``since``. The deployment is the newest one that
    sent this device that version of the release, if any, so the setback is
    also listed on that deployment's page.
    """
    bad = {
        name: status
        for name, status in state.releases.items()
        if status.phase in ("failed", "refused")
    }
    if not bad:  # most reports: no extra query
        return []
    row = conn.execute("SELECT state FROM devices WHERE id = ?", (state.device_id,)).fetchone()
    old = DeviceState.model_validate_json(row[0]) if row and row[0] else None
    found: list[tuple[str, str, str | None]] = []
    for name, status in sorted(bad.items()):
        if old is not None and old.releases.get(name) == status:
            continue
        version = status.target or status.version
        cause = f": {status.error}" if status.error else " (no reason given)"
        deployment = conn.execute(
            "SELECT d.id FROM deployments d JOIN deployment_devices x ON x.deployment = d.id "
            "WHERE x.device_id = ? AND d.release = ? AND d.version = ? AND x.status != 'waiting' "
            "ORDER BY d.created DESC LIMIT 1",
            (state.device_id, name, version),
        ).fetchone()
        found.append(
            (
                status.phase,
                f"{name} {version or ''}".rstrip() + f" {status.phase}{cause}",
                None if deployment is None else deployment[0],
            )
        )
    return found


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """Slices small enough for SQLite's limit on bound parameters."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
