"""The controller refuses releases whose stored bytes rotted: a real controller, broker and HTTP.

A blob flipped on the controller's disk is answered with 503 naming the
release file instead of bytes, listed as damaged, and refused for
deployment; an intact release beside it serves and deploys as before. Rot
that leaves size and mtime alone (so a cached check cannot see it) is found
by the controller's timer.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fogline.fleet.controller._controller import Controller, ControllerConfig
from fogline.security import ReleaseRepository, init_keys
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl
from support.broker import free_port
from support.damage import flip_byte
from support.fleet_controller import tiny_model, wait_for


class Fleet:
    """A controller with releases tiny 1.0.0 and 1.1.0, one enrolled device, the API client."""

    def __init__(self, folder: Path, verify_seconds: float) -> None:
        self.data = folder / "controller"
        init_keys(self.data)
        self.repo = ReleaseRepository(self.data)
        for seed, version in enumerate(("1.0.0", "1.1.0")):
            model = tiny_model(folder / f"m{seed}", seed)
            self.repo.create_release(model, "tiny", version, self.data / "keys" / "targets.pem")
        self.broker = LocalBroker(
            BrokerConfig(folder=folder / "broker", port=free_port(), auth=True)
        )
        self.broker.start()
        user = self.broker.add_controller()
        url = MqttUrl.parse(self.broker.url)
        self.controller = Controller(
            ControllerConfig(
                data=self.data,
                broker=MqttUrl(url.host, url.port, False, user.user, user.password),
                http_port=0,
                tick_seconds=0.1,
                verify_seconds=verify_seconds,
            )
        ).start()
        self.api = httpx.Client(
            base_url=self.controller.base_url,
            headers={"Authorization": f"Bearer {self.controller.token}"},
            timeout=30,
        )
        token = self.api.post("/api/tokens", json={"group": "default"}).json()["token"]
        enrolled = self.api.post("/api/enrol", json={"device_id": "cam-1", "token": token})
        assert enrolled.status_code == 201, enrolled.text

    def blob(self, version: str) -> tuple[str, Path]:
        """The target path and the stored file of ``model.onnx`` in tiny ``version``."""
        item = self.repo.release("tiny", version).files[0]
        assert item.path == "model.onnx"
        return item.blob_path, self.repo.targets_dir / item.blob_path

    def get(self, target: str, **headers: str) -> httpx.Response:
        return self.api.get(f"/repository/targets/{target}", headers=headers)

    def deploy(self, version: str) -> httpx.Response:
        return self.api.post("/api/deployments", json={"release": "tiny", "version": version})

    def damaged(self) -> dict[str, Any]:
        return {r["version"]: r["damaged"] for r in self.api.get("/api/releases").json()}

    def close(self) -> None:
        self.api.close()
        self.controller.stop()
        self.broker.stop()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path, verify_seconds=3600)
    yield made
    made.close()


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[Fleet]:
    made = Fleet(tmp_path, verify_seconds=0.2)
    yield made
    made.close()


def test_a_damaged_blob_is_refused_and_an_intact_release_still_serves_and_deploys(
    fleet: Fleet,
) -> None:
    # Prepare
    damaged, damaged_file = fleet.blob("1.0.0")
    intact, intact_file = fleet.blob("1.1.0")
    flip_byte(damaged_file, 100)

    # Execute
    served = fleet.get(damaged)
    head = fleet.api.head(f"/repository/targets/{damaged}")
    deployed = fleet.deploy("1.0.0")
    listed = fleet.damaged()
    good = fleet.get(intact)
    part = fleet.get(intact, Range="bytes=10-19")
    good_deploy = fleet.deploy("1.1.0")

    # Assert
    assert served.status_code == 503 and head.status_code == 503
    assert f"release tiny 1.0.0: model.onnx hash differs (stored as {damaged})" in served.text
    assert deployed.status_code == 400
    error = deployed.json()["error"]
    assert "release tiny 1.0.0 is damaged on the controller" in error
    assert f"model.onnx hash differs (stored as {damaged})" in error
    assert listed == {"1.0.0": f"model.onnx hash differs (stored as {damaged})", "1.1.0": None}
    assert good.status_code == 200
    assert hashlib.sha256(good.content).hexdigest() == intact_file.name
    assert part.status_code == 206 and part.content == intact_file.read_bytes()[10 : 19 + 1]
    assert good_deploy.status_code == 201, good_deploy.text
    document = fleet.get("releases/tiny/1.0.0.json")
    assert document.status_code == 200  # the document is intact; only its model is not
    assert fleet.get("blobs/" + "0" * 64).status_code == 404  # not a signed target


def test_a_missing_blob_is_named_too(fleet: Fleet) -> None:
    target, file = fleet.blob("1.1.0")
    assert fleet.get(target).status_code == 200
    file.unlink()
    answer = fleet.get(target)
    assert answer.status_code == 404  # nothing on disk to serve
    refused = fleet.deploy("1.1.0")
    assert refused.status_code == 400
    assert f"model.onnx missing (stored as {target})" in refused.json()["error"]
    assert fleet.damaged()["1.1.0"] == f"model.onnx missing (stored as {target})"


def test_the_timer_finds_rot_that_leaves_size_and_mtime_alone(
    audited: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="fogline.controller")
    target, file = audited.blob("1.1.0")
    assert audited.get(target).status_code == 200  # hashed once, remembered by stat
    assert audited.damaged() == {"1.0.0": None, "1.1.0": None}

    flip_byte(file, 100, keep_mtime=True)  # a stat sees nothing: only a new hash can
    wait_for("the audit to mark 1.1.0 damaged", lambda: audited.damaged()["1.1.0"] is not None)

    assert audited.damaged()["1.1.0"] == f"model.onnx hash differs (stored as {target})"
    assert audited.get(target).status_code == 503
    assert audited.deploy("1.1.0").status_code == 400
    assert f"release tiny 1.1.0: model.onnx hash differs (stored as {target})" in caplog.text

    flip_byte(file, 100, keep_mtime=True)  # restored: the next audit clears it
    wait_for("the audit to clear 1.1.0", lambda: audited.damaged()["1.1.0"] is None)
    assert audited.get(target).status_code == 200
    assert audited.deploy("1.1.0").status_code == 201
