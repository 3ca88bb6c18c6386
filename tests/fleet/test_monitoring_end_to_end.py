"""A model's health across a real fleet: live accuracy and drift reach the controller, a bad canary rolls back.

``fogline.testing.LocalFleet``: Mosquitto with passwords and the ACL, the
controller and two agents, each a real process. The release is the
monitoring example's pipeline (``src/fogline/examples/digits_monitor``):
the digits stream that shifts two pixels halfway, drift on the model's
input, and the stream's own labels replayed late (``labels.source.type:
delayed``), so live accuracy is measured on each device's own traffic.
Version 1.1.0 carries a deterministically bad model: the digits model with
its output classes rotated by one (it answers 3 for a 2, as sure as ever),
so its live accuracy is near zero while its confidence, and the estimate
made from it, stay high. A canary of it with ``--min-accuracy`` is rolled
back on its live accuracy, and the deployment says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import onnx
import yaml
from onnx import numpy_helper

import fogline.examples
from fogline.examples import digits_model_path
from fogline.model import Manifest, sha256_file
from fogline.testing import LocalFleet, wait_until

RELEASE = "digits-monitor"
DIGITS_DIR = digits_model_path().parent
EXAMPLE = Path(fogline.examples.__file__).parent / "digits_monitor" / "pipeline.yaml"
DEVICES = ("cam-1", "cam-2")


def rotated_model(folder: Path) -> None:
    """The digits model answering class ``(c + 1) % 10`` for ``c``: wrong, and just as confident."""
    model = onnx.load(folder / "model.onnx")
    for init in model.graph.initializer:
        if init.name in ("head.3.weight", "head.3.bias"):
            values = numpy_helper.to_array(init)
            rolled = values[[9, 0, 1, 2, 3, 4, 5, 6, 7, 8]]  # row c now scores class c + 1
            init.CopyFrom(numpy_helper.from_array(rolled, init.name))
    onnx.save(model, folder / "model.onnx")
    manifest = Manifest.read(folder)
    path = folder / "model.onnx"
    entry = manifest.model.model_copy(
        update={"sha256": sha256_file(path), "size_bytes": path.stat().st_size}
    )
    manifest.model_copy(update={"version": "2", "model": entry}).write(folder)


def release(folder: Path, version: str, *, bad: bool = False) -> Path:
    """The monitoring example as a release: its pipeline, looping, with its own model folder."""
    folder.mkdir(parents=True)
    shutil.copytree(
        DIGITS_DIR, folder / "model", ignore=shutil.ignore_patterns("*.pt", "pipeline.yaml")
    )
    if bad:
        rotated_model(folder / "model")
    spec: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec["sources"][0].update(rate=150, loop=True)
    spec["model"]["path"] = "model"
    spec["labels"] = {
        "source": {"type": "delayed", "function": "fogline.examples:digits_drifting_stream",
                   "delay_s": 1.0, "rate": 150},
        "windows": [100, 1000],
    }  # fmt: skip
    # Each version keeps its own store: the replayed stream gives the same item ids again.
    spec["store"] = {"path": f"results-{version}.db"}
    (folder / "pipeline.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def monitoring(fleet: LocalFleet, **query: str) -> list[dict[str, Any]]:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    rows: list[dict[str, Any]] = fleet.call("GET", f"/api/monitoring?since=0&{params}")
    return rows


def test_live_accuracy_and_drift_reach_the_controller_and_a_bad_canary_rolls_back(
    tmp_path: Path,
) -> None:
    with LocalFleet(tmp_path, telemetry_period=1.0) as fleet:
        fleet.start_controller()
        fleet.publish(release(tmp_path / "good", "1.0.0"), RELEASE, "1.0.0")
        fleet.publish(release(tmp_path / "bad", "1.1.0", bad=True), RELEASE, "1.1.0")
        for device in DEVICES:
            fleet.start_agent(device)
        wait_until("two agents online", lambda: fleet.online() == set(DEVICES))

        first = fleet.deploy(RELEASE, "1.0.0")
        wait_until("1.0.0 everywhere", lambda: fleet.deployment(first)["status"] != "running")
        assert fleet.deployment(first)["status"] == "succeeded", fleet.log("cam-1")

        # Live accuracy from each device's own labels, and the drift alarm, at the controller.
        def measured() -> bool:
            live = monitoring(fleet, kind="live", version="1.0.0")
            return {r["device_id"] for r in live if r["count"] >= 100} == set(DEVICES)

        wait_until("live accuracy on 100 labels from both devices", measured, timeout=120)
        live = [r for r in monitoring(fleet, kind="live", version="1.0.0") if r["count"] >= 100]
        assert all(r["key"] == "1" and r["metric"] == "accuracy" for r in live), live
        assert min(r["value"] for r in live if r["window"] == "100") > 0.9, live

        # The stream shifts two pixels halfway: the KS test on the model's input raises an alarm.
        def input_alarms() -> list[dict[str, Any]]:
            events = fleet.call("GET", "/api/events?limit=500")
            return [
                e for e in events if e["kind"] == "drift" and "stage drift (ks)" in e["message"]
            ]

        wait_until("a drift alarm on the input", lambda: bool(input_alarms()), timeout=120)
        alarm = input_alarms()[-1]
        assert alarm["device_id"] in DEVICES
        assert alarm["message"].startswith(
            f"drift alarm on {RELEASE} 1.0.0, stage drift (ks): score"
        )

        # The bad model as a canary: rolled back on its live accuracy, named as such.
        made = fleet.call(
            "POST", "/api/deployments",
            {"release": RELEASE, "version": "1.1.0",
             "strategy": {"kind": "canary", "canary": 1, "bake_seconds": 2, "timeout_seconds": 120},
             "criteria": {"min_accuracy": 0.8, "min_labelled": 50}},
        )  # fmt: skip
        wait_until(
            "the canary judged", lambda: fleet.deployment(made["id"])["status"] != "running",
            timeout=150,
        )  # fmt: skip
        done = fleet.deployment(made["id"])
        canary = next(d["device_id"] for d in done["devices"] if d["wave"] == 0)
        assert done["status"] == "rolled-back", done
        assert done["reason"].startswith("live accuracy "), done["reason"]
        assert f"labelled items on {canary} < 80.0%" in done["reason"]
        wait_until(
            "the canary back on 1.0.0",
            lambda: next(d for d in fleet.call("GET", "/api/devices") if d["id"] == canary)[
                "state"]["releases"][RELEASE]["version"] == "1.0.0",
        )  # fmt: skip
        others = [d for d in done["devices"] if d["wave"] == 1]
        assert [d["status"] for d in others] == ["waiting"]  # the other device never got it
