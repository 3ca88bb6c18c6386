"""kill -9 of a real ``fogline agent`` process at random points of convergence.

Each round publishes a newer release (with a few MB of padding so the kill
can land in the download, the verification, the staging or the swap),
starts the agent, kills it with SIGKILL after a random delay, and checks
the disk: ``active/digits`` is exactly one complete signed release (every
file's hash checked), never a partial or mixed one. At the end the agent
is started once more and must converge to the newest release.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from fogline.protocol import DesiredState, DeviceState
from support.broker import Mosquitto
from support.fleet_agent import (
    FakeController,
    ReleaseServer,
    check_active,
    model_release,
    pipeline_release,
    release_phase,
)

ROUNDS = 8
PAD_BYTES = 24 << 20


def start_agent(
    broker: Mosquitto, releases: ReleaseServer, data: Path, log: Path
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fogline",
                "agent",
                "--broker",
                broker.url,
                "--controller",
                releases.url,
                "--data",
                str(data),
                "--device-id",
                "cam-1",
                "--trusted-root",
                str(releases.root),
                "--telemetry-period",
                "0.5",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def reached(phase: str, version: str, since: float) -> Callable[[DeviceState], bool]:
    """A state of this run in ``phase`` for ``version``, or already active on it."""

    def check(state: DeviceState) -> bool:
        current, target, now = release_phase(state, "digits")
        if state.time <= since:
            return False
        return (target == version and now == phase) or (current == version and now == "active")

    return check


def test_kill_9_at_random_points_never_leaves_a_partial_release(
    tmp_path: Path, broker: Mosquitto
) -> None:
    releases = ReleaseServer(tmp_path / "controller")
    controller = FakeController(broker.url)
    data = tmp_path / "cam-1"
    log = tmp_path / "agent.log"
    rng = random.Random(5)
    try:
        # Prepare: 1.0.0 is active
        releases.publish(model_release(tmp_path / "r0", pad_bytes=PAD_BYTES), "digits", "1.0.0")
        controller.desire("cam-1", DesiredState(generation=1, releases={"digits": "1.0.0"}))
        agent = start_agent(broker, releases, data, log)
        controller.wait_state(
            "cam-1", lambda s: release_phase(s, "digits")[::2] == ("1.0.0", "active"), 90
        )
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        published = ["1.0.0"]
        # Execute: each round a fresh agent, killed in a phase picked at random or at a
        # random moment of its start; a newer release only when the last one got through
        # (otherwise the round resumes the interrupted one)
        for round_ in range(1, ROUNDS + 1):
            if check_active(data, "digits") == published[-1]:
                version = f"1.{round_}.0"
                folder = model_release(tmp_path / f"r{round_}", pad_bytes=PAD_BYTES, seed=round_)
                releases.publish(folder, "digits", version)
                published.append(version)
                controller.desire(
                    "cam-1", DesiredState(generation=round_ + 1, releases={"digits": version})
                )
            started = time.time()
            agent = start_agent(broker, releases, data, log)
            phase = rng.choice(["downloading", "checking", "active", "start"])
            if phase == "start":
                time.sleep(rng.uniform(0.2, 2.0))
            else:
                with contextlib.suppress(AssertionError):  # past it already: kill anyway
                    controller.wait_state("cam-1", reached(phase, published[-1], started), 20)
                time.sleep(rng.uniform(0.0, 0.1))
            agent.send_signal(signal.SIGKILL)
            agent.wait()
            # Assert after each kill: exactly one whole release is active
            assert check_active(data, "digits") in published, (phase, log.read_text())
        # The last start converges to the newest release
        started = time.time()
        agent = start_agent(broker, releases, data, log)
        try:
            controller.wait_state(
                "cam-1",
                lambda s: (
                    s.time > started
                    and release_phase(s, "digits")[::2] == (published[-1], "active")
                ),
                90,
            )
            assert check_active(data, "digits") == published[-1]
        finally:
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
    finally:
        controller.close()
        releases.close()


def child_pid(data: Path) -> int | None:
    try:
        table = json.loads((data / "agent" / "children.json").read_text())
    except (OSError, ValueError):
        return None
    entry = table.get("scanner")
    return None if entry is None else int(entry["pid"])


def alive(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_restarted_agent_ends_the_pipeline_a_killed_one_left_running(
    tmp_path: Path, broker: Mosquitto
) -> None:
    releases = ReleaseServer(tmp_path / "controller")
    controller = FakeController(broker.url)
    data = tmp_path / "cam-1"
    log = tmp_path / "agent.log"
    try:
        releases.publish(pipeline_release(tmp_path / "p1"), "scanner", "1.0.0")
        controller.desire("cam-1", DesiredState(generation=1, releases={"scanner": "1.0.0"}))
        agent = start_agent(broker, releases, data, log)
        deadline = time.monotonic() + 60
        while (first := child_pid(data)) is None or not alive(first):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # Execute: the agent dies; its child (in its own session) does not
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        assert alive(first)
        started = time.time()
        agent = start_agent(broker, releases, data, log)
        try:
            deadline = time.monotonic() + 60
            while (second := child_pid(data)) in (None, first) or alive(first):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            controller.wait_state(
                "cam-1",
                lambda s: (
                    s.time > started and release_phase(s, "scanner")[::2] == ("1.0.0", "active")
                ),
                60,
            )
        finally:
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
    finally:
        controller.close()
        releases.close()
    # Assert: one pipeline ran at a time, and a clean stop ends the child too
    assert second is not None and not alive(first)
    assert not alive(second)
