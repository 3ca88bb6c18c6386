"""Signing keys, broker passwords and device secrets stay out of git and out of other users' reach.

``fogline keys init`` is run as a new user runs it: in a git working tree,
with the default data folder. A ``git add -A`` afterwards must stage none
of it, and the key files and their folder must be the owner's alone.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from fogline.transport.mqtt import BrokerConfig, LocalBroker


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True)
    return done.stdout


def test_keys_init_keeps_the_keys_private_and_out_of_git(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "model.onnx").write_bytes(b"not secret")
    done = subprocess.run(
        [sys.executable, "-m", "fogline", "keys", "init"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = tmp_path / "fleet-data"  # the default, as for the controller and the fleet commands
    keys = sorted((data / "keys").glob("*.pem"))
    assert [k.name for k in keys] == ["online.pem", "root.pem", "targets.pem"]
    assert all(mode(k) == 0o600 for k in keys), {k.name: oct(mode(k)) for k in keys}
    assert mode(data / "keys") == 0o700
    git(tmp_path, "add", "-A")
    staged = git(tmp_path, "diff", "--cached", "--name-only").split()
    assert staged == ["model.onnx"], staged  # nothing of fleet-data/, keys or repository


def test_a_rotated_key_is_private_too(tmp_path: Path) -> None:
    data = tmp_path / "fleet-data"
    for command in (["keys", "init"], ["keys", "rotate", "--role", "targets"]):
        done = subprocess.run(
            [sys.executable, "-m", "fogline", *command, "--data", str(data)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert mode(data / "keys" / "targets.pem") == 0o600
    assert not list((data / "keys").glob("*.next.pem"))


def test_the_broker_folder_ignores_itself(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    folder = tmp_path / "fleet-data" / "broker"
    broker = LocalBroker(BrokerConfig(folder=folder, port=1))  # made, never started
    broker.add_controller()  # writes the password file
    git(tmp_path, "add", "-A")
    assert git(tmp_path, "diff", "--cached", "--name-only").split() == []
    assert mode(folder) == 0o700
