"""Deployments: a release rolled out to a group in waves, each wave judged before the next.

A strategy cuts the group into waves: ``all`` (one wave), ``canary`` (N
devices or N%, then the rest) or ``waves`` (cumulative sizes such as
``["10%", "50%", "100%"]``). :meth:`Rollouts.tick` advances every running
deployment one step; it is a plain function of the registry and the clock,
called by the controller after each batch of device reports and twice a
second, so a restarted controller simply carries on.

A wave passes when every device in it runs the new version and is healthy,
then bakes: for ``bake_seconds`` every device must keep sending telemetry on
that version, with no silence (see :mod:`fogline.fleet.controller._bake`), and what it
sent must meet the criteria (error rate, p99 latency, accuracy on the
release's canary set). A silent device extends the bake by up to
``timeout_seconds``; an operator who wants a bake on time alone says so
with ``require_telemetry=False``. A device that fails or refuses the
release, a failed criterion, a wave that does not converge within
``timeout_seconds``, or one whose devices stay silent past its deadline
stops the rollout and rolls back every device it touched; devices in later
waves never see it.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from packaging.version import InvalidVersion, Version
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from fogline.errors import ConfigError, Conflict
from fogline.fleet.controller._bake import DEFAULT_PERIOD, BakeProgress, Report, bake_progress
from fogline.fleet.controller._registry import Device, Registry
from fogline.protocol import DesiredState

_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


def _size(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"a wave size must be at least 1 device, got {value}")
        return value
    match = _PERCENT.match(value.strip())
    if not match or not 0 < float(match.group(1)) <= 100:
        raise ValueError(f"a wave size is a device count or a percentage like '10%', got {value!r}")
    return value.strip()


Size = Annotated[int | str, AfterValidator(_size)]


def devices_in(size: int | str, total: int) -> int:
    """How many of ``total`` devices a size means (a percentage rounds up, at least one).

    >>> devices_in("10%", 25), devices_in(3, 2), devices_in("100%", 7)
    (3, 2, 7)
    """
    if isinstance(size, int):
        return min(size, total)
    return min(total, max(1, math.ceil(total * float(size.rstrip("%")) / 100)))


class RolloutPlan(BaseModel):
    """How a deployment is cut into waves and how long each is watched."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["all", "canary", "waves"] = "canary"
    canary: Size = 1
    waves: list[Size] = Field(default_factory=list)
    bake_seconds: float = Field(default=60.0, ge=0)
    timeout_seconds: float = Field(default=600.0, gt=0)

    def cut(self, device_ids: Sequence[str]) -> list[list[str]]:
        """The waves, in order; each device in exactly one.

        >>> RolloutPlan(kind="canary", canary="25%").cut(list("abcdefgh"))
        [['a', 'b'], ['c', 'd', 'e', 'f', 'g', 'h']]
        >>> RolloutPlan(kind="waves", waves=[1, "50%"]).cut(list("abcd"))
        [['a'], ['b'], ['c', 'd']]
        """
        ids = list(device_ids)
        if self.kind == "all" or not ids:
            return [ids] if ids else []
        bounds = (
            [devices_in(self.canary, len(ids))]
            if self.kind == "canary"
            else [devices_in(size, len(ids)) for size in self.waves]
        )
        waves: list[list[str]] = []
        start = 0
        for bound in [*bounds, len(ids)]:
            if bound > start:
                waves.append(ids[start:bound])
                start = bound
        return waves


