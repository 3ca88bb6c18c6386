"""``fogline zmq`` and the edge_zmq example as a user runs them: real processes, real sockets."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fogline.cli import main
from fogline.transport.zmq import ZmqEndpoint, ZmqSocket, write_keypair
from support.ports import free_port

EXAMPLES = Path(__file__).parents[2] / "src" / "fogline" / "examples"
ENV = {**os.environ, "COLUMNS": "200"}


def fogline(*args: str, cwd: Path, code: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fogline"] if code is None else [sys.executable, "-c", code]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=cwd, env=ENV, timeout=120
    )


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "fogline", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=ENV,
    )


def example(tmp_path: Path) -> tuple[Path, int, int]:
    """The edge_zmq example beside the digits model, on two free ports."""
    shutil.copytree(EXAMPLES / "digits", tmp_path / "digits")
    folder = tmp_path / "edge_zmq"
    shutil.copytree(EXAMPLES / "edge_zmq", folder, ignore=shutil.ignore_patterns("keys"))
    work, verdicts = free_port(), free_port()
    path = folder / "receiver.yaml"
    text = path.read_text().replace(":5557", f":{work}").replace(":5558", f":{verdicts}")
    path.write_text(text)
    return folder, work, verdicts


def test_the_example_takes_a_camera_feed_over_curve_and_refuses_an_intruder(tmp_path: Path):
    # Prepare: the walkthrough's keys, the receiver running, a listener for its verdicts
    folder, work, verdicts = example(tmp_path)
    for name in ("receiver", "camera"):  # `fogline zmq keys` is run in the test below
        write_keypair(folder / "keys", name)
    write_keypair(tmp_path / "other", "intruder")
    receiver = start("run", "receiver.yaml", "--no-live", cwd=folder)
    camera = ["--secret-key", "keys/camera.key_secret", "--server-key", "keys/receiver.key"]
    listener = start(
        "zmq", "listen", "--endpoint", f"tcp://127.0.0.1:{verdicts}", "--topic", "digits/",
        "--count", "3", "--duration", "60", *camera, cwd=folder,
    )  # fmt: skip
    try:
        # Execute: the camera feeds 100 digits; an intruder's key is refused
        fed = fogline(
            "zmq", "feed", "--endpoint", f"tcp://127.0.0.1:{work}", "--count", "100", *camera,
            cwd=folder,
        )  # fmt: skip
        assert fed.returncode == 0, fed.stderr
        heard, _ = listener.communicate(timeout=60)
        intruder = fogline(
            "zmq", "feed", "--endpoint", f"tcp://127.0.0.1:{work}", "--count", "1",
            "--secret-key", str(tmp_path / "other" / "intruder.key_secret"),
            "--server-key", "keys/receiver.key", cwd=folder,
        )  # fmt: skip
    finally:
        receiver.send_signal(signal.SIGINT)
        out, err = receiver.communicate(timeout=60)
        listener.kill()

    # Assert: verdicts heard on digits/<label>; all 100 processed; the intruder told and logged
    assert "sent 100 items" in fed.stdout and "(CURVE; ids feed-" in fed.stdout
    assert heard.count('"model":"digits"') == 3 and "digits/" in heard
    assert "processed 100 items" in out, out + err
    assert "sink verdicts: 100 written" in out
    assert intruder.returncode == 2
    assert "the key is not allowed" in intruder.stderr and "Traceback" not in intruder.stderr
    assert "handshake failed" in err


def test_keys_and_check_refusing_a_busy_port_or_a_missing_pyzmq(tmp_path: Path):
    folder, work, _ = example(tmp_path)
    made = fogline("zmq", "keys", "receiver", "--out", "keys", cwd=folder)
    assert made.returncode == 0, made.stderr
    assert "keys/receiver.key_secret (0600" in made.stdout
    assert (folder / "keys" / "receiver.key_secret").stat().st_mode & 0o777 == 0o600
    write_keypair(folder / "keys", "camera")
    with ZmqSocket("pull", ZmqEndpoint("tcp", host="127.0.0.1", port=work), bind=True):
        busy = fogline("check", "receiver.yaml", cwd=folder)
    assert busy.returncode == 2
    assert f"sources[0]: endpoint: cannot bind tcp://127.0.0.1:{work}" in busy.stderr
    assert "Traceback" not in busy.stderr

    hide = (  # a device without the zmq extra: pyzmq cannot be imported
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'zmq': raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from fogline.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    missing = fogline("check", "receiver.yaml", cwd=folder, code=hide)
    assert missing.returncode == 2
    assert "pip install 'fogline[zmq]'" in missing.stderr
    assert "Traceback" not in missing.stderr

    no_data = fogline(
        "zmq", "feed", "--endpoint", f"tcp://127.0.0.1:{work}", "--data", "no.npz", cwd=folder
    )
    assert no_data.returncode == 2
    assert "--data: no such file or folder" in no_data.stderr
    assert "Traceback" not in no_data.stderr


def test_feed_sends_the_cluster_feeds_bodies_with_new_ids_each_run(
    capsys: pytest.CaptureFixture[str],
):
    # Prepare: a PULL socket where a zmq source would be
    port = free_port()
    args = ["zmq", "feed", "--endpoint", f"tcp://127.0.0.1:{port}", "--count", "3"]
    with ZmqSocket("pull", ZmqEndpoint("tcp", host="127.0.0.1", port=port), bind=True) as pull:
        # Execute: feed twice with the default ids, then with a fixed prefix
        for more in ([], [], ["--id-prefix", "item"]):
            assert main([*args, *more]) == 0
        bodies = []
        while len(bodies) < 9 and (frames := pull.receive(timeout=5)) is not None:
            bodies.append(json.loads(frames[-1]))

    # Assert: feed-<hex>-<n>, new each run, as `fogline cluster feed` names them
    ids = sorted(b["id"] for b in bodies)  # PULL deals fairly among the runs' sockets
    first, second = sorted({i.rsplit("-", 1)[0] for i in ids if i.startswith("feed-")})
    assert ids == sorted(f"{p}-{n}" for p in (first, second, "item") for n in range(3))
    assert len(bodies[0]["data"]) == 64 and bodies[0]["label"] in [str(n) for n in range(10)]
    out = capsys.readouterr().out
    assert all(f"ids {p}-0 to {p}-2)" in out for p in (first, second, "item"))
