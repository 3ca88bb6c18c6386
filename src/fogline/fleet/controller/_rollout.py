"""The rollout engine: :class:`Rollouts` creates, advances and rolls back deployments.

A deployment rolls a release out to a group in the waves its
:class:`~fogline.fleet.controller._plan.RolloutPlan` cuts, each wave judged
by its :class:`~fogline.fleet.controller._criteria.Criteria` before the
next. :meth:`Rollouts.tick` advances every running deployment one step; it
is a plain function of the registry and the clock, called by the controller
after each batch of device reports and twice a second, so a restarted
controller simply carries on.

A wave passes when every device in it runs the new version and is healthy,
then bakes: for ``bake_seconds`` every device must keep sending telemetry on
that version, with no silence (see :mod:`fogline.fleet.controller._bake`), and what it
sent must meet the criteria (error rate, p99 latency, and accuracy: live on
its own traffic, on the release's canary set, or estimated; see
:mod:`fogline.fleet.controller._model_gates`). A drift alarm on the new
version fails a wave that asks for none at once. A silent device extends the bake by up to
``timeout_seconds``; an operator who wants a bake on time alone says so
with ``require_telemetry=False``. A device that fails or refuses the
release, a failed criterion, a wave that does not converge within
``timeout_seconds``, or one whose devices stay silent past its deadline
stops the rollout and rolls back every device it touched; devices in later
waves never see it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from packaging.version import InvalidVersion, Version

from fogline.errors import ConfigError, Conflict
from fogline.fleet.controller._bake import DEFAULT_PERIOD, BakeProgress, Report, bake_progress
from fogline.fleet.controller._criteria import Criteria
from fogline.fleet.controller._deployment import Deployment, DeploymentDevice
from fogline.fleet.controller._model_gates import Wave, accuracy_gate, drift_alarm
from fogline.fleet.controller._plan import RolloutPlan
from fogline.fleet.controller._registry import Device, Registry, _chunks
from fogline.protocol import DesiredState

# Criteria and RolloutPlan are re-exported for the modules that import them from here.
__all__ = ["Criteria", "Publish", "RolloutPlan", "Rollouts"]

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
        if found.wave_started is not None and (
            found.criteria.min_accuracy is not None or found.criteria.no_drift_alarm
        ):
            found = replace(found, gates=self._gates(found))
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
        if not failures and d.criteria.no_drift_alarm:  # judged at once, bake or not
            alarm = drift_alarm(self._wave(d), self.registry.query)
            failures += [] if alarm is None else [alarm]
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
        gate = accuracy_gate(d.criteria, self._wave(d), rows, self.registry.query)
        if gate is not None and gate.failure is None and gate.waiting:
            if now > deadline:
                self._roll_back(
                    d, f"no accuracy figure that counts on {d.version}: {'; '.join(gate.waiting)}"
                )
            return
        failed = d.criteria.judge(ids, rows) or (None if gate is None else gate.failure)
        if failed is None and gate is not None:
            self.registry.event(
                "gate", f"wave {d.wave + 1} of {d.waves}: {gate.passed_text()}", deployment=d.id
            )
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

    def _wave(self, d: Deployment) -> Wave:
        wave = [x for x in d.devices if x.wave == d.wave]
        return Wave(
            d.release,
            d.version,
            [x.device_id for x in wave],
            {x.device_id: x.previous for x in wave},
            d.wave_started or 0.0,
        )

    def _gates(self, d: Deployment) -> dict[str, Any]:
        """Where the model's gates of the current wave stand: the figures used, a drift alarm."""
        wave = self._wave(d)
        gates: dict[str, Any] = {"accuracy": None, "drift": None}
        if d.criteria.min_accuracy is not None:
            rows = self.registry.metrics(
                devices=list(wave.devices), release=d.release, since=wave.started
            )
            rows = [row for row in rows if row["version"] == d.version]
            gate = accuracy_gate(d.criteria, wave, rows, self.registry.query)
            gates["accuracy"] = None if gate is None else gate.to_dict()
        if d.criteria.no_drift_alarm:
            gates["drift"] = {"alarm": drift_alarm(wave, self.registry.query)}
        return gates

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
