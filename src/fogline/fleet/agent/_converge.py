"""The agent's convergence loop: from the desired state to what runs, one release at a time.

For each release name of the newest :class:`~fogline.fleet.DesiredState`
whose version differs from the active one, the loop fetches it (the
installer downloads and verifies it against the trusted TUF root, refusing
forged, stale or older releases), runs the health check on the staged copy,
activates it (an atomic swap of ``DEV/active/<name>``) and (re)starts what the
release runs. A name dropped from the desired state is stopped. Each phase
is reported on the retained ``state`` topic as a :class:`~fogline.fleet.DeviceState`.
What checking and running a release mean is up to its kind
(:mod:`fogline.fleet.agent.kinds`); the loop keeps the kind of each release
it runs a child for, which telemetry asks to read the child's metrics.

On any failure the last-known-good release keeps running and the reason is
reported: a network failure (:class:`~fogline.errors.TransportError`) is
retried with a backoff; a refusal or a failed health check is not retried
for the same generation (it would fail the same way), only a newer desired
state tries again. A ``rollback`` entry of the desired state lets a release
go back: to the previous one the installer still holds, or by fetching the
older version with the downgrade allowed. The commands ``rollback``,
``restart`` and ``report`` act at once; a command rollback holds the release
on the previous version until a newer desired state arrives.

What the loop must remember across a restart (the desired state, refusals,
held releases, answered commands, canary accuracy) is in
``DEV/agent/state.json``, written atomically; the active and previous
releases are the installer's, which survives a kill at any moment.

Concurrency: :meth:`Converger.run` is the one thread that changes anything;
:meth:`~Converger.desire` and :meth:`~Converger.command` (called on paho's
thread) only hand their message over and wake it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from fogline._files import atomic_output
from fogline.errors import FoglineError, ModelNotFound, ReleaseRefused, TransportError
from fogline.fleet.agent._installer import ReleaseInstaller, StagedRelease
from fogline.fleet.agent._supervisor import Supervisor
from fogline.fleet.agent.kinds import HealthReport, ReleaseKind, check_release, kind_for
from fogline.protocol import (
    Command,
    DesiredState,
    DeviceState,
    Phase,
    ReleaseStatus,
)

if TYPE_CHECKING:
    from fogline.security import AuditLog

log = logging.getLogger(__name__)

Health = Literal["ok", "degraded", "failed"]


#: What the agent's log says of each phase a release goes through on its way.
_PHASE_WORDS: dict[str, str] = {
    "verifying": "verifying the signed metadata of",
    "downloading": "downloading the files of",
    "staging": "staging",
    "checking": "health-checking",
}


class _Saved(BaseModel):
    """What survives a restart of the agent (``DEV/agent/state.json``)."""

    desired: DesiredState | None = None
    generation: int = 0
    releases: dict[str, ReleaseStatus] = Field(default_factory=dict)
    # name -> [version, generation]: not tried again until a newer generation.
    blocked: dict[str, tuple[str, int]] = Field(default_factory=dict)
    accuracy: dict[str, float] = Field(default_factory=dict)
    # name -> [device, fallback]: what ran the release's model in its health check.
    devices: dict[str, tuple[str, str | None]] = Field(default_factory=dict)
    commands: list[str] = Field(default_factory=list)


@dataclass
class _Retry:
    version: str
    attempts: int = 0
    at: float = 0.0


@dataclass
class Options:
    """How the loop runs children and retries."""

    run_dir: Path
    logs_dir: Path
    serve_http_port: int | None = None
    retry_initial: float = 1.0
    retry_max: float = 60.0
    tick: float = 1.0  # how often children and retries are looked at
    crash_loop: int = 3  # exits in a row without a stable run before the health is "failed"
    on_event: Callable[[str], None] = field(default=lambda line: None)
    #: Where releases installed, refused and rolled back are recorded (None: nowhere).
    audit: AuditLog | None = None


def _version(installed: StagedRelease | None) -> str | None:
    return None if installed is None else installed.version


class Converger:
    """Brings the device to its desired state; see the module docstring."""

    def __init__(
        self,
        installer: ReleaseInstaller,
        supervisor: Supervisor,
        device_id: str,
        state_file: Path,
        publish: Callable[[DeviceState], None],
        options: Options,
        *,
        agent_version: str = "",
        on_report: Callable[[], None] = lambda: None,
    ) -> None:
        self.installer = installer
        self.supervisor = supervisor
        self.device_id = device_id
        self.state_file = state_file
        self.options = options
        self.agent_version = agent_version
        self._publish = publish
        self._on_report = on_report
        self._event = options.on_event
        self._saved = self._load()
        self._lock = threading.Lock()
        self._incoming: DesiredState | None = None
        self._commands: deque[Command] = deque()
        self._wake = threading.Event()
        self._retries: dict[str, _Retry] = {}
        self._published: str | None = None
        self._kinds: dict[str, ReleaseKind] = {}  # the kind of each release with a child process

    # -- inputs (any thread) ---------------------------------------------------------

    def desire(self, desired: DesiredState) -> None:
        """Take a desired state; one not newer than the current one is ignored."""
        with self._lock:
            current = self._incoming or self._saved.desired
            if current is not None and desired.generation <= current.generation:
                return
            self._incoming = desired
        self._wake.set()

    def command(self, command: Command) -> None:
        with self._lock:
            self._commands.append(command)
        self._wake.set()

    # -- reading (any thread) --------------------------------------------------------

    def versions(self) -> dict[str, str]:
        """The version each release runs now."""
        with self._lock:
            return {
                name: status.version
                for name, status in self._saved.releases.items()
                if status.version is not None
            }

    def accuracy(self, name: str) -> float | None:
        with self._lock:
            return self._saved.accuracy.get(name)

    def device(self, name: str) -> tuple[str, str | None] | None:
        """The execution provider that ran release ``name``'s model in its health check, and
        the GPU provider asked for that did not start (None: not checked yet)."""
        with self._lock:
            return self._saved.devices.get(name)

    def kinds(self) -> dict[str, ReleaseKind]:
        """The kind of each release with a child process (for telemetry)."""
        with self._lock:
            return dict(self._kinds)

    def state(self) -> DeviceState:
        with self._lock:
            releases = dict(self._saved.releases)
            generation = self._saved.generation
        return DeviceState(
            device_id=self.device_id,
            generation=generation,
            releases=releases,
            health=self._health(releases),
            agent=self.agent_version,
        )

    # -- the loop --------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Converge until ``stop`` is set (call :meth:`boot` first)."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # a bug must not end convergence for good: log, report, go on
                log.exception("convergence step failed")
                self._event("convergence step failed (see the log); retrying")
            self._wake.wait(self._wait())
            self._wake.clear()

    def boot(self) -> None:
        """After a (re)start: recover the installer, run what is active, say where it is."""
        self.installer.recover()
        desired = self._saved.desired
        names = set(self._saved.releases) | set(desired.releases if desired else ())
        for name in sorted(names):
            installed = self.installer.active(name)
            if installed is None:
                continue
            if desired is None or name in desired.releases:
                self._start_child(name, installed)
                self._set(name, version=_version(installed))
            else:
                self._forget(name)
        self._report(force=True)

    def step(self) -> None:
        """One pass: commands first, then a newer desired state, then every release."""
        with self._lock:
            commands = list(self._commands)
            self._commands.clear()
            incoming, self._incoming = self._incoming, None
        for command in commands:
            self._command(command)
        if incoming is not None:
            self._event(
                f"desired state generation {incoming.generation}: "
                + (", ".join(f"{n} {v}" for n, v in sorted(incoming.releases.items())) or "none")
            )
            with self._lock:
                self._saved.desired = incoming
                self._retries.clear()
            self._save()
        desired = self._saved.desired
        if desired is not None:
            for name, version in sorted(desired.releases.items()):
                self._converge(name, version, desired)
            for name in sorted(set(self._saved.releases) - set(desired.releases)):
                self._forget(name)
            if self._saved.generation != desired.generation:
                with self._lock:
                    self._saved.generation = desired.generation
                self._save()
        self._report()

    def _wait(self) -> float:
        now = time.monotonic()
        pending = [r.at - now for r in self._retries.values()]
        return max(0.05, min([self.options.tick, *pending]))

    # -- one release -----------------------------------------------------------------

    def _converge(self, name: str, version: str, desired: DesiredState) -> None:
        installed = self.installer.active(name)
        current = _version(installed)
        if current == version:
            status = self._saved.releases.get(name)
            if (
                status is None
                or status.version != version
                or status.phase
                not in (
                    "active",
                    "rolled-back",
                )
            ):
                self._set(name, version=version, target=None, phase="active", error=None)
            if not self.supervisor.running(name) and name not in self.supervisor.names():
                self._start_child(name, installed)
            return
        blocked = self._saved.blocked.get(name)
        if blocked is not None and tuple(blocked) == (version, desired.generation):
            return
        retry = self._retries.get(name)
        if retry is not None and retry.version == version and time.monotonic() < retry.at:
            return
        downgrade = desired.rollback.get(name) == version
        try:
            if downgrade and _version(self.installer.previous(name)) == version:
                self._event(f"{name}: rolling back to {version} (kept on the device)")
                self.installer.rollback(name)
                self._after_swap(name, self.installer.active(name), None)
                self._audit("release.rolled_back", release=name, version=version, by="desired")
            else:
                self._install(name, version, downgrade)
        except (TransportError, ModelNotFound) as exc:  # may work later: retried
            self._failed_network(name, version, exc)
        except FoglineError as exc:
            refused = isinstance(exc, ReleaseRefused)
            self._block(name, version, desired.generation)
            self._set(
                name,
                version=current,
                target=version,
                phase="refused" if refused else "failed",
                error=str(exc),
            )
            self._event(f"{name} {version}: {'refused' if refused else 'failed'}: {exc}")
            if refused:
                self._audit("release.refused", release=name, version=version, reason=str(exc))
        else:
            self._retries.pop(name, None)

    def _install(self, name: str, version: str, downgrade: bool) -> None:
        current = _version(self.installer.active(name))
        # The installer's first step checks the signed metadata (or, for a rollback, the kept
        # release's files): each phase is named for what it does, so none repeats.
        self._set(name, version=current, target=version, phase="verifying", error=None)
        self._report()

        def progress(phase: str) -> None:
            self._set(name, version=current, target=version, phase=phase)
            self._report()

        staged = self.installer.fetch(
            name, version, allow_downgrade_to_previous=downgrade, progress=progress
        )
        self._set(name, version=current, target=version, phase="checking")
        self._report()
        report = self._check(staged)
        if not report.ok:
            self.installer.discard(name)  # never activated: not kept on disk
            raise _HealthFailed(f"health check: {report.reason}")
        self.installer.activate(staged)
        self._audit("release.installed", release=name, version=version, previous=current)
        self._after_swap(name, self.installer.active(name), report)

    def _check(self, release: StagedRelease) -> HealthReport:
        document, root = release.document, release.path
        sample = document.health.sample
        canary = document.canary.data
        return check_release(
            kind_for(document.kind),
            release.entry,
            latency_budget_ms=document.health.latency_budget_ms,
            sample=None if sample is None else root / sample,
            canary=None if canary is None else root / canary,
            read=self.installer.read,
        )

    def _after_swap(
        self, name: str, installed: StagedRelease | None, report: HealthReport | None
    ) -> None:
        version = _version(installed)
        self._start_child(name, installed)
        with self._lock:
            if report is not None and report.accuracy is not None:
                self._saved.accuracy[name] = report.accuracy
            elif report is not None:
                self._saved.accuracy.pop(name, None)
            if report is not None and report.device is not None:
                self._saved.devices[name] = (report.device, report.fallback)
            elif report is not None:
                self._saved.devices.pop(name, None)
        self._set(name, version=version, target=None, phase="active", error=None)
        detail = f" ({report.describe()})" if report is not None else ""
        self._event(f"{name}: {version} active{detail}")

    def _failed_network(self, name: str, version: str, exc: Exception) -> None:
        retry = self._retries.get(name)
        if retry is None or retry.version != version:
            retry = self._retries[name] = _Retry(version)
        retry.attempts += 1
        delay = min(
            self.options.retry_max, self.options.retry_initial * 2.0 ** (retry.attempts - 1)
        )
        retry.at = time.monotonic() + delay
        current = _version(self.installer.active(name))
        # Still on its way, not failed: a short outage must not look like a bad
        # release to the rollout (which has its own timeout for a device that
        # never gets there).
        error = f"retrying in {delay:.0f} s: {exc}"
        with self._lock:
            old = self._saved.releases.get(name)
        # The phase it was in when the network failed, so the log does not read as a new step.
        phase = (
            old.phase
            if old is not None and old.phase in ("verifying", "downloading")
            else "downloading"
        )
        self._set(name, version=current, target=version, phase=phase, error=error)
        self._event(f"{name} {version}: {error}")

    def _block(self, name: str, version: str, generation: int) -> None:
        with self._lock:
            self._saved.blocked[name] = (version, generation)
        self._retries.pop(name, None)

    def _forget(self, name: str) -> None:
        if name in self.supervisor.names():
            self.supervisor.stop(name)
        with self._lock:
            self._kinds.pop(name, None)
            self._saved.releases.pop(name, None)
            self._saved.accuracy.pop(name, None)
            self._saved.devices.pop(name, None)
            self._saved.blocked.pop(name, None)
        self._save()
        self._event(f"{name}: no longer desired, stopped")

    # -- children --------------------------------------------------------------------

    def _start_child(self, name: str, installed: StagedRelease | None) -> None:
        """Run what ``installed``'s kind runs for it (a swap); stop what ran when it runs nothing."""
        if installed is not None:
            kind = kind_for(installed.document.kind)
            spec = kind.child(
                installed.entry,
                cwd=self.options.run_dir / name,
                http_port=self.options.serve_http_port,
            )
            if spec is not None:
                self.supervisor.start(name, spec, log_file=self.options.logs_dir / f"{name}.log")
                with self._lock:
                    self._kinds[name] = kind
                return
        if name in self.supervisor.names():
            self.supervisor.stop(name)
        with self._lock:
            self._kinds.pop(name, None)

    # -- commands --------------------------------------------------------------------

    def _command(self, command: Command) -> None:
        if command.id in self._saved.commands:
            return  # a redelivery (QoS 1 is at least once)
        with self._lock:
            self._saved.commands = [*self._saved.commands[-63:], command.id]
        self._save()
        if command.release is not None and command.release not in self._saved.releases:
            self._event(f"command {command.kind} ({command.id}): no release {command.release!r}")
            return
        names = [command.release] if command.release else sorted(self._saved.releases)
        self._event(f"command {command.kind} ({command.id}) for {', '.join(names) or 'nothing'}")
        if command.kind == "report":
            self._report(force=True)
            self._on_report()
            return
        for name in names:
            if command.kind == "restart":
                if not self.supervisor.restart(name):
                    installed = self.installer.active(name)
                    if installed is not None:
                        self._start_child(name, installed)
            else:
                self._rollback(name)

    def _rollback(self, name: str) -> None:
        previous = _version(self.installer.previous(name))
        current = _version(self.installer.active(name))
        if previous is None:
            self._set(name, version=current, error=f"no previous release of {name} to roll back to")
            self._event(f"{name}: cannot roll back, no previous release on the device")
            return
        try:
            self.installer.rollback(name)
        except FoglineError as exc:
            self._set(name, version=current, error=f"rollback failed: {exc}")
            self._event(f"{name}: rollback failed: {exc}")
            return
        desired = self._saved.desired
        if desired is not None and current is not None:
            self._block(name, desired.releases.get(name, current), desired.generation)
        installed = self.installer.active(name)
        self._start_child(name, installed)
        self._set(name, version=_version(installed), target=None, phase="rolled-back", error=None)
        self._event(f"{name}: rolled back from {current} to {_version(installed)}")
        self._audit("release.rolled_back", release=name, version=_version(installed), by="command")

    # -- state -----------------------------------------------------------------------

    def _audit(self, event: str, **fields: Any) -> None:
        """Record ``event``; a log that cannot be written is logged, never stops converging."""
        if self.options.audit is None:
            return
        try:
            self.options.audit.record(event, **fields)
        except Exception:
            log.exception("audit log: could not record %s", event)

    def _set(self, name: str, **changes: Any) -> None:
        with self._lock:
            old = self._saved.releases.get(name) or ReleaseStatus()
            values = old.model_dump()
            values.update(changes)
            values["since"] = time.time() if values["phase"] != old.phase else old.since
            new = ReleaseStatus.model_validate(values)
            changed = new.model_dump(exclude={"since"}) != old.model_dump(exclude={"since"})
            self._saved.releases[name] = new if changed else old
        if changed:
            self._save()
            phase: Phase = new.phase
            if "phase" in changes and phase not in ("active", "failed", "refused"):
                what = _PHASE_WORDS.get(phase, phase)
                self._event(f"{name}: {what} {new.target or new.version or ''}".rstrip())

    def _health(self, releases: dict[str, ReleaseStatus]) -> Health:
        health: Health = "ok"
        for name, status in releases.items():
            if status.phase in ("failed", "refused"):
                health = "degraded"
            spec = self.supervisor.spec(name)
            if spec is not None and not self.supervisor.running(name):
                if self.supervisor.failures(name) >= self.options.crash_loop:
                    return "failed"
                health = "degraded"
        return health

    def _report(self, *, force: bool = False) -> None:
        state = self.state()
        fingerprint = state.model_dump_json(exclude={"time"})
        if force or fingerprint != self._published:
            self._published = fingerprint
            self._publish(state)

    def _load(self) -> _Saved:
        try:
            return _Saved.model_validate_json(self.state_file.read_bytes())
        except FileNotFoundError:
            return _Saved()
        except (OSError, ValidationError, ValueError) as exc:
            log.warning("%s unreadable (%s); starting from an empty state", self.state_file, exc)
            return _Saved()

    def _save(self) -> None:
        with self._lock:
            body = self._saved.model_dump_json()
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.state_file, mode=None) as tmp:
            tmp.write_text(body)


class _HealthFailed(FoglineError):
    """The staged release failed its health check (not activated)."""
