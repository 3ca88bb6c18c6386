"""The controller's keys and signed release repository, on disk, checked with python-tuf itself."""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from fogline.errors import ConfigError, ModelNotFound
from fogline.examples import digits_model_path
from fogline.security import (
    DOCUMENT,
    KINDS,
    IntegrityCheck,
    ReleaseDocument,
    ReleaseRepository,
    check_relative_path,
    check_release_name,
    init_keys,
    rotate_key,
    show_keys,
)
from fogline.security._contents import infer_kind_entry
from fogline.security._document import CONTENTS, FOLDER_KIND
from support.damage import flip_byte
from support.releases import model_folder
from support.serve_repository import make_repository


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "controller"
    init_keys(folder)
    return folder


@pytest.fixture
def repo(data: Path) -> ReleaseRepository:
    return ReleaseRepository(data)


def key(data: Path, role: str = "targets") -> Path:
    return data / "keys" / f"{role}.pem"


def metadata(data: Path, name: str) -> Metadata:  # type: ignore[type-arg]
    return Metadata.from_bytes((data / "repository" / "metadata" / name).read_bytes())


def assert_repository_verifies(data: Path) -> None:
    """Every top-level role is signed by the keys the latest root trusts, and versions chain."""
    root = metadata(data, "root.json")
    root.verify_delegate("root", root)
    for role in ("targets", "snapshot", "timestamp"):
        root.verify_delegate(role, metadata(data, f"{role}.json"))
    snapshot, timestamp = metadata(data, "snapshot.json"), metadata(data, "timestamp.json")
    assert timestamp.signed.snapshot_meta.version == snapshot.signed.version
    assert (
        snapshot.signed.meta["targets.json"].version
        == metadata(data, "targets.json").signed.version
    )
    for version in range(2, root.signed.version + 1):
        earlier = metadata(data, f"{version - 1}.root.json")
        later = metadata(data, f"{version}.root.json")
        earlier.verify_delegate("root", later)  # a device with the earlier root accepts it
        later.verify_delegate("root", later)


# -- keys -------------------------------------------------------------------------------------


def test_init_writes_private_keys_and_an_empty_signed_repository(data: Path) -> None:
    for role in ("root", "targets", "online"):
        assert oct(key(data, role).stat().st_mode & 0o777) == "0o600"
        assert b"PRIVATE KEY" in key(data, role).read_bytes()
    assert_repository_verifies(data)
    assert isinstance(metadata(data, "root.json").signed, Root)
    assert metadata(data, "root.json").signed.consistent_snapshot is False
    assert (data / "repository" / "metadata" / "1.root.json").read_bytes() == (
        data / "repository" / "metadata" / "root.json"
    ).read_bytes()
    assert ReleaseRepository(data).releases() == []


def test_init_refuses_to_replace_keys_unless_forced(data: Path) -> None:
    before = key(data).read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        init_keys(data)
    assert key(data).read_bytes() == before
    init_keys(data, force=True)
    assert key(data).read_bytes() != before
    assert_repository_verifies(data)


def test_show_lists_roles_keys_versions_and_expiry(data: Path) -> None:
    info = show_keys(data)
    assert info.root_version == 1
    by_role = {r.role: r for r in info.roles}
    assert by_role["snapshot"].keyids == by_role["timestamp"].keyids  # the online key
    assert by_role["targets"].keyids != by_role["root"].keyids
    assert by_role["timestamp"].key_file == key(data, "online")
    now = datetime.now(timezone.utc)
    assert now + timedelta(hours=23) < by_role["timestamp"].expires <= now + timedelta(days=1)
    assert by_role["root"].expires > now + timedelta(days=300)
    assert info.trust_anchor == data / "repository" / "metadata" / "root.json"


def test_show_without_keys_says_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fogline keys init"):
        show_keys(tmp_path)


@pytest.mark.parametrize("role", ["targets", "online", "root"])
def test_rotation_replaces_the_key_and_chains_root_versions(
    data: Path, repo: ReleaseRepository, tmp_path: Path, role: str
) -> None:
    repo.create_release(model_folder(tmp_path, 1), "net", "1.0.0", key(data))
    old_key = key(data, role).read_bytes()
    info = rotate_key(data, role)
    assert info.root_version == 2
    assert key(data, role).read_bytes() != old_key
    assert oct(key(data, role).stat().st_mode & 0o777) == "0o600"
    assert not (data / "keys" / f"{role}.next.pem").exists()
    assert_repository_verifies(data)
    if role == "root":  # the new root is signed by the old root key and the new one
        assert len(metadata(data, "2.root.json").signatures) == 2
    # the release is still there and new ones are signed with the new key
    repo.create_release(model_folder(tmp_path, 2), "net", "2.0.0", key(data))
    assert [d.version for d in repo.releases()] == ["1.0.0", "2.0.0"]
    assert_repository_verifies(data)


