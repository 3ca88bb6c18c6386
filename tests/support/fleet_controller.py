"""A real controller, broker and simulated devices for the controller and CLI tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fogline.errors import ConfigError
from fogline.fleet.controller._controller import Controller, ControllerConfig
from fogline.security import ReleaseRepository, init_keys
from fogline.testing._simulator import SimulatedFleet, installer_factory
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl, device_credentials
from support.broker import free_port


def tiny_model(folder: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [
            numpy_helper.from_array(rng.normal(size=(8, 2)).astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros(2, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    return folder


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Setup:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "controller"
        init_keys(self.data)
        self.repo = ReleaseRepository(self.data)
        for seed, version in enumerate(("1.0.0", "1.1.0")):
            self.repo.create_release(
                tiny_model(folder / f"m{seed}", seed),
                "tiny",
                version,
                self.data / "keys" / "targets.pem",
            )
        self.broker = LocalBroker(
            BrokerConfig(folder=folder / "broker", port=free_port(), auth=True)
        )
        self.broker.start()
        controller_user = self.broker.add_controller()
        url = MqttUrl.parse(self.broker.url)
        self.controller = Controller(
            ControllerConfig(
                data=self.data,
                broker=MqttUrl(
                    url.host, url.port, False, controller_user.user, controller_user.password
                ),
                http_port=0,
                credentials=device_credentials(folder / "broker"),
                tick_seconds=0.1,
            )
        ).start()
        assert self.controller.wait_connected(30)
        self.api = httpx.Client(
            base_url=self.controller.base_url,
            headers={"Authorization": f"Bearer {self.controller.token}"},
            timeout=30,
        )
        self.fleets: list[SimulatedFleet] = []

    def devices(
        self, count: int, *, fail: Collection[str] = (), prefix: str = "sim"
    ) -> SimulatedFleet:
        """``count`` enrolled devices (their MQTT passwords come from enrolment)."""
        real = installer_factory(
            self.folder / "devices", self.controller.base_url + "/repository",
            self.data / "repository" / "metadata" / "root.json",
        )  # fmt: skip

        def install(device_id: str, name: str, version: str, rollback: bool) -> None:
            if device_id in fail and version == "1.1.0":
                raise ConfigError("health check: latency 80 ms over the budget of 20 ms")
            real(device_id, name, version, rollback)

        ids = [f"{prefix}-{i}" for i in range(count)]
        passwords = {}
        for device_id in ids:
            token = self.api.post("/api/tokens", json={"group": "default"}).json()["token"]
            enrolled = httpx.post(
                self.controller.base_url + "/api/enrol",
                json={"device_id": device_id, "token": token},
            ).json()
            passwords[device_id] = enrolled["password"]
        fleet = SimulatedFleet(
            count, MqttUrl.parse(self.broker.url), install=install, id_format=prefix + "-{}",
            telemetry_seconds=1.0, passwords=passwords,
        )  # fmt: skip
        threading.Thread(target=fleet.loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(fleet.start(), fleet.loop).result(60)
        self.fleets.append(fleet)
        return fleet

    def deploy(self, version: str, **strategy: Any) -> dict[str, Any]:
        made = self.api.post(
            "/api/deployments",
            json={"release": "tiny", "version": version, "strategy": strategy},
        )
        assert made.status_code == 201, made.text
        return dict(made.json())

    def finished(self, deployment: str) -> dict[str, Any]:
        result: dict[str, Any] = {}

        def done() -> bool:
            result.update(self.api.get(f"/api/deployments/{deployment}").json())
            return bool(result["status"] != "running")

        wait_for(f"deployment {deployment} to end", done)
        return result

    def close(self) -> None:
        for fleet in self.fleets:
            asyncio.run_coroutine_threadsafe(fleet.stop(), fleet.loop).result(30)
            fleet.loop.call_soon_threadsafe(fleet.loop.stop)
        self.controller.stop()
        self.broker.stop()


def run_cli(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    """``fogline ARGS --controller URL --token T`` as a process against ``setup``'s controller."""
    command = [sys.executable, "-m", "fogline", *args]
    command += ["--controller", setup.controller.base_url, "--token", setup.controller.token]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