class Criteria(BaseModel):
    """What a wave's devices must show on the new version before the rollout goes on.

    ``require_telemetry`` (the default) makes the bake wait for telemetry on
    the new version from every device of the wave, covering the whole bake;
    without it the bake is a time and the criteria judge whatever arrived.

    >>> Criteria().describe()
    'error rate ≤ 5.0%; telemetry from every device covering the bake'
    >>> Criteria(max_error_rate=None, require_telemetry=False).describe()
    'none (the bake is a time: no telemetry required)'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_error_rate: float | None = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    require_telemetry: bool = True

    def describe(self) -> str:
        """The criteria in words, as ``fogline fleet rollout status`` prints them."""
        parts = []
        if self.max_error_rate is not None:
            parts.append(f"error rate ≤ {self.max_error_rate:.1%}")
        if self.max_p99_ms is not None:
            parts.append(f"p99 ≤ {self.max_p99_ms:g} ms")
        if self.min_accuracy is not None:
            parts.append(f"canary-set accuracy ≥ {self.min_accuracy:.1%}")
        if self.require_telemetry:
            parts.append("telemetry from every device covering the bake")
        elif not parts:
            return "none (the bake is a time: no telemetry required)"
        else:
            parts.append("no telemetry required")
        return "; ".join(parts)

    def judge(self, devices: Sequence[str], rows: Sequence[dict[str, Any]]) -> str | None:
        """None when the rows meet every criterion, else why not.

        >>> rows = [{"device_id": "a", "items": 100, "errors": 9, "p99_ms": 12.0, "accuracy": None}]
        >>> Criteria(max_error_rate=0.05).judge(["a"], rows)
        'error rate 9.0% over 100 items > 5.0%'
        >>> Criteria(max_p99_ms=10).judge(["a"], rows)
        'error rate 9.0% over 100 items > 5.0%'
        >>> Criteria(max_error_rate=None, max_p99_ms=10).judge(["a"], rows)
        'p99 12.0 ms on a > 10.0 ms'
        """
        items = sum(int(row["items"]) for row in rows)
        errors = sum(int(row["errors"]) for row in rows)
        if self.max_error_rate is not None and items and errors / items > self.max_error_rate:
            return f"error rate {errors / items:.1%} over {items} items > {self.max_error_rate:.1%}"
        if self.max_p99_ms is not None:
            for row in rows:
                if row["p99_ms"] is not None and row["p99_ms"] > self.max_p99_ms:
                    return f"p99 {row['p99_ms']:.1f} ms on {row['device_id']} > {self.max_p99_ms:.1f} ms"
        if self.min_accuracy is not None:
            for row in rows:
                if row["accuracy"] is not None and row["accuracy"] < self.min_accuracy:
                    return (
                        f"accuracy {row['accuracy']:.2%} on {row['device_id']} "
                        f"< {self.min_accuracy:.2%}"
                    )
        return None

    def waiting_for(self, devices: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
        """Devices whose accuracy on the canary set is still needed before :meth:`judge` decides."""
        if self.min_accuracy is None:
            return []
        reported = {row["device_id"] for row in rows if row["accuracy"] is not None}
        return [device for device in devices if device not in reported]


Status = Literal["running", "succeeded", "rolled-back"]


@dataclass(frozen=True)
class DeploymentDevice:
    device_id: str
    wave: int
    status: str  # waiting, assigned, converged, failed, rolled-back
    previous: str | None
    since: float | None


@dataclass(frozen=True)
class Deployment:
    """One rollout of ``release`` ``version`` to ``group``, and where it is."""

    id: str
    release: str
    version: str
    group: str
    strategy: RolloutPlan
    criteria: Criteria
    status: Status
    wave: int
    wave_started: float | None
    converged_at: float | None
    reason: str | None
    created: float
    updated: float
    devices: tuple[DeploymentDevice, ...]
    bake: BakeProgress | None = None  # filled by Rollouts.get while the current wave bakes

    @property
    def waves(self) -> int:
        return 1 + max((d.wave for d in self.devices), default=-1)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for device in self.devices:
            out[device.status] = out.get(device.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "release": self.release,
            "version": self.version,
            "group": self.group,
            "strategy": self.strategy.model_dump(),
            "criteria": self.criteria.model_dump(),
            "criteria_text": self.criteria.describe(),
            "status": self.status,
            "wave": self.wave,
            "waves": self.waves,
            "wave_started": self.wave_started,
            "converged_at": self.converged_at,
            "reason": self.reason,
            "created": self.created,
            "updated": self.updated,
            "counts": self.counts(),
            "devices": [d.__dict__ for d in self.devices],
            "bake": None if self.bake is None else self.bake.to_dict(),
        }


Publish = Callable[[list[tuple[str, DesiredState]]], None]


class Rollouts:
    """Creates, advances and rolls back deployments; publishes desired states through ``publish``."""

    def __init__(
        self,
        registry: Registry,
        publish: Publish,
        *,
        clock: Callable[[], float] = time.time,
        releases: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.registry = registry
        self.publish = publish
        self.clock = clock
        self._exists = releases
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------

    def get(self, deployment_id: str) -> Deployment | None:
        rows = self.registry.query(
            "SELECT id, release, version, grp, strategy, criteria, status, wave, wave_started, "
            "converged_at, reason, created, updated FROM deployments WHERE id = ?",
            (deployment_id,),
        )
        if not rows:
            return None
        found = self._deployment(rows[0])
        if found.status == "running" and found.converged_at is not None:
            found = replace(found, bake=self._bake(found, self.clock()))
        return found

    def list(self, *, status: str | None = None) -> list[Deployment]:
        sql = (
            "SELECT id, release, version, grp, strategy, criteria, status, wave, wave_started, "
            "converged_at, reason, created, updated FROM deployments"
        )
        args: tuple[object, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        return [
            self._deployment(row) for row in self.registry.query(sql + " ORDER BY created", args)
        ]

    def _deployment(self, row: tuple[Any, ...]) -> Deployment:
        devices = tuple(
            DeploymentDevice(*r)
            for r in self.registry.query(
                "SELECT device_id, wave, status, previous, since FROM deployment_devices "
                "WHERE deployment = ? ORDER BY wave, device_id",
                (row[0],),
            )
        )
        return Deployment(
            id=row[0],
            release=row[1],
            version=row[2],
            group=row[3],
            strategy=RolloutPlan.model_validate_json(row[4]),
            criteria=Criteria.model_validate_json(row[5]),
            status=row[6],
            wave=row[7],
            wave_started=row[8],
            converged_at=row[9],
            reason=row[10],
            created=row[11],
            updated=row[12],
            devices=devices,
        )

    # -- creating ---------------------------------------------------------------------------

    def create(
        self,
        release: str,
        version: str,
        group: str,
        *,
        strategy: RolloutPlan | None = None,
        criteria: Criteria | None = None,
    ) -> Deployment:
        """Start rolling ``release`` ``version`` out to ``group``; ``ConfigError`` if it cannot."""
        strategy = strategy or RolloutPlan()
        criteria = criteria or Criteria()
        try:
            Version(version)
        except InvalidVersion:
            raise ConfigError(
                f"version {version!r} is not a PEP 440 version such as 1.2.0"
            ) from None
        if self._exists is not None and not self._exists(release, version):
            raise ConfigError(
                f"no release {release} {version}; publish it first with 'fogline release create'"
            )
        devices = self.registry.devices(group)
        if not devices:
            known = ", ".join(self.registry.groups()) or "none yet"
            raise ConfigError(f"group {group!r} has no devices (groups: {known})")
        with self._lock:
            for running in self.list(status="running"):
                if running.release == release and running.group == group:
                    raise Conflict(
                        f"deployment {running.id} of {release} {running.version} is still running "
                        f"on {group!r}; wait for it or roll it back first"
                    )
            ordered = sorted(devices, key=lambda d: (not d.online, d.id))
            waves = strategy.cut([d.id for d in ordered if d.version(release) != version])
            if not waves:
                raise ConfigError(f"every device of {group!r} already runs {release} {version}")
            deployment_id = f"d-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
            now = self.clock()
            with self.registry.transaction() as conn:
                conn.execute(
                    "INSERT INTO deployments (id, release, version, grp, strategy, criteria, status, "
                    "created, updated) VALUES (?,?,?,?,?,?,'running',?,?)",
                    (
                        deployment_id,
                        release,
                        version,
                        group,
                        strategy.model_dump_json(),
                        criteria.model_dump_json(),
                        now,
                        now,
                    ),
                )
                conn.executemany(
                    "INSERT INTO deployment_devices (deployment, device_id, wave) VALUES (?,?,?)",
                    [(deployment_id, d, w) for w, wave in enumerate(waves) for d in wave],
                )
            sizes = "+".join(str(len(w)) for w in waves)
            self.registry.event(
                "deployment",
                f"{release} {version} to {group} in waves of {sizes} ({strategy.kind})",
                deployment=deployment_id,
            )
        self.tick()
        found = self.get(deployment_id)
        assert found is not None
        return found

    # -- advancing --------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every running deployment by what the devices reported since the last tick."""
        with self._lock:
            for deployment in self.list(status="running"):
                self._advance(deployment)

    def rollback(
        self, deployment_id: str, reason: str = "rolled back by the operator"
    ) -> Deployment:
        with self._lock:
            deployment = self.get(deployment_id)
            if deployment is None:
                raise ConfigError(f"no deployment {deployment_id!r}")
            if deployment.status == "rolled-back":
                raise Conflict(f"deployment {deployment_id} is already rolled back")
            self._roll_back(deployment, reason)
        found = self.get(deployment_id)
        assert found is not None
        return found

    def _advance(self, d: Deployment) -> None:
        now = self.clock()
        wave = [x for x in d.devices if x.wave == d.wave]
        if d.wave_started is None:
            self._assign(d, wave, now)
            return
        ids = [x.device_id for x in wave]
        devices = self.registry.devices_by_id(ids)
        generations = self.registry.generations(ids)
        failures: list[str] = []
        broken: list[str] = []
        converged: set[str] = set()
        arrived: list[str] = []
        for x in wave:
            verdict = _device_verdict(
                devices.get(x.device_id), d.release, d.version, generations.get(x.device_id, 0)
            )
            if verdict == "converged":
                converged.add(x.device_id)
                if x.status == "assigned":
                    arrived.append(x.device_id)
            elif verdict is not None:
                failures.append(f"{x.device_id}: {verdict}")
                broken.append(x.device_id)
        self._mark(d.id, arrived, "converged", now)
        self._mark(d.id, broken, "failed", now)
        if failures:
            self._roll_back(d, "; ".join(failures))
            return
        if len(converged) < len(wave):
            if now - d.wave_started > d.strategy.timeout_seconds:
                late = ", ".join(x.device_id for x in wave if x.device_id not in converged)
                self._roll_back(
                    d,
                    f"{late} did not run {d.version} within {d.strategy.timeout_seconds:g} s",
                )
            return
        if d.converged_at is None:
            self._update(d.id, converged_at=now)
            self.registry.event(
                "wave", f"wave {d.wave + 1} of {d.waves}: {_devices(len(wave))} on {d.version}",
                deployment=d.id,
            )  # fmt: skip
            if d.strategy.bake_seconds > 0:
                return
            converged_at = now
        else:
            converged_at = d.converged_at
        if now - converged_at < d.strategy.bake_seconds:
            return
        deadline = converged_at + d.strategy.bake_seconds + d.strategy.timeout_seconds
        if d.criteria.require_telemetry:
            bake = self._bake(replace(d, converged_at=converged_at), now)
            if not bake.passed:
                if now > deadline:
                    self._roll_back(d, _silent_reason(d, bake, now))
                return
        rows = self.registry.metrics(devices=ids, release=d.release, since=d.wave_started)
        rows = [row for row in rows if row["version"] == d.version]
        missing = d.criteria.waiting_for(ids, rows)
        if missing:
            if now > deadline:
                self._roll_back(
                    d, f"no accuracy on the canary set on {d.version} from {', '.join(missing)}"
                )
            return
        failed = d.criteria.judge(ids, rows)
        if failed is not None:
            self._roll_back(d, failed)
        elif d.wave + 1 < d.waves:
            self._update(d.id, wave=d.wave + 1, wave_started=None, converged_at=None)
            nxt = self.get(d.id)
            assert nxt is not None
            self._assign(nxt, [x for x in nxt.devices if x.wave == nxt.wave], now)
        else:
            self._update(d.id, status="succeeded")
            self.registry.event(
                "deployment", f"{d.release} {d.version} reached {_devices(len(d.devices))}",
                deployment=d.id,
            )  # fmt: skip

    def _bake(self, d: Deployment, now: float) -> BakeProgress:
        """How far the current wave's bake has come (``d.converged_at`` must be set)."""
        assert d.wave_started is not None and d.converged_at is not None
        ids = [x.device_id for x in d.devices if x.wave == d.wave]
        reports: dict[str, list[Report]] = {}
        periods: dict[str, float] = {}
        for chunk in _chunks(ids):
            # Device stamps only narrow the index scan (an hour of clock skew is allowed);
            # what counts is when the controller received each report.
            rows = self.registry.query(
                "SELECT device_id, received, json_extract(body, ?), json_extract(body, '$.period') "
                f"FROM telemetry WHERE device_id IN ({','.join('?' * len(chunk))}) "
                "AND time >= ? AND received >= ? ORDER BY received",
                [f'$.versions."{d.release}"', *chunk, d.wave_started - 3600.0, d.wave_started],
            )
            # Each device's period from its latest report, whatever it ran (bare columns
            # of a MAX() aggregate come from the row that holds the maximum in SQLite).
            for device_id, period, _ in self.registry.query(
                "SELECT device_id, json_extract(body, '$.period'), MAX(time) FROM telemetry "
                f"WHERE device_id IN ({','.join('?' * len(chunk))}) GROUP BY device_id",
                chunk,
            ):
                periods[device_id] = float(period or DEFAULT_PERIOD)
            for device_id, received, version, period in rows:
                if version == d.version:
                    reports.setdefault(device_id, []).append(
                        Report(float(received), float(period or DEFAULT_PERIOD))
                    )
        return bake_progress(
            ids,
            reports,
            converged_at=d.converged_at,
            bake_seconds=d.strategy.bake_seconds,
            now=now,
            periods=periods,
        )

    def _assign(self, d: Deployment, wave: Sequence[DeploymentDevice], now: float) -> None:
        ids = [x.device_id for x in wave]
        devices = self.registry.devices_by_id(ids)
        rows = []
        for device_id in ids:
            device = devices.get(device_id)
            previous = None if device is None else device.version(d.release)
            rows.append((previous, now, d.id, device_id))
        with self.registry.transaction() as conn:
            conn.executemany(
                "UPDATE deployment_devices SET status = 'assigned', previous = ?, since = ? "
                "WHERE deployment = ? AND device_id = ?",
                rows,
            )
            conn.execute(
                "UPDATE deployments SET wave_started = ?, updated = ? WHERE id = ?",
                (now, now, d.id),
            )
        changed = self.registry.set_release(ids, d.release, d.version, deployment=d.id)
        self.publish(changed)

    def _roll_back(self, d: Deployment, reason: str) -> None:
        now = self.clock()
        touched = [x for x in d.devices if x.status not in ("waiting", "rolled-back")]
        by_previous: dict[str | None, list[str]] = {}
        for x in touched:
            by_previous.setdefault(x.previous, []).append(x.device_id)
        changed: list[tuple[str, DesiredState]] = []
        for previous, ids in by_previous.items():
            changed += self.registry.set_release(
                ids, d.release, previous, deployment=d.id, rollback=previous is not None
            )
        self._mark(d.id, [x.device_id for x in touched], "rolled-back", now)
        self._update(d.id, status="rolled-back", reason=reason)
        self.registry.event(
            "rollback",
            f"{d.release} {d.version} rolled back on {_devices(len(touched))}: {reason}",
            deployment=d.id,
        )
        self.publish(changed)

    def _mark(self, deployment_id: str, device_ids: Sequence[str], status: str, now: float) -> None:
        if not device_ids:
            return
        self.registry.executemany(
            "UPDATE deployment_devices SET status = ?, since = ? WHERE deployment = ? AND device_id = ?",
            [(status, now, deployment_id, device_id) for device_id in device_ids],
        )

    def _update(self, deployment_id: str, **fields: object) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        self.registry.execute(
            f"UPDATE deployments SET {names}, updated = ? WHERE id = ?",
            [*fields.values(), self.clock(), deployment_id],
        )


