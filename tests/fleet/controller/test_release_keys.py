"""A real controller keeps encrypted releases readable by exactly its enrolled, unrevoked devices.

Devices enrol over real HTTP with their X25519 release key; an encrypted
release is wrapped for them; a device enrolled later gets the key of the
releases already published (re-wrapped on its enrolment); a revoked one
(``fogline fleet revoke``) loses its MQTT login, is left out of every key
document from then on, and cannot enrol again under its id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fogline.cli import main
from fogline.cli._controller import _login_remover
from fogline.errors import WrongKey
from fogline.fleet.agent._keyring import Keyring
from fogline.fleet.controller import ReleaseKeys
from fogline.fleet.controller._release_keys import CONTROLLER_KEY
from fogline.security import KeySource, decrypt_file, init_device_key
from fogline.transport.mqtt import PasswordFile
from support.fleet_controller import Setup, tiny_model


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    s.controller.release_keys.revoke_login = _login_remover(tmp_path / "broker")
    yield s
    s.close()


def enrol(setup: Setup, device: str, release_key: str) -> httpx.Response:
    token = setup.api.post("/api/tokens", json={"group": "default"}).json()["token"]
    body = {"device_id": device, "token": token, "release_key": release_key}
    return httpx.post(setup.controller.base_url + "/api/enrol", json=body, timeout=30)


def wrapped_for(setup: Setup, version: str) -> set[str]:
    keys = setup.repo.keys_document("secret", version)
    assert keys is not None
    return set(keys.keys)


def test_enrolment_rewraps_and_revocation_leaves_a_device_out(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: cam-a enrolled, an encrypted release published for the fleet
    keyrings = {device: Keyring.load(tmp_path / device) for device in ("cam-a", "cam-b")}
    assert enrol(setup, "cam-a", keyrings["cam-a"].public_key()).status_code == 201
    targets_key = setup.data / "keys" / "targets.pem"
    model = tiny_model(tmp_path / "secret", seed=7)
    published = setup.controller.release_keys.publish(model, "secret", "1.0.0", targets_key)
    assert wrapped_for(setup, "1.0.0") == {"cam-a"}

    # Execute: cam-b enrols afterwards; then cam-a is revoked from the CLI
    assert enrol(setup, "cam-b", keyrings["cam-b"].public_key()).status_code == 201
    after_enrolment = wrapped_for(setup, "1.0.0")
    status = main(["fleet", "revoke", "cam-a", "--controller", setup.controller.base_url,
                   "--data", str(setup.data)])  # fmt: skip
    shown = capsys.readouterr().out
    setup.controller.release_keys.publish(model, "secret", "2.0.0", targets_key)

    # Assert: cam-b can read 1.0.0 (the key wrapped for it opens the stored ciphertext)
    assert after_enrolment == {"cam-a", "cam-b"}
    keys = setup.repo.keys_document("secret", "1.0.0")
    assert keys is not None
    item = published.document.files[0]
    blob = (setup.repo.targets_dir / item.blob_path).read_bytes()
    plain = decrypt_file(
        blob, keys.unwrap("cam-b", keyrings["cam-b"].release_key), "secret", "1.0.0", item.path
    )
    assert plain == (model / "model.onnx").read_bytes()
    # cam-a: out of both key documents, its login gone, no new enrolment
    assert status == 0 and "revoked" in shown and "secret 1.0.0" in shown
    assert wrapped_for(setup, "1.0.0") == wrapped_for(setup, "2.0.0") == {"cam-b"}
    assert "cam-a" not in PasswordFile(setup.folder / "broker" / "passwords").users()
    again = enrol(setup, "cam-a", keyrings["cam-a"].public_key())
    assert again.status_code == 403 and "was revoked" in again.json()["error"]
    lines = [json.loads(line) for line in (setup.data / "audit.jsonl").read_text().splitlines()]
    revoked = [line["fields"] for line in lines if line["event"] == "device.revoked"]
    assert revoked == [{"device": "cam-a", "login_removed": True}]


def test_a_malformed_release_key_is_refused_before_the_token_is_spent(setup: Setup) -> None:
    token = setup.api.post("/api/tokens", json={"group": "default"}).json()["token"]
    url = setup.controller.base_url + "/api/enrol"
    bad = httpx.post(url, json={"device_id": "cam-c", "token": token, "release_key": "abc"})
    assert bad.status_code == 400 and "release_key" in bad.json()["error"]
    good = httpx.post(url, json={"device_id": "cam-c", "token": token})  # the same token
    assert good.status_code == 201


def test_a_device_cannot_enrol_as_the_controller(setup: Setup) -> None:
    passwords = setup.folder / "broker" / "passwords"
    before = passwords.read_bytes()
    token = setup.api.post("/api/tokens", json={"group": "default"}).json()["token"]
    url = setup.controller.base_url + "/api/enrol"
    taken = httpx.post(url, json={"device_id": "controller", "token": token}, timeout=30)
    assert taken.status_code == 400 and "'controller' is reserved" in taken.json()["error"]
    assert passwords.read_bytes() == before  # the controller's password is untouched
    good = httpx.post(url, json={"device_id": "cam-d", "token": token}, timeout=30)
    assert good.status_code == 201  # the token was not spent


def test_the_controller_key_may_live_outside_the_data_folder(
    setup: Setup,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Prepare: an enrolled device, the controller key in a vault outside DATA
    keyring = Keyring.load(tmp_path / "cam-a")
    assert enrol(setup, "cam-a", keyring.public_key()).status_code == 201
    vault = tmp_path / "vault" / "controller.key"
    init_device_key(vault)
    model = tiny_model(tmp_path / "secret", seed=3)

    # Execute: publish from the CLI with --release-key-file
    status = main(["release", "create", str(model), "--name", "secret", "--version", "1.0.0",
                   "--data", str(setup.data), "--encrypt", "--release-key-file", str(vault)])  # fmt: skip
    assert status == 0, capsys.readouterr().err

    # Assert: nothing in DATA unseals the data key; the vault's key does (also by command)
    assert not (setup.data / CONTROLLER_KEY).exists()
    monkeypatch.setenv("FOGLINE_CONTROLLER_KEY_COMMAND", f"cat {vault}")
    from_command = ReleaseKeys(setup.data, setup.controller.registry, setup.repo)
    data_key = from_command._data_key("secret", "1.0.0")
    blank = KeySource(environ={}, env="FOGLINE_CONTROLLER_KEY")
    copy = ReleaseKeys(setup.data, setup.controller.registry, setup.repo, key_source=blank)
    with pytest.raises(WrongKey):
        copy._data_key("secret", "1.0.0")  # a copy of DATA alone: a fresh key, which fails
    keys = setup.repo.keys_document("secret", "1.0.0")
    assert keys is not None and keys.unwrap("cam-a", keyring.release_key) == data_key
