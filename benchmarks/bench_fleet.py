"""How fast a fleet converges on a new release: N simulated devices, a real broker and controller.

    python benchmarks/bench_fleet.py [--devices 100 --devices 1000] [--workers 8]

For each N, in a fresh folder:

* a real Mosquitto on loopback (``fogline.fleet.LocalBroker``, anonymous, with
  ``sys_interval 1`` so its ``$SYS`` counters give messages per second);
* ``fogline controller`` as its own process (so its CPU and memory are its
  own), with keys and two signed releases of a small ONNX model;
* ``fogline.testing._simulator.SimulatedFleet``: N devices in this process, each
  with its own MQTT session (persistent, last will, QoS 1), each installing
  the release for real (TUF refresh, download, hash check, atomic
  activation) in its own device folder, on ``--workers`` threads.

Two rollouts are timed from the deploy request to the controller reporting
every device on the release (strategy ``all``, no bake): 1.0.0 onto empty
devices, then the upgrade to 1.1.0. Printed per rollout: seconds, messages
per second through the broker (received + sent, from ``$SYS``), controller
CPU (% of one core, averaged over the rollout) and peak RSS.

Target (issue 5): 1,000 devices converge on a new release in under 60 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import paho.mqtt.client as paho
import psutil
from onnx import TensorProto, helper, numpy_helper
from paho.mqtt.enums import CallbackAPIVersion

from fogline.security import ReleaseRepository, init_keys
from fogline.testing import SimulatedFleet, installer_factory
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl

TARGET_SECONDS = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tiny_model(folder: Path, seed: int) -> Path:
    """A 64→10 linear classifier (the digits shape), a few KB."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.normal(size=(10,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    return folder


class SysCounters:
    """Mosquitto's ``$SYS/broker/messages/{received,sent}``, read continuously."""

    def __init__(self, url: MqttUrl) -> None:
        self.values: dict[str, int] = {}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(
            [("$SYS/broker/messages/received", 0), ("$SYS/broker/messages/sent", 0)]
        )
        self.client.on_message = self._on_message
        self.client.connect(url.host, url.port)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        self.values[message.topic.rsplit("/", 1)[1]] = int(message.payload)

    def total(self) -> int:
        time.sleep(1.1)  # one sys_interval, so the value is current
        return self.values.get("received", 0) + self.values.get("sent", 0)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rollout(
    api: httpx.Client, version: str, devices: int, controller: psutil.Process, sys: SysCounters
) -> dict[str, float]:
    messages_before = sys.total()
    counted_from = time.perf_counter()
    cpu_before = sum(controller.cpu_times()[:2])
    start = time.perf_counter()
    made = api.post(
        "/api/deployments",
        json={
            "release": "tiny",
            "version": version,
            "group": "default",
            "strategy": {"kind": "all", "bake_seconds": 0, "timeout_seconds": 600},
            # Convergence is what is timed: without this the rollout would also wait for
            # each device's next telemetry report on the release (up to one 10 s period).
            "criteria": {"max_error_rate": None, "require_telemetry": False},
        },
    )
    made.raise_for_status()
    deployment = made.json()["id"]
    peak_rss = 0
    while True:
        peak_rss = max(peak_rss, controller.memory_info().rss)
        status = api.get(f"/api/deployments/{deployment}").json()
        if status["status"] != "running":
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - start
    cpu = sum(controller.cpu_times()[:2]) - cpu_before
    messages = sys.total() - messages_before
    counted = time.perf_counter() - counted_from
    if status["status"] != "succeeded":
        raise SystemExit(f"rollout of {version} ended {status['status']}: {status['reason']}")
    return {
        "seconds": seconds,
        "messages_per_second": messages / counted,
        "messages": messages,
        "cpu_percent": 100 * cpu / seconds,
        "rss_mb": peak_rss / 1e6,
        "devices": devices,
    }


def run(devices: int, workers: int) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory(prefix="fogline-fleet-bench-") as tmp:
        root = Path(tmp)
        data = root / "controller"
        init_keys(data)
        repo = ReleaseRepository(data)
        for seed, version in enumerate(("1.0.0", "1.1.0")):
            repo.create_release(
                tiny_model(root / f"model-{version}", seed), "tiny", version,
                data / "keys" / "targets.pem",
            )  # fmt: skip
        broker = LocalBroker(
            BrokerConfig(
                folder=root / "broker", port=free_port(), auth=False, extra=("sys_interval 1",)
            )
        )
        broker.start()
        http_port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "fogline", "controller", "--broker", broker.url,
             "--data", str(data), "--http-port", str(http_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        sys_counters = SysCounters(MqttUrl.parse(broker.url))
        base = f"http://127.0.0.1:{http_port}"
        token = None
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    token = (data / "admin.token").read_text().strip()
                    if httpx.get(base + "/api/health", timeout=1).status_code == 200:
                        break
                except (OSError, httpx.HTTPError):
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"the controller did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
                time.sleep(0.2)
            api = httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            install = installer_factory(
                root / "devices",
                base + "/repository",
                data / "repository" / "metadata" / "root.json",
            )
            fleet = SimulatedFleet(
                devices, MqttUrl.parse(broker.url), install=install, workers=workers,
                telemetry_seconds=10.0,
            )  # fmt: skip
            loop_thread = threading.Thread(target=fleet.loop.run_forever, daemon=True)
            loop_thread.start()
            asyncio.run_coroutine_threadsafe(fleet.start(), fleet.loop).result(120)
            deadline = time.monotonic() + 120
            while len(api.get("/api/devices").json()) < devices:
                if time.monotonic() > deadline:
                    raise SystemExit("the controller did not see every device in 120 s")
                time.sleep(0.2)
            controller = psutil.Process(process.pid)
            for version, what in (("1.0.0", "first install"), ("1.1.0", "upgrade")):
                r = rollout(api, version, devices, controller, sys_counters)
                verdict = ""
                if devices >= 1000:
                    passed = "PASS" if r["seconds"] < TARGET_SECONDS else "FAIL"
                    verdict = f" (target < {TARGET_SECONDS:.0f} s: {passed})"
                lines.append(
                    f"N={devices:>5} {what:<13} {version}: all devices on it in {r['seconds']:.1f} s"
                    f"{verdict}; broker {r['messages_per_second']:,.0f} msg/s "
                    f"({r['messages']:,.0f} messages); controller CPU {r['cpu_percent']:.0f}% of a core, "
                    f"peak RSS {r['rss_mb']:.0f} MB"
                )
                print(lines[-1], flush=True)
            counts = fleet.versions("tiny")
            assert counts == {"1.1.0": devices}, counts
            asyncio.run_coroutine_threadsafe(fleet.stop(), fleet.loop).result(60)
            fleet.loop.call_soon_threadsafe(fleet.loop.stop)
            if fleet.stats.errors:
                print("simulator errors:", json.dumps(fleet.stats.errors[:5]))
        finally:
            sys_counters.close()
            process.terminate()
            process.wait(30)
            broker.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, action="append")
    parser.add_argument("--workers", type=int, default=8, help="install threads in the simulator")
    args = parser.parse_args()
    print(
        f"fleet convergence, {os.cpu_count()} cores, simulator + controller + Mosquitto on one machine"
    )
    lines = []
    for n in args.devices or [100, 1000]:
        lines += run(n, args.workers)
    print("\nsummary")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
