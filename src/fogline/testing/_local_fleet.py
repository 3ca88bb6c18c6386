"""A whole fleet on one machine, each part a real process: for end-to-end tests and benchmarks.

:class:`LocalFleet` makes the controller's keys, starts a Mosquitto with
passwords and the ACL (:class:`~fogline.transport.mqtt.LocalBroker`), runs
``fogline controller`` and one ``fogline agent`` per device as child
processes (enrolled with one-time tokens), and can kill any of them with
``SIGKILL`` and start it again on the same folder, which is what a crash
test needs. Every process logs to a file in the fleet's folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fogline.errors import FoglineError
from fogline.security import ReleaseRepository, init_keys
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl

__all__ = ["LocalFleet", "free_port", "wait_until"]


def wait_until(
    what: str, check: Callable[[], bool], timeout: float = 90.0, step: float = 0.1
) -> None:
    """Poll ``check`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalFleet:
    """A broker, a controller process and agent processes under ``folder``; see the module docstring."""

    def __init__(
        self, folder: Path, *, telemetry_period: float = 1.0, controller_args: tuple[str, ...] = ()
    ) -> None:
        self.folder = Path(folder)
        self.data = self.folder / "controller"
        init_keys(self.data)
        self.repository = ReleaseRepository(self.data)
        self.broker = LocalBroker(BrokerConfig(folder=self.data / "broker", port=free_port()))
        self.broker.start()
        user = self.broker.add_controller()
        url = MqttUrl.parse(self.broker.url)  # str(MqttUrl) leaves the password out
        self.controller_broker = f"mqtt://{user.user}:{user.password}@{url.host}:{url.port}"
        self.http_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.telemetry_period = telemetry_period
        self.controller_args = tuple(controller_args)  # more `fogline controller` options
        self.controller: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self._api: httpx.Client | None = None

    # -- the controller ----------------------------------------------------------------------

    def start_controller(self, timeout: float = 60.0) -> None:
        command = [
            sys.executable, "-m", "fogline", "controller", "--broker", self.controller_broker,
            "--broker-admin", str(self.data / "broker"), "--data", str(self.data),
            "--http-port", str(self.http_port), "--verify-every", "0", *self.controller_args,
        ]  # fmt: skip
        self.controller = self._spawn(command, "controller")
        wait_until("the controller's API", self._healthy, timeout)

    def kill_controller(self) -> None:
        """``SIGKILL``: nothing is flushed or closed."""
        if self.controller is not None:
            self.controller.send_signal(signal.SIGKILL)
            self.controller.wait(30)
            self.controller = None

    def _healthy(self) -> bool:
        if self.controller is not None and self.controller.poll() is not None:
            raise FoglineError(f"the controller exited: {self.log('controller')[-2000:]}")
        try:
            return httpx.get(self.base_url + "/api/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def api(self) -> httpx.Client:
        if self._api is None:
            token = (self.data / "admin.token").read_text().strip()
            self._api = httpx.Client(
                base_url=self.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
        return self._api

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One API call; AssertionError with the controller's answer when it is not 2xx."""
        response = self.api.request(method, path, json=body)
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    # -- agents --------------------------------------------------------------------------------

    def start_agent(self, device: str, group: str | None = None) -> None:
        """Start (or restart, on its folder) the agent of ``device``; enrolled on first start."""
        folder = self.folder / "devices" / device
        command = [
            sys.executable, "-m", "fogline", "agent", "--broker", self.broker.url,
            "--controller", self.base_url, "--data", str(folder), "--device-id", device,
            "--telemetry-period", str(self.telemetry_period),
        ]  # fmt: skip
        if not (folder / "credentials.json").exists():
            token = self.call("POST", "/api/tokens", {"group": group or "default"})["token"]
            command += ["--token", token]
        self.agents[device] = self._spawn(command, device)

    def kill_agent(self, device: str) -> None:
        agent = self.agents.pop(device)
        agent.send_signal(signal.SIGKILL)
        agent.wait(30)

    def online(self) -> set[str]:
        return {d["id"] for d in self.call("GET", "/api/devices") if d["online"]}

    # -- releases ------------------------------------------------------------------------------

    def publish(self, folder: Path, name: str, version: str, **options: Any) -> None:
        self.repository.create_release(
            folder, name, version, self.data / "keys" / "targets.pem", **options
        )

    def deploy(self, name: str, version: str, group: str = "default", **plan: Any) -> str:
        body = {"release": name, "version": version, "group": group,
                "strategy": {"kind": "all", "bake_seconds": 0, **plan},
                "criteria": {"require_telemetry": False}}  # fmt: skip
        return str(self.call("POST", "/api/deployments", body)["id"])

    def deployment(self, deployment: str) -> dict[str, Any]:
        found: dict[str, Any] = self.call("GET", f"/api/deployments/{deployment}")
        return found

    # -- the end ------------------------------------------------------------------------------

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for agent in self.agents.values():
            agent.terminate()
        if self.controller is not None:
            self.controller.terminate()
        for process in [*self.agents.values(), self.controller]:
            if process is None:
                continue
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.agents.clear()
        self.controller = None
        if self._api is not None:
            self._api.close()
        self.broker.stop()

    def __enter__(self) -> LocalFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _spawn(self, command: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
