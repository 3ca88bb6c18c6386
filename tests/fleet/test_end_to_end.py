"""The whole fleet as a user runs it: broker, controller, three real agent processes.

Mosquitto with passwords and the ACL, the controller (registry, rollouts,
API, signed repository), and three ``fogline agent`` processes enrolled with
one-time tokens. A release goes out as a canary and then to all, while the
broker is down during the canary's bake (which waits for it); a release that fails its health check on
the canary is rolled back by itself and the other devices never get it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fogline.fleet.controller._controller import Controller, ControllerConfig
from fogline.security import ReleaseRepository, init_keys
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl, device_credentials
from support.broker import free_port
from support.fleet_agent import check_active, model_release

DEVICES = ("cam-1", "cam-2", "cam-3")


def wait_for(what: str, check: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Fleet:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "controller"
        init_keys(self.data)
        self.repo = ReleaseRepository(self.data)
        self.broker = LocalBroker(BrokerConfig(folder=folder / "broker", port=free_port()))
        self.broker.start()
        user = self.broker.add_controller()
        url = MqttUrl.parse(self.broker.url)
        self.controller = Controller(
            ControllerConfig(
                data=self.data,
                broker=MqttUrl(url.host, url.port, False, user.user, user.password),
                http_port=0,
                credentials=device_credentials(folder / "broker"),
                tick_seconds=0.2,
            )
        ).start()
        self.api = httpx.Client(
            base_url=self.controller.base_url,
            headers={"Authorization": f"Bearer {self.controller.token}"},
            timeout=30,
        )
        self.agents: list[subprocess.Popen[bytes]] = []

    def publish(self, version: str, **options: Any) -> None:
        folder = model_release(self.folder / f"release-{version}", seed=len(version))
        self.repo.create_release(
            folder, "digits", version, self.data / "keys" / "targets.pem", sample="sample.npz",
            **options,
        )  # fmt: skip

    def start_agents(self) -> None:
        for device in DEVICES:
            token = self.api.post("/api/tokens", json={}).json()["token"]
            command = [
                sys.executable, "-m", "fogline", "agent", "--broker", self.broker.url,
                "--controller", self.controller.base_url, "--data", str(self.folder / device),
                "--device-id", device, "--token", token, "--telemetry-period", "1",
            ]  # fmt: skip
            log = (self.folder / f"{device}.log").open("wb")
            self.agents.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    def devices(self) -> dict[str, dict[str, Any]]:
        return {d["id"]: d for d in self.api.get("/api/devices").json()}

    def deploy(self, version: str, **strategy: Any) -> str:
        made = self.api.post(
            "/api/deployments",
            json={"release": "digits", "version": version, "strategy": strategy},
        )
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def deployment(self, deployment: str) -> dict[str, Any]:
        return dict(self.api.get(f"/api/deployments/{deployment}").json())

    def finished(self, deployment: str) -> dict[str, Any]:
        wait_for(deployment, lambda: self.deployment(deployment)["status"] != "running")
        return self.deployment(deployment)

    def logs(self) -> str:
        return "\n".join((self.folder / f"{d}.log").read_text() for d in DEVICES)

    def close(self) -> None:
        for agent in self.agents:
            agent.terminate()
        for agent in self.agents:
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        self.controller.stop()
        self.broker.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(tmp_path)
    yield f
    f.close()


def test_canary_then_all_through_a_broker_restart_then_a_bad_release_rolls_back(
    fleet: Fleet,
) -> None:
    fleet.publish("1.0.0")
    fleet.publish("1.1.0")
    fleet.publish("1.2.0", latency_budget_ms=0.001)  # no model runs in a microsecond
    fleet.start_agents()
    wait_for("three agents online", lambda: sum(d["online"] for d in fleet.devices().values()) == 3)

    first = fleet.finished(fleet.deploy("1.0.0", kind="all", bake_seconds=0))
    assert first["status"] == "succeeded", (first, fleet.logs())

    # Canary, then all; the broker goes down while the canary bakes. Nothing is
    # heard from the canary, so its bake does not pass however long it lasts;
    # when the broker is back, the canary's queued telemetry arrives, the bake
    # starts again from there, and then the rollout goes on.
    upgrade = fleet.deploy("1.1.0", kind="canary", canary=1, bake_seconds=3)
    wait_for(
        "the canary on 1.1.0", lambda: fleet.deployment(upgrade)["counts"].get("converged") == 1
    )
    fleet.broker.stop()
    stopped = time.monotonic()
    canary = [d["device_id"] for d in fleet.deployment(upgrade)["devices"] if d["wave"] == 0]
    while time.monotonic() - stopped < 9:  # three bakes, and three times the silence allowed
        during = fleet.deployment(upgrade)
        assert (during["status"], during["wave"]) == ("running", 0), during
        time.sleep(0.5)
    assert during["bake"]["waiting"] == canary and during["bake"]["silent"] == canary, during
    fleet.broker.start()
    done = fleet.finished(upgrade)
    assert done["status"] == "succeeded", (done, fleet.logs())
    assert next(w for w in done["devices"] if w["wave"] == 0)["status"] == "converged"
    for device in DEVICES:
        assert check_active(fleet.folder / device, "digits") == "1.1.0"

    # A release that fails its health check on the canary: rolled back by itself.
    bad = fleet.finished(fleet.deploy("1.2.0", kind="canary", canary=1, bake_seconds=0))
    assert bad["status"] == "rolled-back", bad
    assert "over the budget of 0.001 ms" in bad["reason"]
    canary = next(d["device_id"] for d in bad["devices"] if d["wave"] == 0)
    wait_for(
        "every device reporting 1.1.0",
        lambda: (
            {d["state"]["releases"]["digits"]["version"] for d in fleet.devices().values()}
            == {"1.1.0"}
        ),
    )
    for device in DEVICES:
        assert check_active(fleet.folder / device, "digits") == "1.1.0"
        fetched = (fleet.folder / device / "releases" / "digits" / "1.2.0").exists()
        assert not fetched, f"{device} kept the bad release"
    others = [d for d in DEVICES if d != canary]
    for device in others:
        assert "1.2.0" not in (fleet.folder / f"{device}.log").read_text()
    assert "1.2.0" in (fleet.folder / f"{canary}.log").read_text()
