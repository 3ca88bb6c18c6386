"""Run what a release describes as child processes, restart them on a crash, read their metrics.

What runs for a release is its kind's :class:`ChildSpec`
(:mod:`fogline.fleet.agent.kinds`: ``fogline run`` for a ``pipeline``,
``fogline serve`` for a ``serve`` release, nothing for a bare ``model``,
which another program reads). Each child is a separate process, so a crash or a leak in a model runtime cannot
take the agent down, and the agent can always stop it.

A child that exits on its own is started again after a backoff that doubles
from ``backoff_initial`` up to ``backoff_max`` and goes back to the start once
a run lasted ``stable_after`` seconds. Stopping sends SIGTERM (the pipeline
and the server drain) and SIGKILL after ``stop_timeout``. Each child gets
its own process group, so a SIGINT to the agent's terminal is not also a
SIGINT to every child: the agent decides when they stop. Every child gets
the agent's environment plus the supervisor's ``env``: the agent sets
``FOGLINE_DEVICE_ID`` (:data:`DEVICE_ID_ENV`) there, so a pipeline that is
a cluster node names its fleet device in its presence.

For the same reason a child outlives an agent killed with SIGKILL. With a
``pid_file`` the supervisor writes down every child it runs (pid and start
time) and, when made again, ends the ones a killed agent left behind, so a
restarted agent never runs a release twice.

Concurrency: one watcher thread polls the children; :meth:`Supervisor.start`,
:meth:`~Supervisor.stop` and :meth:`~Supervisor.metrics` may be called from
any thread (one lock guards the table of children).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from fogline._files import atomic_output
from fogline.errors import ConfigError

log = logging.getLogger(__name__)

#: The variable that tells a child which fleet device runs it (a cluster node's ``device``).
DEVICE_ID_ENV = "FOGLINE_DEVICE_ID"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the child binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ChildSpec:
    """What to run for one release: the command line, its folder, its metrics port.

    >>> spec = ChildSpec(("python", "-m", "fogline", "run", "p.yaml"), Path("/tmp"), 9100)
    >>> spec.argv[3], spec.http_port
    ('run', None)
    """

    argv: tuple[str, ...]
    cwd: Path
    metrics_port: int
    http_port: int | None = None


@dataclass
class _Child:
    spec: ChildSpec
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive short runs, for the backoff
    restart_at: float | None = None
    last_exit: int | None = None
    log_file: Path | None = None
    stopping: bool = False


class Supervisor:
    """Keeps one child process per release name running.

    >>> with Supervisor() as supervisor:
    ...     supervisor.running("digits")
    False
    """

    def __init__(
        self,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 30.0,
        stop_timeout: float = 10.0,
        poll_interval: float = 0.2,
        on_event: Callable[[str], None] | None = None,
        pid_file: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ConfigError(
                f"backoff needs 0 < initial <= max, got {backoff_initial} and {backoff_max}"
            )
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self._on_event = on_event or (lambda line: None)
        self._children: dict[str, _Child] = {}
        self._lock = threading.RLock()
        self._pid_file = pid_file
        self._env = dict(env or {})
        if pid_file is not None:
            self._end_leftovers(pid_file)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fogline-supervisor", daemon=True)
        self._thread.start()

    # -- control -------------------------------------------------------------------

    def start(self, name: str, spec: ChildSpec, *, log_file: Path | None = None) -> None:
        """Run ``spec`` for ``name``, stopping the child that ran for it before (a swap)."""
        self.stop(name)
        child = _Child(spec, log_file=log_file)
        with self._lock:
            self._children[name] = child
            self._spawn(name, child)

    def stop(self, name: str) -> None:
        """Stop ``name``'s child (SIGTERM, then SIGKILL) and forget it; nothing if none runs."""
        with self._lock:
            child = self._children.pop(name, None)
            if child is not None:
                child.stopping = True
        if child is not None and child.process is not None:
            _terminate(child.process, self.stop_timeout)
            self._on_event(f"{name}: stopped its process (pid {child.process.pid})")
        if child is not None:
            self._write_pids()

    def restart(self, name: str) -> bool:
        """Stop and start ``name``'s child again with the same command; False if none is known."""
        with self._lock:
            child = self._children.get(name)
        if child is None:
            return False
        self.start(name, child.spec, log_file=child.log_file)
        return True

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._children)

    def running(self, name: str) -> bool:
        with self._lock:
            child = self._children.get(name)
            return bool(child and child.process and child.process.poll() is None)

    def pid(self, name: str) -> int | None:
        with self._lock:
            child = self._children.get(name)
            if child and child.process and child.process.poll() is None:
                return child.process.pid
            return None

    def restarts(self, name: str) -> int:
        with self._lock:
            child = self._children.get(name)
            return child.restarts if child else 0

    def failures(self, name: str) -> int:
        """Exits in a row that came before the child ran ``stable_after`` seconds (a crash loop)."""
        with self._lock:
            child = self._children.get(name)
            return child.failures if child else 0

    def spec(self, name: str) -> ChildSpec | None:
        with self._lock:
            child = self._children.get(name)
            return child.spec if child else None

    def pids(self) -> list[int]:
        """The process ids of every running child (for CPU and memory telemetry)."""
        with self._lock:
            return [
                c.process.pid
                for c in self._children.values()
                if c.process is not None and c.process.poll() is None
            ]

    def metrics_text(self, name: str, timeout: float = 2.0) -> str | None:
        """The child's Prometheus exposition text, or None when it does not answer (yet)."""
        spec = self.spec(name)
        if spec is None or not self.running(name):
            return None
        url = f"http://127.0.0.1:{spec.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                body: bytes = response.read()
        except (OSError, urllib.error.URLError):
            return None
        return body.decode("utf-8", "replace")

    def close(self) -> None:
        """Stop every child and the watcher thread."""
        self._stop.set()
        self._thread.join()
        for name in self.names():
            self.stop(name)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the watcher ---------------------------------------------------------------

    def _spawn(self, name: str, child: _Child) -> None:
        output: int | object = subprocess.DEVNULL
        handle = None
        if child.log_file is not None:
            child.log_file.parent.mkdir(parents=True, exist_ok=True)
            handle = open(child.log_file, "ab")  # noqa: SIM115  # the child keeps it open
            output = handle
        child.spec.cwd.mkdir(parents=True, exist_ok=True)
        try:
            child.process = subprocess.Popen(
                child.spec.argv,
                cwd=child.spec.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,  # type: ignore[arg-type]
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self._env, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:
            child.process = None
            child.failures += 1
            child.restart_at = time.monotonic() + self._backoff(child.failures)
            self._on_event(f"{name}: cannot start its process: {exc}")
            return
        finally:
            if handle is not None:
                handle.close()
        child.started = time.monotonic()
        child.restart_at = None
        self._write_pids()
        self._on_event(f"{name}: started {child.spec.argv[3]} (pid {child.process.pid})")

    def _write_pids(self) -> None:
        if self._pid_file is None:
            return
        with self._lock:
            table = {
                name: {"pid": c.process.pid, "created": _created(c.process.pid)}
                for name, c in self._children.items()
                if c.process is not None
            }
        self._pid_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(self._pid_file, mode=None) as tmp:
            tmp.write_text(json.dumps(table))

    def _end_leftovers(self, pid_file: Path) -> None:
        try:
            table = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            return
        for name, entry in table.items() if isinstance(table, dict) else ():
            try:
                process = psutil.Process(int(entry["pid"]))
                if abs(process.create_time() - float(entry["created"])) > 0.01:
                    continue  # the pid was reused by another program
            except (psutil.Error, KeyError, TypeError, ValueError):
                continue
            self._on_event(f"{name}: ending pid {process.pid}, left running by a previous agent")
            with contextlib.suppress(psutil.Error):
                process.terminate()
                try:
                    process.wait(self.stop_timeout)
                except psutil.TimeoutExpired:
                    process.kill()
        with contextlib.suppress(OSError):
            pid_file.unlink()

    def _backoff(self, failures: int) -> float:
        return min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 32))

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval):
            with self._lock:
                for name, child in list(self._children.items()):
                    self._check(name, child)

    def _check(self, name: str, child: _Child) -> None:
        now = time.monotonic()
        if child.restart_at is not None:
            if now >= child.restart_at and not child.stopping:
                child.restarts += 1
                self._spawn(name, child)
            return
        if child.process is None or child.stopping:
            return
        code = child.process.poll()
        if code is None:
            return
        child.last_exit = code
        ran = now - child.started
        child.failures = 1 if ran >= self.stable_after else child.failures + 1
        delay = self._backoff(child.failures)
        child.restart_at = now + delay
        self._on_event(
            f"{name}: its process exited with status {code} after {ran:.1f} s; "
            f"restarting in {delay:.1f} s"
        )


def _created(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()