def _device_verdict(
    device: Device | None, release: str, version: str, generation: int
) -> str | None:
    """``"converged"``, a failure reason, or None while the device is still on its way.

    A failure counts only if the device has read the desired state of
    ``generation`` (a report of an older attempt is stale).
    """
    if device is None or device.state is None:
        return None
    status = device.state.releases.get(release)
    if status is None:
        return None
    if status.version == version and status.phase == "active":
        if device.state.health == "failed":
            return "reports health 'failed'"
        return "converged"
    stale = device.state.generation < generation
    if status.target == version and status.phase in ("failed", "refused") and not stale:
        return f"{status.phase}: {status.error or 'no reason given'}"
    return None


def _chunks(items: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _silent_reason(d: Deployment, bake: BakeProgress, now: float) -> str:
    """Why a wave whose devices did not cover its bake with telemetry is rolled back."""
    heard = []
    for device in bake.waiting:
        last = bake.last_heard.get(device)
        heard.append(
            f"{device} (never reported on it)" if last is None
            else f"{device} (last heard {now - last:.0f} s ago)"
        )  # fmt: skip
    return (
        f"no telemetry on {d.version} covering the {d.strategy.bake_seconds:g} s bake "
        f"within the {d.strategy.timeout_seconds:g} s timeout from {', '.join(heard)}"
    )


def _devices(count: int) -> str:
    return "1 device" if count == 1 else f"{count} devices"


def describe(d: Deployment) -> str:
    """One line for logs and the CLI."""
    counts = json.dumps(d.counts(), sort_keys=True)
    return f"{d.id} {d.release} {d.version} → {d.group}: {d.status}, wave {d.wave + 1}/{d.waves} {counts}"
