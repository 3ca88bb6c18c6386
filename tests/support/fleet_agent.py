"""Helpers for the agent tests: the test plays the controller.

:class:`ReleaseServer` is a real signed release repository (``init_keys`` +
``ReleaseRepository``) served by a real uvicorn on loopback through the
controller's own ``/repository`` routes, plus a small ``/api/enrol`` route
that trades one known token for the trusted root. :class:`FakeController`
is a real paho MQTT 5 client that publishes retained desired states and
commands and collects what devices report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import uvicorn
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fogline.examples import digits_model_path, digits_split
from fogline.fleet.controller._artifacts import repository_routes
from fogline.protocol import Command, DesiredState, DeviceState
from fogline.security import (
    KeySource,
    PublishedRelease,
    ReleaseDocument,
    ReleaseRepository,
    SealedFiles,
    init_keys,
    is_model_file,
)

ENROL_TOKEN = "one-time-token"


class ReleaseServer:
    """Keys, a signed repository and an HTTP server for it (and for enrolment)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        init_keys(folder)
        self.repository = ReleaseRepository(folder)
        self.key = folder / "keys" / "targets.pem"
        self.enrolled: list[str] = []

        async def enrol(request: Request) -> Response:
            body = await request.json()
            if body.get("token") != ENROL_TOKEN:
                return JSONResponse({"error": "unknown or used token"}, status_code=403)
            self.enrolled.append(body["device_id"])
            return JSONResponse(
                {
                    "username": None,
                    "password": None,
                    "prefix": "fogline",
                    "trusted_root": self.root.read_text(),
                },
                status_code=201,
            )

        app = Starlette(
            routes=[
                *repository_routes(self.repository),
                Route("/api/enrol", enrol, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    @property
    def root(self) -> Path:
        return self.repository.metadata_dir / "root.json"

    def publish(self, folder: Path, name: str, version: str, **options: Any) -> PublishedRelease:
        return self.repository.create_release(folder, name, version, self.key, **options)

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def model_release(folder: Path, *, pad_bytes: int = 0, seed: int = 0) -> Path:
    """A release folder around the digits model, with its sample, canary set and padding.

    ``pad_bytes`` of random data make a download that takes a moment (for kill tests);
    ``seed`` changes the padding so two versions differ in content.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_model_path(), folder / "model.onnx")
    x, y = digits_split("eval")
    np.savez(folder / "sample.npz", pixels=x[:1])
    np.savez(folder / "canary.npz", x=x[:200], y=y[:200])
    (folder / "version.txt").write_text(f"seed {seed}\n")
    if pad_bytes:
        rng = np.random.default_rng(seed)
        (folder / "weights.bin").write_bytes(rng.integers(0, 256, pad_bytes, np.uint8).tobytes())
    return folder


def pipeline_release(folder: Path) -> Path:
    """A pipeline release: the digits model replaying its eval set forever, nothing stored."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(digits_model_path(), folder / "model.onnx")
    spec = {
        "name": "digits",
        "sources": [
            {
                "type": "dataset",
                "name": "scanner",
                "function": "fogline.examples:digits_stream",
                "rate": 200,
                "loop": True,
            }
        ],
        "preprocess": [
            {"type": "normalize", "scale": 0.0625},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
        "model": {"path": "model.onnx", "max_batch": 8, "max_wait_ms": 2},
        "postprocess": [{"type": "classify"}],
        "store": False,
    }
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def check_active(data: Path, name: str) -> str:
    """The version ``DEV/active/<name>`` points at, after checking every file's hash.

    Fails the test when the link points at a folder that is not exactly what
    its signed release document lists (a partial or mixed release).
    """
    link = data / "active" / name
    assert link.is_symlink(), f"{link} is not a symlink"
    target = link.resolve()
    version = target.name
    document = ReleaseDocument.model_validate_json((target.parent / f"{version}.json").read_bytes())
    assert document.version == version
    listed = {item.path for item in document.files}
    present = {str(path.relative_to(target)) for path in target.rglob("*") if path.is_file()}
    assert present == listed, f"{target}: files {sorted(present)} != {sorted(listed)}"
    key_file = data / "keys" / "device.key"
    read = SealedFiles(KeySource(file=key_file)) if key_file.exists() else None
    for item in document.files:
        file = target / item.path
        plain = read(file) if read is not None else None
        if read is not None and is_model_file(item.path):
            assert plain is not None, f"{file} is a model kept in the clear, not sealed"
        content = file.read_bytes() if plain is None else plain
        digest = hashlib.sha256(content).hexdigest()
        assert digest == item.content_sha256, f"{file} does not match its hash"
    return version


class FakeController:
    """Publishes desired states and commands; collects states, presence and telemetry."""

    def __init__(self, broker_url: str, prefix: str = "fogline") -> None:
        host_port = broker_url.removeprefix("mqtt://")
        host, port = host_port.rsplit(":", 1)
        self.prefix = prefix
        self.states: dict[str, DeviceState] = {}
        self.presence: dict[str, bool] = {}
        self.telemetry: list[tuple[str, dict[str, Any]]] = []  # (idempotency key, body)
        self._lock = threading.Condition()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-controller-{os.getpid()}-{id(self)}",
            protocol=paho.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600  # persistent: telemetry waits while it reconnects
        self._client.connect_async(host, int(port), 30, clean_start=False, properties=props)
        self._client.loop_start()

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe(
            [
                (f"{self.prefix}/devices/+/state", 1),
                (f"{self.prefix}/devices/+/presence", 1),
                (f"{self.prefix}/devices/+/telemetry", 1),
            ]
        )

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        _, _, device, kind = message.topic.split("/")
        with self._lock:
            if kind == "state":
                self.states[device] = DeviceState.model_validate_json(message.payload)
            elif kind == "presence":
                self.presence[device] = json.loads(message.payload)["online"]
            elif kind == "telemetry":
                user = dict(getattr(message.properties, "UserProperty", None) or [])
                envelope = json.loads(message.payload)
                self.telemetry.append((user["idempotency-key"], envelope))
            self._lock.notify_all()

    def desire(self, device: str, desired: DesiredState) -> None:
        topic = f"{self.prefix}/devices/{device}/desired"
        self._client.publish(topic, desired.model_dump_json(), qos=1, retain=True).wait_for_publish(
            10
        )

    def command(self, device: str, command: Command) -> None:
        topic = f"{self.prefix}/devices/{device}/command"
        self._client.publish(topic, command.model_dump_json(), qos=1).wait_for_publish(10)

    def wait(self, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
        with self._lock:
            if not self._lock.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what or predicate}: {self.states}")

    def wait_state(
        self, device: str, predicate: Callable[[DeviceState], bool], timeout: float = 60.0
    ) -> DeviceState:
        self.wait(
            lambda: device in self.states and predicate(self.states[device]),
            timeout,
            f"a state of {device}",
        )
        return self.states[device]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def release_phase(state: DeviceState, name: str) -> tuple[str | None, str | None, str]:
    status = state.releases.get(name)
    return (
        (None, None, "absent") if status is None else (status.version, status.target, status.phase)
    )