def test_rotation_refuses_an_unknown_role(data: Path) -> None:
    with pytest.raises(ConfigError, match="must be one of root, targets, online"):
        rotate_key(data, "snapshot")


def test_an_interrupted_rotation_is_finished_by_the_next_writer(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    rotate_key(data, "online")
    # As if the process died after root.json named the new key, before the key file moved.
    shutil.copy(key(data, "online"), data / "keys" / "online.next.pem")
    init_keys(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "keys" / "online.pem", key(data, "online"))
    assert repo.refresh_timestamp(min_remaining=timedelta(days=30))
    assert not (data / "keys" / "online.next.pem").exists()
    assert_repository_verifies(data)


# -- releases ---------------------------------------------------------------------------------


def test_create_writes_content_addressed_targets_and_a_signed_document(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    folder = model_folder(tmp_path, 1, data_bytes=10_000)
    published = repo.create_release(
        folder, "net", "1.0.0", key(data), latency_budget_ms=20, description="first"
    )
    doc = published.document
    assert (doc.name, doc.version, doc.kind, doc.entry) == ("net", "1.0.0", "model", "model.onnx")
    assert sorted(f.path for f in doc.files) == ["data.bin", "labels.txt", "model.onnx"]
    assert doc.health.latency_budget_ms == 20 and doc.description == "first"
    assert doc.expires - doc.created == timedelta(days=365)
    targets = metadata(data, "targets.json").signed
    assert isinstance(targets, Targets)
    assert targets.targets["releases/net/1.0.0.json"].hashes["sha256"] == published.sha256
    for item in doc.files:
        blob = repo.targets_dir / "blobs" / item.sha256
        assert blob.read_bytes() == (folder / item.path).read_bytes()
        assert targets.targets[f"blobs/{item.sha256}"].length == item.length
        with open(blob, "rb") as fh:
            targets.targets[f"blobs/{item.sha256}"].verify_length_and_hashes(fh)
    on_disk = repo.targets_dir / "releases" / "net" / "1.0.0.json"
    assert ReleaseDocument.model_validate_json(on_disk.read_bytes()) == doc
    assert repo.release("net", "1.0.0") == doc
    assert_repository_verifies(data)


def test_identical_files_are_stored_once_across_releases(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    repo.create_release(model_folder(tmp_path, 1), "net", "1.0.0", key(data))
    repo.create_release(model_folder(tmp_path, 2), "net", "1.1.0", key(data))
    blobs = sorted(p.name for p in (repo.targets_dir / "blobs").iterdir())
    assert len(blobs) == 3  # two models, one labels.txt shared
    assert [(d.name, d.version) for d in repo.releases()] == [("net", "1.0.0"), ("net", "1.1.0")]


def test_releases_are_ordered_by_version_not_text(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    folder = model_folder(tmp_path, 1)
    for version in ("1.2.0", "1.10.0"):
        repo.create_release(folder, "net", version, key(data))
    repo.create_release(folder, "alpha", "v3", key(data))
    assert [(d.name, d.version) for d in repo.releases()] == [
        ("alpha", "3"),
        ("net", "1.2.0"),
        ("net", "1.10.0"),
    ]


@pytest.mark.parametrize(
    ("make", "kind", "entry"),
    [
        (
            lambda root: shutil.copytree(digits_model_path().parent, root / "d"),
            "pipeline",
            "pipeline.yaml",
        ),
        (lambda root: make_repository(root / "models"), "serve", "."),
        (
            lambda root: _manifest_folder(root / "m"),
            "model",
            ".",
        ),
        (lambda root: model_folder(root, 1), "model", "model.onnx"),
    ],
    ids=["pipeline", "triton-repository", "manifest-folder", "single-onnx"],
)
def test_kind_and_entry_are_inferred(
    data: Path, repo: ReleaseRepository, tmp_path: Path, make: object, kind: str, entry: str
) -> None:
    folder = make(tmp_path)  # type: ignore[operator]
    doc = repo.create_release(folder, "thing", "1.0.0", key(data)).document
    assert (doc.kind, doc.entry) == (kind, entry)


def test_every_kind_says_what_its_release_contains() -> None:
    assert set(CONTENTS) == set(KINDS) and FOLDER_KIND in KINDS


_PART = st.sampled_from(
    ["pipeline.yaml", "fogline.yaml", "a.onnx", "b.tflite", "c.yml", "1", "2", "m", "x.txt"]
)
_PATH = st.lists(_PART, min_size=1, max_size=3).map("/".join)


@given(
    st.lists(_PATH, min_size=1, max_size=6, unique=True),
    st.one_of(st.none(), st.sampled_from(KINDS)),
    st.one_of(st.none(), st.just("."), _PATH),
)
def test_an_inferred_kind_is_known_and_its_entry_is_in_the_release(
    paths: list[str], kind: str | None, entry: str | None
) -> None:
    try:
        found, found_entry = infer_kind_entry(paths, kind, entry)
    except ConfigError:
        return
    assert found in KINDS and (kind is None or found == kind)
    assert found_entry == "." or any(
        p == found_entry or p.startswith(found_entry + "/") for p in paths
    )


def _manifest_folder(folder: Path) -> Path:
    folder.mkdir()
    shutil.copy(digits_model_path(), folder / "model.onnx")
    shutil.copy(digits_model_path().parent / "fogline.yaml", folder / "fogline.yaml")
    return folder


def test_explicit_kind_entry_sample_and_canary(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    folder = model_folder(tmp_path, 1)
    (folder / "sample.npz").write_bytes(b"npz")
    (folder / "canary.npz").write_bytes(b"npz")
    doc = repo.create_release(
        folder,
        "net",
        "1.0.0",
        key(data),
        kind="model",
        entry="model.onnx",
        sample="sample.npz",
        canary="canary.npz",
    ).document
    assert doc.health.sample == "sample.npz" and doc.canary.data == "canary.npz"


def test_a_single_file_is_a_release(data: Path, repo: ReleaseRepository, tmp_path: Path) -> None:
    folder = model_folder(tmp_path, 1)
    doc = repo.create_release(folder / "model.onnx", "net", "1.0.0", key(data)).document
    assert [f.path for f in doc.files] == ["model.onnx"] and doc.entry == "model.onnx"


def test_a_symlink_inside_the_folder_is_followed(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    folder = model_folder(tmp_path, 1)
    os.symlink("labels.txt", folder / "names.txt")
    doc = repo.create_release(folder, "net", "1.0.0", key(data)).document
    files = {f.path: f.sha256 for f in doc.files}
    assert files["names.txt"] == files["labels.txt"]


def refusal_cases(tmp_path: Path, data: Path) -> dict[str, tuple[dict[str, object], str]]:
    good = model_folder(tmp_path, 1)
    empty = tmp_path / "empty"
    empty.mkdir()
    escaping = model_folder(tmp_path, 2)
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(tmp_path / "secret.txt", escaping / "secret.txt")
    two_models = model_folder(tmp_path, 3)
    shutil.copy(two_models / "model.onnx", two_models / "other.onnx")
    init_keys(tmp_path / "other")
    base: dict[str, object] = {"folder": good, "name": "net", "version": "2.0.0", "key": key(data)}
    return {
        "not newer": ({**base, "version": "1.0.0"}, r"not newer than release net 1\.0\.0"),
        "same version": ({**base, "version": "1.0"}, "not newer"),
        "empty folder": ({**base, "folder": empty}, "is empty"),
        "missing folder": ({**base, "folder": tmp_path / "nope"}, "does not exist"),
        "escaping symlink": ({**base, "folder": escaping}, "symlink that leaves"),
        "missing entry": ({**base, "entry": "nope.onnx"}, "entry 'nope.onnx'"),
        "unclear kind": ({**base, "folder": two_models}, "give --kind and --entry"),
        "bad name": ({**base, "name": "net/2"}, "release name"),
        "bad version": ({**base, "version": "two"}, "PEP 440"),
        "bad kind": ({**base, "kind": "binary"}, "--kind"),
        "missing sample": ({**base, "sample": "x.npz"}, "--sample"),
        "past expiry": ({**base, "expires": timedelta(seconds=-1)}, "in the past"),
        "not the targets key": (
            {**base, "key": key(data, "online")},
            "not this repository's targets key",
        ),
        "another repository's key": ({**base, "key": key(tmp_path / "other")}, "targets key"),
        "missing key": ({**base, "key": tmp_path / "none.pem"}, "does not exist"),
    }


def test_create_refuses_bad_input_and_writes_nothing(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    repo.create_release(model_folder(tmp_path / "v1", 1), "net", "1.0.0", key(data))

    def snapshot_of_disk() -> dict[str, bytes]:
        root = data / "repository"
        return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    before = snapshot_of_disk()
    for label, (args, message) in refusal_cases(tmp_path, data).items():
        kwargs = dict(args)
        positional = [kwargs.pop(k) for k in ("folder", "name", "version", "key")]
        with pytest.raises(ConfigError, match=message):
            repo.create_release(*positional, **kwargs)  # type: ignore[arg-type]
        assert snapshot_of_disk() == before, label


def test_release_lookup_of_an_unknown_one_is_not_found(repo: ReleaseRepository) -> None:
    with pytest.raises(ModelNotFound):
        repo.release("net", "1.0.0")


def test_refresh_timestamp_re_signs_only_when_near_expiry(
    data: Path, repo: ReleaseRepository
) -> None:
    version = metadata(data, "timestamp.json").signed.version
    assert not repo.refresh_timestamp(min_remaining=timedelta(hours=1))
    assert metadata(data, "timestamp.json").signed.version == version
    assert repo.refresh_timestamp(min_remaining=timedelta(days=2))
    timestamp = metadata(data, "timestamp.json").signed
    assert isinstance(timestamp, Timestamp) and timestamp.version == version + 1
    assert isinstance(metadata(data, "snapshot.json").signed, Snapshot)
    assert_repository_verifies(data)


def test_root_and_targets_are_renewed_before_they_expire(
    data: Path, repo: ReleaseRepository
) -> None:
    root, targets = metadata(data, "root.json").signed, metadata(data, "targets.json").signed
    assert not repo.refresh_timestamp(renew_within=timedelta(days=300))  # a year left: nothing
    assert repo.refresh_timestamp(renew_within=timedelta(days=400))
    new_root, new_targets = (
        metadata(data, "root.json").signed,
        metadata(data, "targets.json").signed,
    )
    assert (new_root.version, new_targets.version) == (root.version + 1, targets.version + 1)
    assert new_root.expires >= root.expires and new_targets.expires >= targets.expires
    assert new_root.keys.keys() == root.keys.keys()  # renewed, not rotated
    assert_repository_verifies(data)  # a device with root version 1 chains to version 2


def test_readers_never_see_a_half_written_file_while_releases_are_created(
    data: Path, repo: ReleaseRepository, tmp_path: Path
) -> None:
    folders = [model_folder(tmp_path, i, data_bytes=50_000) for i in range(1, 7)]
    done = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        names = ("timestamp.json", "snapshot.json", "targets.json", "root.json")
        while not done.is_set():
            for name in names:
                try:
                    metadata(data, name)
                except Exception as exc:
                    problems.append(f"{name}: {exc}")
            for doc in (repo.targets_dir / "releases").rglob("*.json"):
                json.loads(doc.read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i, folder in enumerate(folders, start=1):
            repo.create_release(folder, "net", f"{i}.0.0", key(data))
            repo.refresh_timestamp(min_remaining=timedelta(days=30))
    finally:
        done.set()
        thread.join()
    assert problems == []
    assert_repository_verifies(data)


# -- verifying what is stored ----------------------------------------------------------------


def blob_of(repo: ReleaseRepository, name: str, version: str, path: str) -> Path:
    item = next(f for f in repo.release(name, version).files if f.path == path)
    return repo.targets_dir / item.blob_path


@pytest.fixture
def two_releases(data: Path, repo: ReleaseRepository, tmp_path: Path) -> ReleaseRepository:
    repo.create_release(model_folder(tmp_path, 1, data_bytes=5000), "net", "1.0.0", key(data))
    repo.create_release(model_folder(tmp_path, 2), "net", "1.1.0", key(data))  # shares labels.txt
    return repo


def test_verify_finds_each_damaged_file_and_names_its_release(
    two_releases: ReleaseRepository,
) -> None:
    repo = two_releases
    assert [(c.name, c.version, c.ok) for c in repo.verify()] == [
        ("net", "1.0.0", True),
        ("net", "1.1.0", True),
    ]
    model = blob_of(repo, "net", "1.0.0", "model.onnx")
    flip_byte(model, 10)
    data_bin = blob_of(repo, "net", "1.0.0", "data.bin")
    data_bin.write_bytes(data_bin.read_bytes()[:-1])
    labels = blob_of(repo, "net", "1.0.0", "labels.txt")
    labels.unlink()

    first, second = repo.verify()
    assert [(d.path, d.problem, d.detail) for d in first.damage] == [
        ("data.bin", "size differs", "4999 bytes, signed 5000"),
        ("labels.txt", "missing", ""),
        ("model.onnx", "hash differs", ""),
    ]
    damage = first.damage[2]
    assert (damage.release, damage.version, damage.target) == (
        "net",
        "1.0.0",
        f"blobs/{model.name}",
    )
    assert (
        str(damage) == f"release net 1.0.0: model.onnx hash differs (stored as blobs/{model.name})"
    )
    assert first.reason is not None and "model.onnx hash differs" in first.reason
    # the shared labels.txt is named in the other release too; its own model is intact
    assert [(d.release, d.version, d.path) for d in second.damage] == [
        ("net", "1.1.0", "labels.txt")
    ]
    assert [c.version for c in repo.verify("net", "1.1.0")] == ["1.1.0"]
    assert len(repo.verify("net")) == 2


def test_verify_checks_the_release_document_against_targets_json(
    two_releases: ReleaseRepository,
) -> None:
    document = two_releases.targets_dir / "releases" / "net" / "1.1.0.json"
    document.write_bytes(document.read_bytes().replace(b'"net"', b'"nat"'))
    first, second = two_releases.verify()
    assert first.ok
    assert second.document is None
    assert [(d.path, d.problem, d.target) for d in second.damage] == [
        (DOCUMENT, "hash differs", "releases/net/1.1.0.json")
    ]


def test_verify_of_an_unknown_release_says_what_there_is(two_releases: ReleaseRepository) -> None:
    with pytest.raises(ModelNotFound, match=r"no release named 'nope' .*\(releases: net\)"):
        two_releases.verify("nope")
    with pytest.raises(ModelNotFound, match=r"no release net 3\.0 .*versions: 1\.0\.0, 1\.1\.0"):
        two_releases.verify("net", "3.0")
    assert ReleaseRepository(two_releases.layout.data).verify() != []


def test_a_check_hashes_once_until_the_file_changes_and_an_audit_hashes_again(
    two_releases: ReleaseRepository,
) -> None:
    check = IntegrityCheck(two_releases)
    model = blob_of(two_releases, "net", "1.1.0", "model.onnx")
    assert check.target(f"blobs/{model.name}") == ()
    flip_byte(model, 10, keep_mtime=True)  # rot: same size, mtime and inode
    assert check.target(f"blobs/{model.name}") == ()  # remembered, not read again
    assert all(c.ok for c in check.known())
    damaged = [c for c in check.audit() if not c.ok]
    assert [(c.version, c.reason) for c in damaged] == [
        ("1.1.0", f"model.onnx hash differs (stored as blobs/{model.name})")
    ]
    assert [c.version for c in check.known() if not c.ok] == ["1.1.0"]  # remembered now
    assert [d.path for d in check.target(f"blobs/{model.name}")] == ["model.onnx"]
    flip_byte(model, 10, keep_mtime=True)  # restored from a backup, as it were
    assert not check.verify("net", "1.1.0")[0].ok  # same stat: still the remembered result
    assert all(c.ok for c in check.audit())
    flip_byte(model, 10)  # a plain write changes the mtime: read again on the next request
    assert check.target(f"blobs/{model.name}") != ()
    with pytest.raises(ModelNotFound, match="not a signed target"):
        check.target("blobs/" + "0" * 64)


# -- the release document ---------------------------------------------------------------------


@given(st.text(alphabet="aZ09._-/ #+\x00", max_size=70))
def test_release_names_and_device_ids_follow_one_rule(name: str) -> None:
    """Both are topic levels and folder names: what one accepts the other accepts, same words."""
    from fogline.protocol import check_device_id

    outcomes = []
    for check in (check_release_name, check_device_id):
        try:
            outcomes.append(("ok", check(name)))
        except ValueError as exc:
            outcomes.append(("refused", str(exc).split(" ", 2)[-1]))
    assert outcomes[0] == outcomes[1]
    if outcomes[0][0] == "ok":
        assert name[0].isalnum() and "/" not in name and len(name) <= 64


@given(st.text(alphabet="ab./\\\x00", max_size=12))
def test_accepted_relative_paths_stay_inside_their_folder(path: str) -> None:
    try:
        check_relative_path(path)
    except ValueError:
        return
    joined = PurePosixPath("/root/release") / path
    assert ".." not in joined.parts and joined.is_relative_to("/root/release")
    assert joined != PurePosixPath("/root/release")


def test_documents_refuse_unsafe_or_inconsistent_files() -> None:
    file = {"path": "a", "length": 1, "sha256": "0" * 64}
    base = {"name": "n", "version": "1", "kind": "model", "entry": "a", "files": [file]}
    ReleaseDocument.model_validate(base)
    for bad in (
        {"files": [{**file, "path": "../a"}]},
        {"files": [file, file]},
        {"files": [file, {**file, "path": "a/b"}]},
        {"files": []},
        {"entry": "/etc"},
        {"kind": "binary"},
        {"version": "x"},
    ):
        with pytest.raises(ValueError):
            ReleaseDocument.model_validate({**base, **bad})
