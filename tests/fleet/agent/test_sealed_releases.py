"""Releases a thief cannot use: sealed at rest on a device, encrypted for enrolled devices only.

Real TUF repository over real HTTP (:class:`support.fleet_agent.ReleaseServer`),
real installers with real device keys, the real digits model. A copied
device folder or repository holds no 64-byte slice of the model; a device
the release is not wrapped for is refused before anything is decrypted; one
it is re-wrapped for (enrolled later) installs it; a revoked one does not
get the next release.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fogline.errors import ReleaseRefused, WrongKey
from fogline.examples import digits_model_path
from fogline.fleet.agent import ReleaseInstaller
from fogline.fleet.agent._keyring import Keyring
from fogline.fleet.agent.kinds import check_release, kind_for
from fogline.security import (
    DeviceKey,
    Envelope,
    SealedFiles,
    new_data_key,
    public_bytes,
)
from support.fleet_agent import ReleaseServer, check_active, model_release
from support.leaks import files_holding

PLAIN = digits_model_path().read_bytes()


def installer(tmp_path: Path, releases: ReleaseServer, device: str) -> ReleaseInstaller:
    data = tmp_path / device
    return ReleaseInstaller(
        data, f"{releases.url}/repository", trusted_root=releases.root,
        keyring=Keyring.load(data), device_id=device,
    )  # fmt: skip


def release_key(tmp_path: Path, device: str) -> bytes:
    return public_bytes(Keyring.load(tmp_path / device).release_key)


def install(device: ReleaseInstaller, version: str) -> None:
    staged = device.fetch("digits", version)
    report = check_release(
        kind_for("model"), staged.entry, sample=staged.path / "sample.npz", read=device.read
    )
    assert report.ok, report.reason  # the health check ran the sealed model from memory
    device.activate(staged)


def test_a_device_keeps_its_models_sealed_and_finds_a_plain_one_put_in_their_place(
    tmp_path: Path, releases: ReleaseServer
) -> None:
    # Prepare: a release with PyTorch weights and pickled model beside its ONNX model
    folder = model_release(tmp_path / "r1")
    weights = {name: os.urandom(4096) for name in ("weights.pt", "forest.joblib")}
    for name, data in weights.items():
        (folder / name).write_bytes(data)
    releases.publish(folder, "digits", "1.0.0")
    with installer(tmp_path, releases, "cam-1") as device:
        # Execute
        install(device, "1.0.0")
        # Assert: nothing on the device holds the model or its weights; the key file is 0600
        assert files_holding(tmp_path / "cam-1", PLAIN) == []
        for name, data in weights.items():
            assert files_holding(tmp_path / "cam-1", data) == [], name
            active = tmp_path / "cam-1" / "active" / "digits" / name
            assert device.read(active) == data  # opened in memory with the device key
        assert check_active(tmp_path / "cam-1", "digits") == "1.0.0"
        assert oct(os.stat(tmp_path / "cam-1" / "keys" / "device.key").st_mode & 0o777) == "0o600"
        model = tmp_path / "cam-1" / "active" / "digits" / "model.onnx"
        with pytest.raises(WrongKey):  # a copy is useless without this device's key
            SealedFiles(DeviceKey.generate())(model)
        # a plain model put in place of the sealed one is damage: rolled back / reported
        blob = model.resolve()
        os.chmod(blob, 0o644)
        blob.write_bytes(PLAIN)
        notes = device.recover()
    assert any("not sealed" in note for note in notes), notes


def test_an_encrypted_release_opens_for_its_devices_only_and_is_rewrapped_for_new_ones(
    tmp_path: Path, releases: ReleaseServer
) -> None:
    # Prepare: cam-a is enrolled when 1.0.0 is published; cam-b enrols afterwards
    data_key = new_data_key()
    releases.publish(
        model_release(tmp_path / "r1"), "digits", "1.0.0",
        envelope=Envelope(data_key, {"cam-a": release_key(tmp_path, "cam-a")}),
    )  # fmt: skip
    repository_files = files_holding(releases.folder, PLAIN)
    with installer(tmp_path, releases, "cam-a") as a, installer(tmp_path, releases, "cam-b") as b:
        # Execute / Assert: the repository holds ciphertext only; cam-a installs, cam-b cannot
        assert repository_files == []
        install(a, "1.0.0")
        with pytest.raises(ReleaseRefused, match="holds no key for device 'cam-b'"):
            b.fetch("digits", "1.0.0")
        files = {item.sha256 for item in releases.repository.release("digits", "1.0.0").files}
        kept = {blob.name for blob in (tmp_path / "cam-b" / "blobs").iterdir()}
        assert kept and not kept & files  # its documents only: refused before any file
        # re-wrapped for cam-b (what the controller does when it enrols)
        recipients = {device: release_key(tmp_path, device) for device in ("cam-a", "cam-b")}
        releases.repository.rewrap("digits", "1.0.0", data_key, recipients, releases.key)
        install(b, "1.0.0")
        # cam-a is revoked: 2.0.0 is wrapped for cam-b only
        releases.publish(
            model_release(tmp_path / "r2", seed=2), "digits", "2.0.0",
            envelope=Envelope(new_data_key(), {"cam-b": recipients["cam-b"]}),
        )  # fmt: skip
        with pytest.raises(ReleaseRefused, match="holds no key for device 'cam-a'"):
            a.fetch("digits", "2.0.0")
        install(b, "2.0.0")
    for device in ("cam-a", "cam-b"):
        assert files_holding(tmp_path / device, PLAIN) == []
    assert check_active(tmp_path / "cam-a", "digits") == "1.0.0"
    assert check_active(tmp_path / "cam-b", "digits") == "2.0.0"


def test_a_key_wrapped_for_another_device_key_is_refused(
    tmp_path: Path, releases: ReleaseServer
) -> None:
    # Prepare: the key document names cam-a, but with another X25519 key than cam-a holds
    impostor = Keyring.load(tmp_path / "elsewhere")
    releases.publish(
        model_release(tmp_path / "r1"), "digits", "1.0.0",
        envelope=Envelope(new_data_key(), {"cam-a": public_bytes(impostor.release_key)}),
    )  # fmt: skip
    refused = pytest.raises(ReleaseRefused, match="does not open with this device's release key")
    # Execute / Assert
    with installer(tmp_path, releases, "cam-a") as a, refused:
        a.fetch("digits", "1.0.0")
