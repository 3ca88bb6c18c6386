"""End to end on one device: an agent installs a release encrypted for it, and runs its model.

A real Mosquitto, a real TUF repository over HTTP, the real agent: the
release's files are ciphertext on the server, the agent unwraps the data key
with its X25519 key, keeps the model sealed with its device key, runs it from
memory in its health check and reports its canary accuracy. Afterwards the
device's folder holds no slice of the model. (A pipeline child opening a
sealed model with ``$FOGLINE_DEVICE_KEY_FILE`` is ``test_agent``'s pipeline
test: every model an agent keeps is sealed.)
"""

from __future__ import annotations

import json
from pathlib import Path

from fogline.examples import digits_model_path
from fogline.fleet.agent._keyring import Keyring
from fogline.protocol import DesiredState
from fogline.security import Envelope, new_data_key, public_bytes
from support.agent_fixtures import make_agent
from support.broker import Mosquitto
from support.fleet_agent import (
    FakeController,
    ReleaseServer,
    check_active,
    model_release,
    release_phase,
)
from support.leaks import files_holding


def test_an_encrypted_release_installs_and_runs_from_a_sealed_model(
    tmp_path: Path, broker: Mosquitto, releases: ReleaseServer, controller: FakeController
) -> None:
    # Prepare: the device's keys exist (as after enrolment); the release is wrapped for it
    data = tmp_path / "cam-1"
    keyring = Keyring.load(data)
    releases.publish(
        model_release(tmp_path / "r1"), "digits", "1.0.0", sample="sample.npz",
        canary="canary.npz", latency_budget_ms=1000,
        envelope=Envelope(new_data_key(), {"cam-1": public_bytes(keyring.release_key)}),
    )  # fmt: skip
    plain = digits_model_path().read_bytes()
    assert files_holding(releases.folder, plain) == []
    controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
    # Execute
    with make_agent(tmp_path, broker, releases):
        state = controller.wait_state(
            "cam-1", lambda s: release_phase(s, "digits")[::2] == ("1.0.0", "active")
        )
        controller.wait(
            lambda: any(
                body["metrics"].get("digits", {}).get("accuracy")
                for _, body in controller.telemetry
            ),
            what="telemetry with the canary accuracy",
        )
    # Assert: it ran (the canary accuracy of the decrypted model); nothing plain on disk
    assert state.health == "ok"
    accuracy = [b["metrics"].get("digits", {}).get("accuracy") for _, b in controller.telemetry]
    assert max(a for a in accuracy if a is not None) > 0.9
    assert check_active(data, "digits") == "1.0.0"
    assert files_holding(data, plain) == []
    events = [json.loads(line)["event"] for line in (data / "audit.jsonl").read_text().splitlines()]
    assert "release.installed" in events
