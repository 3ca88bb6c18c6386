"""A device fine-tunes on its own captures on a schedule and the controller ships the candidate.

``fogline.testing.LocalFleet``: Mosquitto with passwords and the ACL, ``fogline
controller --accept-offers default`` and one ``fogline agent``, real
processes. The device runs the digits model as release ``digits`` 1.0.0 (with
a canary set); its pipeline's results store is seeded with real captures of
the model's input, half of them digits moved two pixels to the right (a
knocked camera), and their late labels. A ``learner`` release with a
``finetune:`` section makes the agent fine-tune the last layer on them, gate
the candidate, and offer it over MQTT; the controller re-checks it on the
canary set, signs ``digits`` 1.1.0 with the device's report in its provenance
and starts a canary rollout, recorded as an event.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fogline.examples import digits_model_path, digits_split
from fogline.testing import LocalFleet, wait_until
from support.finetune_captures import seed_store

DEVICE = "edge-1"


def model_release(folder: Path) -> Path:
    """The digits model as a model release, with the held-out digits as its canary set."""
    folder.mkdir(parents=True)
    for name in ("model.onnx", "fogline.yaml"):
        shutil.copyfile(digits_model_path().parent / name, folder / name)
    x, y = digits_split("eval")
    np.savez(folder / "canary.npz", x=x, y=y)
    return folder


def learner_release(folder: Path) -> Path:
    folder.mkdir(parents=True)
    spec = {
        "finetune": {
            "release": "digits", "model": ".", "store": "results.db", "every_s": 2,
            "min_labelled": 200, "holdout": 0.25, "original": "fogline.examples:digits_eval",
            "epochs": 20, "threads": 1, "min_gain": 0.02, "max_forgetting": 0.2,
            "canary": {"bake_s": 1},
        }
    }  # fmt: skip
    (folder / "learner.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    with LocalFleet(tmp_path, controller_args=("--accept-offers", "default")) as f:
        f.start_controller()
        f.start_agent(DEVICE)
        wait_until("the agent online", lambda: f.online() == {DEVICE})
        yield f


def events(fleet: LocalFleet, kind: str) -> list[dict[str, Any]]:
    return [e for e in fleet.call("GET", "/api/events?limit=200") if e["kind"] == kind]


def test_a_device_fine_tunes_on_schedule_and_its_offer_becomes_a_signed_canary(
    fleet: LocalFleet, tmp_path: Path
) -> None:
    fleet.publish(model_release(tmp_path / "digits"), "digits", "1.0.0", kind="model",
                  canary="canary.npz")  # fmt: skip
    first = fleet.deploy("digits", "1.0.0")
    wait_until(
        "digits 1.0.0 on the device", lambda: fleet.deployment(first)["status"] == "succeeded"
    )
    seed_store(tmp_path / "devices" / DEVICE / "agent" / "run" / "digits" / "results.db")

    fleet.publish(learner_release(tmp_path / "learner"), "digits-finetune", "1.0.0")
    learner = fleet.deploy("digits-finetune", "1.0.0")
    wait_until(
        "the learner on the device", lambda: fleet.deployment(learner)["status"] == "succeeded"
    )

    wait_until("the offer accepted", lambda: events(fleet, "offer-accepted") or events(
        fleet, "offer-refused"), timeout=240)  # fmt: skip
    assert not events(fleet, "offer-refused"), fleet.log("controller")[-3000:]
    (accepted,) = events(fleet, "offer-accepted")
    assert accepted["device_id"] == DEVICE
    assert "signed digits 1.1.0" in accepted["message"], accepted
    assert "controller check: canary set" in accepted["message"], accepted

    # a signed release, its provenance naming the device and its report
    (release,) = [r for r in fleet.call("GET", "/api/releases") if r["name"] == "digits"
                  and r["version"] == "1.1.0"]  # fmt: skip
    assert release["damaged"] is None and release["kind"] == "model"
    assert release["canary"]["data"] == "canary.npz"
    provenance = release["provenance"]
    assert provenance["finetuned_on_device"] == DEVICE
    assert provenance["base"] == {"name": "digits", "version": "1.0.0"}
    gate = provenance["device_report"]["gate"]
    assert gate["passed"] and gate["gain"] >= 0.02, gate
    check = provenance["controller_check"]["canary_set"]
    assert check["items"] == 597 and check["forgetting"] <= 0.2, check

    # a canary rollout of it, started by the controller
    deployment = fleet.deployment(accepted["deployment"])
    assert (deployment["release"], deployment["version"]) == ("digits", "1.1.0"), deployment
    assert deployment["strategy"]["kind"] == "canary"

    # the device heard the answer and said so
    wait_until(
        "the agent's log line", lambda: "accepted: release digits 1.1.0" in fleet.log(DEVICE)
    )
    assert "gate passed" in fleet.log(DEVICE)
