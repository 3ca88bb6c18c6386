"""``fogline keys`` and ``fogline release`` as a user runs them: real processes, real files."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fogline.examples import digits_model_path
from fogline.security import ReleaseRepository

# The tests share the module's `data` repository and build on each other (create
# 1.0 before 0.9 is refused as not newer): one worker runs them all, in order.
pytestmark = pytest.mark.xdist_group("cli-release-data")

# Imported explicitly so the commands exist whether or not fogline.cli registers them yet.
RUN = (
    "import sys, fogline.cli._keys, fogline.cli._release; from fogline.cli import main; "
    "raise SystemExit(main(sys.argv[1:]))"
)


def fogline(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
        cwd=cwd,
    )


def ok(*args: str | Path, cwd: Path | None = None) -> str:
    result = fogline(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "controller"
    out = ok("keys", "init", "--data", folder)
    for role in ("root", "targets", "snapshot", "timestamp"):
        assert role in out
    assert "root version 1" in out and "Enrol devices with" in out
    return folder


def test_keys_show_and_refused_reinit(data: Path) -> None:
    before = files_under(data / "keys")
    assert_clean_error(fogline("keys", "init", "--data", data), "--force")
    assert files_under(data / "keys") == before
    out = ok("keys", "show", "--data", data)
    assert "online.pem" in out and "targets.pem" in out


def test_keys_rotate(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    ok("keys", "init", "--data", folder)
    old = (folder / "keys" / "targets.pem").read_bytes()
    assert "root version 2" in ok("keys", "rotate", "--role", "targets", "--data", folder)
    assert (folder / "keys" / "targets.pem").read_bytes() != old
    assert_clean_error(
        fogline("keys", "rotate", "--role", "snapshot", "--data", folder), "--role must be one of"
    )


def test_keys_without_a_controller_folder(tmp_path: Path) -> None:
    assert_clean_error(fogline("keys", "show", "--data", tmp_path), "fogline keys init")
    assert_clean_error(fogline("release", "list", "--data", tmp_path), "fogline keys init")


def test_release_create_prints_what_it_signed_and_list_shows_it(data: Path) -> None:
    out = ok(
        "release",
        "create",
        digits_model_path().parent,
        "--name",
        "digits",
        "--version",
        "1.0.0",
        "--data",
        data,
        "--expires-days",
        "30",
        "--latency-budget-ms",
        "50",
    )
    doc = data / "repository" / "targets" / "releases" / "digits" / "1.0.0.json"
    assert "release digits 1.0.0" in out
    assert "pipeline (entry pipeline.yaml)" in out
    assert "4 (1.2 MiB)" in out
    assert hashlib.sha256(doc.read_bytes()).hexdigest() in out
    listing = ok("release", "list", "--data", data)
    assert "digits" in listing and "1.0.0" in listing and "pipeline" in listing


def test_release_create_errors_are_one_line_and_write_nothing(data: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(digits_model_path(), model / "net.onnx")
    os.symlink("/etc/hostname", model / "outside")
    before = files_under(data)
    cases = [
        ((model, "--version", "1.0.0"), "symlink that leaves"),
        ((digits_model_path().parent, "--version", "0.9"), "not newer than release digits"),
        (
            (digits_model_path().parent, "--version", "9", "--key", data / "keys" / "root.pem"),
            "not this repository's targets key",
        ),
    ]
    for args, message in cases:
        result = fogline("release", "create", *args, "--name", "digits", "--data", data)
        assert_clean_error(result, message)
        assert files_under(data) == before


def test_release_verify_names_each_damaged_file_and_exits_2(tmp_path: Path) -> None:
    from support.damage import flip_byte
    from support.releases import model_folder

    # Prepare: two releases in ./fleet-data, the default --data, sharing labels.txt
    ok("keys", "init", "--data", "fleet-data", cwd=tmp_path)
    for version in (1, 2):
        folder = model_folder(tmp_path, version)
        ok("release", "create", folder, "--name", "net", "--version", f"{version}.0", cwd=tmp_path)
    intact = ok("release", "verify", cwd=tmp_path)
    assert "net" in intact and intact.count(" ok ") == 2 and "damaged" not in intact
    repo = ReleaseRepository(tmp_path / "fleet-data")
    blobs = {f.path: f.blob_path for f in repo.release("net", "1.0").files}

    # Execute: rot in the first release's model
    flip_byte(repo.targets_dir / blobs["model.onnx"], 100)
    everything = fogline("release", "verify", cwd=tmp_path)
    one = fogline("release", "verify", "net", "2.0", "--data", tmp_path / "fleet-data")
    first = fogline("release", "verify", "net", "1.0", "--data", tmp_path / "fleet-data")

    # Assert
    assert everything.returncode == 2 and "Traceback" not in everything.stderr
    assert everything.stderr.splitlines() == [
        f"error: release net 1.0: model.onnx hash differs (stored as {blobs['model.onnx']})"
    ]
    assert "damaged: model.onnx (hash differs)" in everything.stdout
    assert " ok " in everything.stdout  # 2.0 still checks out
    assert one.returncode == 0, one.stderr
    assert first.returncode == 2 and "release net 1.0: model.onnx" in first.stderr
    (repo.targets_dir / blobs["labels.txt"]).unlink()  # shared by both releases
    both = fogline("release", "verify", "net", cwd=tmp_path)
    assert both.returncode == 2
    assert sorted(both.stderr.splitlines()) == [
        f"error: release net 1.0: labels.txt missing (stored as {blobs['labels.txt']})",
        f"error: release net 1.0: model.onnx hash differs (stored as {blobs['model.onnx']})",
        f"error: release net 2.0: labels.txt missing (stored as {blobs['labels.txt']})",
    ]
    assert_clean_error(
        fogline("release", "verify", "nope", cwd=tmp_path), "no release named 'nope'"
    )
    assert_clean_error(fogline("release", "verify", "net", "7", cwd=tmp_path), "no release net 7 ")
