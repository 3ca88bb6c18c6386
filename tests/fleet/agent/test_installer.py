"""A device installs signed releases from a real TUF repository served by a real uvicorn server.

Every forged or stale case is refused and leaves the active release as it
was; downloads resume with Range; kill -9 at random points never leaves a
partial release active.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import uvicorn
from tuf.api.metadata import Metadata, Targets, Timestamp

from fogline._files import remove_tree
from fogline.errors import ConfigError, ModelNotFound, ReleaseRefused, Unreachable
from fogline.fleet.agent import ReleaseInstaller, StagedRelease
from fogline.fleet.controller._artifacts import repository_app
from fogline.security import ReleaseRepository, init_keys, rotate_key
from fogline.security._metadata import MetadataStore, generate_signer, load_signer

NAME = "digits"


# -- building blocks -------------------------------------------------------------------------


from support.releases import model_folder  # noqa: E402


class Recorder:
    """ASGI wrapper: records requests; can serve endless data or throttle chosen paths."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.endless: set[str] = set()
        self.slow: set[str] = set()

    def requests_for(self, path: str) -> list[dict[str, str]]:
        return [headers for p, headers in self.requests if p == path]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        self.requests.append((path, {k.decode().lower(): v.decode() for k, v in scope["headers"]}))
        if path in self.endless:
            start = {"type": "http.response.start", "status": 200, "headers": []}
            await send(start)
            for _ in range(512):  # 32 MiB of zeros, far more than any signed length here
                await send({"type": "http.response.body", "body": bytes(65536), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return None
        if path in self.slow:

            async def slow_send(message: Any) -> None:
                if message["type"] == "http.response.body":
                    await asyncio.sleep(0.003)
                await send(message)

            return await self.app(scope, receive, slow_send)
        return await self.app(scope, receive, send)


class ServerThread:
    """uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def controller(tmp_path: Path) -> Path:
    data = tmp_path / "controller"
    init_keys(data)
    return data


@pytest.fixture
def repo(controller: Path) -> ReleaseRepository:
    return ReleaseRepository(controller)


@pytest.fixture
def recorder(repo: ReleaseRepository) -> Recorder:
    return Recorder(repository_app(repo))


@pytest.fixture
def server(recorder: Recorder) -> Iterator[ServerThread]:
    with ServerThread(recorder) as running:
        yield running


@pytest.fixture
def device(
    tmp_path: Path, controller: Path, server: ServerThread
) -> Iterator[Callable[..., ReleaseInstaller]]:
    made: list[ReleaseInstaller] = []

    def make(name: str = "device", **kwargs: Any) -> ReleaseInstaller:
        installer = ReleaseInstaller(
            tmp_path / name,
            f"{server.url}/repository",
            trusted_root=controller / "repository" / "metadata" / "1.root.json",
            **kwargs,
        )
        made.append(installer)
        return installer

    yield make
    for installer in made:
        installer.close()


def publish(repo: ReleaseRepository, tmp_path: Path, version: str, **kwargs: Any) -> None:
    offset = float(version.split(".")[0])
    folder = model_folder(tmp_path / "src", offset, **kwargs.pop("folder", {}))
    key = repo.layout.key_file("targets")
    repo.create_release(folder, NAME, version, key, **kwargs)


def assert_intact(staged: StagedRelease | None, version: str) -> None:
    """The release is exactly ``version``: every file there with its signed hash."""
    assert staged is not None
    assert staged.version == version
    for item in staged.document.files:
        data = (staged.path / item.path).read_bytes()
        assert len(data) == item.length and hashlib.sha256(data).hexdigest() == item.sha256


def blob_file(repo: ReleaseRepository, version: str, path: str) -> Path:
    doc = repo.release(NAME, version)
    (item,) = [f for f in doc.files if f.path == path]
    return repo.targets_dir / item.blob_path


def installed(
    device: Callable[..., ReleaseInstaller], repo: ReleaseRepository, tmp_path: Path
) -> ReleaseInstaller:
    """A device running 1.0.0, with 2.0.0 published (not installed)."""
    publish(repo, tmp_path, "1.0.0")
    installer = device()
    installer.activate(installer.fetch(NAME, "1.0.0"))
    publish(repo, tmp_path, "2.0.0")
    return installer


# -- install, upgrade, roll back --------------------------------------------------------------


def test_fetch_verifies_stages_and_activates_a_runnable_release(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    publish(repo, tmp_path, "1.0.0", latency_budget_ms=5.0)
    installer = device()
    assert installer.active(NAME) is None

    steps: list[str] = []
    staged = installer.fetch(NAME, "1.0.0", progress=steps.append)
    assert steps == ["verifying", "downloading", "staging"]
    assert installer.active(NAME) is None  # staged, not yet active
    installer.activate(staged)

    active = installer.active(NAME)
    assert_intact(active, "1.0.0")
    assert active is not None and active.entry.name == "model.onnx"
    assert active.document.health.latency_budget_ms == 5.0
    assert os.readlink(tmp_path / "device" / "active" / NAME) == "../releases/digits/1.0.0"
    assert not os.access(active.entry, os.W_OK) or os.geteuid() == 0
    assert oct(active.entry.stat().st_mode & 0o777) == "0o444"
    session = ort.InferenceSession(str(active.entry))
    (y,) = session.run(None, {"x": np.zeros((1, 4), np.float32)})
    assert y.tolist() == [[1.0] * 4]


def test_upgrade_keeps_the_previous_release_and_rollback_returns_to_it(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    installer.activate(installer.fetch(NAME, "2.0.0"))
    assert_intact(installer.active(NAME), "2.0.0")
    assert_intact(installer.previous(NAME), "1.0.0")

    back = installer.rollback(NAME)
    assert back.version == "1.0.0"
    assert_intact(installer.active(NAME), "1.0.0")
    assert installer.previous(NAME) is None
    with pytest.raises(ModelNotFound, match="no previous release"):
        installer.rollback(NAME)
    # newer again is allowed, and reuses the staged files
    installer.activate(installer.fetch(NAME, "2.0.0"))
    assert_intact(installer.active(NAME), "2.0.0")


def test_a_third_release_prunes_the_oldest(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    installer.activate(installer.fetch(NAME, "2.0.0"))
    publish(repo, tmp_path, "3.0.0")
    installer.activate(installer.fetch(NAME, "3.0.0"))
    releases = tmp_path / "device" / "releases" / NAME
    assert sorted(p.name for p in releases.iterdir()) == [
        "2.0.0",
        "2.0.0.json",
        "3.0.0",
        "3.0.0.json",
    ]
    wanted = {f.sha256 for v in ("2.0.0", "3.0.0") for f in repo.release(NAME, v).files}
    assert {p.name for p in (tmp_path / "device" / "blobs").iterdir()} == wanted


def test_unknown_release_is_not_found(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    publish(repo, tmp_path, "1.0.0")
    with pytest.raises(ModelNotFound, match=r"digits 9\.0\.0"):
        device().fetch(NAME, "9.0.0")


def test_without_a_trust_anchor_the_installer_does_not_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="enrol"):
        ReleaseInstaller(tmp_path / "dev", "http://127.0.0.1:9/repository")


def test_unreachable_repository_is_a_transport_error(
    controller: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    publish(repo, tmp_path, "1.0.0")
    installer = ReleaseInstaller(
        tmp_path / "dev",
        "http://127.0.0.1:9/repository",
        trusted_root=controller / "repository" / "metadata" / "root.json",
        timeout=5,
    )
    with installer, pytest.raises(Unreachable):  # a TransportError: the agent retries
        installer.fetch(NAME, "1.0.0")


# -- forged and stale releases: refused, active release untouched ---------------------------


def refused(installer: ReleaseInstaller, match: str, version: str = "2.0.0", **kw: Any) -> str:
    with pytest.raises(ReleaseRefused, match=match) as caught:
        installer.fetch(NAME, version, **kw)
    assert_intact(installer.active(NAME), "1.0.0")
    assert not list((installer.data / "releases" / NAME).glob(".staging-*"))
    # The agent says "refused: <message>"; the message says what, once, in its own words.
    message = str(caught.value)
    assert "refused" not in message and "Observed" not in message, message
    return message


def test_refuses_tampered_targets_metadata(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    targets_file = repo.metadata_dir / "targets.json"
    md = Metadata[Targets].from_bytes(targets_file.read_bytes())
    md.signed.expires += timedelta(days=1)  # any change to the signed part
    targets_file.write_bytes(md.to_bytes())
    refused(installer, "bad signature")


def test_refuses_targets_signed_with_another_key(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    # An attacker with the online key (snapshot, timestamp) but not the release key.
    store = MetadataStore(repo.layout)
    with repo.layout.locked():
        store.publish_targets(store.targets(), generate_signer())
    refused(installer, "bad signature")


def test_refuses_a_file_whose_hash_differs(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    blob = blob_file(repo, "2.0.0", "model.onnx")
    forged = bytearray(blob.read_bytes())
    forged[-1] ^= 0xFF
    blob.write_bytes(bytes(forged))
    message = refused(installer, "hash mismatch for file model.onnx")
    assert message.count("hash mismatch") == 1 and "the signed metadata says" in message
    assert not list((installer.data / "downloads").iterdir())  # a bad download is not kept


def test_refuses_a_file_whose_size_differs(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    blob = blob_file(repo, "2.0.0", "model.onnx")
    blob.write_bytes(blob.read_bytes()[:-2])
    refused(installer, "size mismatch for file model.onnx")


def test_refuses_a_file_larger_than_its_metadata_says(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    blob = blob_file(repo, "2.0.0", "model.onnx")
    blob.write_bytes(blob.read_bytes() + b"more")
    refused(installer, "size exceeds metadata.*model.onnx")


def test_refuses_endless_data(
    repo: ReleaseRepository,
    device: Callable[..., ReleaseInstaller],
    recorder: Recorder,
    tmp_path: Path,
) -> None:
    installer = installed(device, repo, tmp_path)
    blob = blob_file(repo, "2.0.0", "model.onnx")
    recorder.endless.add(f"/repository/targets/blobs/{blob.name}")
    refused(installer, "endless data.*model.onnx")


def test_refuses_a_release_older_than_the_active_one(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    installer.activate(installer.fetch(NAME, "2.0.0"))
    with pytest.raises(ReleaseRefused, match=r"older than active 2\.0\.0"):
        installer.fetch(NAME, "1.0.0")
    assert_intact(installer.active(NAME), "2.0.0")
    # the controller may take a device back to the previous release it holds
    staged = installer.fetch(NAME, "1.0.0", allow_downgrade_to_previous=True)
    installer.activate(staged)
    assert_intact(installer.active(NAME), "1.0.0")
    # but never to one it does not hold as previous
    fresh = device("fresh")
    fresh.activate(fresh.fetch(NAME, "2.0.0"))
    with pytest.raises(ReleaseRefused, match="older than active"):
        fresh.fetch(NAME, "1.0.0", allow_downgrade_to_previous=True)


def test_refuses_an_expired_timestamp(
    controller: Path,
    repo: ReleaseRepository,
    device: Callable[..., ReleaseInstaller],
    tmp_path: Path,
) -> None:
    installer = installed(device, repo, tmp_path)
    # The repository stops being re-signed (or an attacker replays an old one): freeze.
    path = repo.metadata_dir / "timestamp.json"
    md = Metadata[Timestamp].from_bytes(path.read_bytes())
    md.signed.version += 1
    md.signed.expires = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    md.signatures.clear()
    md.sign(load_signer(controller / "keys" / "online.pem"))
    path.write_bytes(md.to_bytes())
    refused(installer, "expired metadata")
    # the controller's refresh re-signs it and the device goes on
    assert repo.refresh_timestamp()
    installer.activate(installer.fetch(NAME, "2.0.0"))
    assert_intact(installer.active(NAME), "2.0.0")


def test_refuses_an_expired_release_document(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    publish(repo, tmp_path, "1.0.0")
    installer = device()
    installer.activate(installer.fetch(NAME, "1.0.0"))
    publish(repo, tmp_path, "2.0.0", expires=timedelta(seconds=1))
    expiry = repo.release(NAME, "2.0.0").expires
    while datetime.now(timezone.utc) <= expiry:
        time.sleep(0.1)
    refused(installer, r"expired at")


# -- rotation ---------------------------------------------------------------------------------


def test_a_device_with_the_old_root_follows_key_rotations(
    controller: Path,
    repo: ReleaseRepository,
    device: Callable[..., ReleaseInstaller],
    tmp_path: Path,
) -> None:
    installer = installed(device, repo, tmp_path)  # enrolled with root version 1
    rotate_key(controller, "root")
    rotate_key(controller, "targets")
    rotate_key(controller, "online")
    publish(repo, tmp_path, "3.0.0")
    installer.activate(installer.fetch(NAME, "3.0.0"))
    assert_intact(installer.active(NAME), "3.0.0")
    history = sorted(p.name for p in (installer.data / "tuf" / "root_history").iterdir())
    assert history == ["1.root.json", "2.root.json", "3.root.json", "4.root.json"]


def test_a_root_not_signed_by_the_old_root_key_is_refused(
    controller: Path,
    repo: ReleaseRepository,
    device: Callable[..., ReleaseInstaller],
    tmp_path: Path,
) -> None:
    installer = installed(device, repo, tmp_path)
    # Someone re-creates the repository with new keys: devices enrolled before refuse it.
    shutil.copytree(controller, tmp_path / "old")
    init_keys(controller, force=True)
    for version in ("1.0.0", "2.0.0", "3.0.0"):
        publish(ReleaseRepository(controller), tmp_path, version)
    refused(installer, "bad signature", version="3.0.0")


# -- resume and recovery ----------------------------------------------------------------------


def test_a_download_resumes_from_its_part_file(
    repo: ReleaseRepository,
    device: Callable[..., ReleaseInstaller],
    recorder: Recorder,
    tmp_path: Path,
) -> None:
    publish(repo, tmp_path, "1.0.0", folder={"data_bytes": 300_000})
    installer = device()
    blob = blob_file(repo, "1.0.0", "data.bin")
    half = blob.stat().st_size // 2
    (installer.data / "downloads" / f"{blob.name}.part").write_bytes(blob.read_bytes()[:half])

    installer.activate(installer.fetch(NAME, "1.0.0"))

    assert_intact(installer.active(NAME), "1.0.0")
    asked = recorder.requests_for(f"/repository/targets/blobs/{blob.name}")
    assert [headers.get("range") for headers in asked] == [f"bytes={half}-"]
    assert not list((installer.data / "downloads").iterdir())


def test_a_corrupt_part_file_is_downloaded_again(
    repo: ReleaseRepository,
    device: Callable[..., ReleaseInstaller],
    recorder: Recorder,
    tmp_path: Path,
) -> None:
    publish(repo, tmp_path, "1.0.0", folder={"data_bytes": 100_000})
    installer = device()
    blob = blob_file(repo, "1.0.0", "data.bin")
    (installer.data / "downloads" / f"{blob.name}.part").write_bytes(b"x" * 1000)

    installer.activate(installer.fetch(NAME, "1.0.0"))

    assert_intact(installer.active(NAME), "1.0.0")
    asked = recorder.requests_for(f"/repository/targets/blobs/{blob.name}")
    assert [headers.get("range") for headers in asked] == ["bytes=1000-", None]


def test_recover_cleans_up_and_rolls_back_a_damaged_active_release(
    repo: ReleaseRepository, device: Callable[..., ReleaseInstaller], tmp_path: Path
) -> None:
    installer = installed(device, repo, tmp_path)
    installer.activate(installer.fetch(NAME, "2.0.0"))
    dev = installer.data
    (dev / "releases" / NAME / ".staging-3.0.0-abcd" / "x").mkdir(parents=True)
    os.symlink("../releases/digits/1.0.0", dev / "active" / ".tmp-digits.1234")
    (dev / "downloads" / f"{'a' * 64}.part").write_bytes(b"partial")
    assert installer.recover() == [
        "removed active/.tmp-digits.1234",
        "removed releases/digits/.staging-3.0.0-abcd",
    ]
    assert (dev / "downloads" / f"{'a' * 64}.part").exists()  # kept for resume

    model = dev / "releases" / NAME / "2.0.0" / "model.onnx"
    os.chmod(model, 0o644)
    model.write_text("damaged")
    (note,) = installer.recover()
    assert "damaged" in note and "rolled back to 1.0.0" in note
    assert_intact(installer.active(NAME), "1.0.0")


# -- the artifact routes ----------------------------------------------------------------------


def test_targets_are_served_with_ranges_etags_and_nothing_else(
    repo: ReleaseRepository, server: ServerThread, tmp_path: Path
) -> None:
    publish(repo, tmp_path, "1.0.0")
    blob = blob_file(repo, "1.0.0", "labels.txt")
    url = f"{server.url}/repository/targets/blobs/{blob.name}"
    with httpx.Client() as client:
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == blob.read_bytes()
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["etag"]
        part = client.get(url, headers={"Range": "bytes=2-"})
        assert part.status_code == 206 and part.content == blob.read_bytes()[2:]
        assert (
            part.headers["content-range"]
            == f"bytes 2-{blob.stat().st_size - 1}/{blob.stat().st_size}"
        )
        assert client.get(url, headers={"Range": "bytes=999999-"}).status_code == 416
        meta = client.get(f"{server.url}/repository/metadata/timestamp.json")
        assert meta.status_code == 200 and meta.json()["signed"]["_type"] == "timestamp"
        again = client.get(meta.url, headers={"If-None-Match": meta.headers["etag"]})
        assert again.status_code == 304
        assert client.get(f"{server.url}/repository/metadata/1.root.json").status_code == 200
        (repo.targets_dir / ".tmp-secret").write_text("x")
        for bad in (
            "/repository/metadata/../../keys/root.pem",
            "/repository/metadata/..%2F..%2Fkeys%2Froot.pem",
            "/repository/metadata/evil.json",
            "/repository/targets/../../keys/targets.pem",
            "/repository/targets/..%2F..%2Fkeys%2Ftargets.pem",
            "/repository/targets/.tmp-secret",
            "/repository/targets/blobs/" + "0" * 64,
            "/repository/targets/",
        ):
            response = client.get(server.url + bad)
            assert response.status_code == 404, bad
            assert b"PRIVATE KEY" not in response.content


# -- kill -9 ----------------------------------------------------------------------------------


def fetch_and_activate_in_child(dev: Path, url: str, kill_after: float | None) -> float:
    """Fork a process that runs recover + fetch + activate of 2.0.0, as an agent starting up.

    With ``kill_after`` it gets SIGKILL that many seconds later, wherever it
    is. Forked rather than spawned so that no time goes to imports and the
    kills land in the work itself. Returns the seconds it ran.
    """
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no finalizers, only the work and an exit status
        try:
            with ReleaseInstaller(dev, url) as child:
                child.recover()
                child.activate(child.fetch(NAME, "2.0.0"))
        except BaseException:
            os._exit(1)
        os._exit(0)
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if kill_after is None:
        assert os.waitstatus_to_exitcode(status) == 0
    return time.monotonic() - started


@pytest.mark.slow
def test_kill_9_at_random_points_leaves_the_old_or_the_new_release(
    repo: ReleaseRepository,
    device: Callable[..., ReleaseInstaller],
    recorder: Recorder,
    server: ServerThread,
    tmp_path: Path,
) -> None:
    publish(repo, tmp_path, "1.0.0")
    publish(repo, tmp_path, "2.0.0", folder={"data_bytes": 2_000_000, "small_files": 40})
    data_blob = blob_file(repo, "2.0.0", "data.bin").relative_to(repo.targets_dir)
    recorder.slow.add(f"/repository/targets/{data_blob}")
    url = f"{server.url}/repository"
    # How long one fetch+activate takes here, so kills land all along it.
    calibration = device("calibration")
    calibration.activate(calibration.fetch(NAME, "1.0.0"))
    span = fetch_and_activate_in_child(calibration.data, url, None)

    installer = device()
    installer.activate(installer.fetch(NAME, "1.0.0"))
    rng = random.Random(5)
    outcomes, cleaned, partial = [], 0, 0
    for _ in range(25):
        fetch_and_activate_in_child(installer.data, url, rng.uniform(0, span))
        partial += bool(list((installer.data / "downloads").iterdir()))
        cleaned += bool(installer.recover())
        active = installer.active(NAME)
        assert active is not None and active.version in ("1.0.0", "2.0.0")
        assert_intact(active, active.version)
        outcomes.append(active.version)
        if active.version == "2.0.0":  # back to the old one, forgetting the new one's files
            installer.rollback(NAME)
            remove_tree(installer.data / "releases" / NAME / "2.0.0")
            (installer.data / "releases" / NAME / "2.0.0.json").unlink()
            shutil.rmtree(installer.data / "blobs")
            (installer.data / "blobs").mkdir()
    print(
        f"one fetch+activate: {span:.2f} s; active after each kill: {outcomes}; "
        f"a partial download {partial} times, half-built folders cleaned {cleaned} times"
    )

    fetch_and_activate_in_child(installer.data, url, None)
    installer.recover()
    assert_intact(installer.active(NAME), "2.0.0")
    assert_intact(installer.previous(NAME), "1.0.0")
