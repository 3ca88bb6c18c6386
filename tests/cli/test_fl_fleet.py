"""``fogline fl start | status | stop`` as processes, against a real controller.

The controller, broker and simulated devices are those of
``support.fleet_controller`` (a real Mosquitto, real TUF installs). The
simulated devices run no learner, so a run started here waits for updates
that do not come: what is tested is the CLI's side (what it sends, what it
prints, how it fails), not training.
"""

from __future__ import annotations

from support.fleet_controller import Setup, wait_for
from support.fleet_controller import run_cli as fogline

TASK = "fogline.examples:digits_task"


def online(setup: Setup, count: int) -> None:
    setup.devices(count)
    wait_for(f"{count} devices online", lambda: sum(
        d["online"] for d in setup.api.get("/api/devices").json()) == count)  # fmt: skip


def test_status_without_runs_says_how_to_start_one(setup: Setup) -> None:
    done = fogline(setup, "fl", "status")
    assert done.returncode == 0, done.stderr
    assert "no federated runs yet: fogline fl start" in done.stdout


def test_bad_requests_exit_2_with_one_line_naming_the_problem(setup: Setup) -> None:
    online(setup, 2)
    cases = {
        ("--strategy", "fedsgd"): "unknown strategy 'fedsgd'",
        ("--strategy", "krum", "--secagg"): "needs each device's update",
        ("--min-clients", "5"): "has 2 online device(s); --min-clients is 5",
        ("--dp-noise", "1.0"): "--dp-noise and --dp-clip go together",
        ("--task", "fogline.examples:nothing_here"): "nothing_here",
    }
    for extra, message in cases.items():
        args = ["fl", "start", "--task", TASK, "--release", "digits-fl", *extra]
        done = fogline(setup, *args)
        assert done.returncode == 2, (extra, done.stdout, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) <= 2, done.stderr  # one message (wrapped)


def test_start_status_and_stop_a_run(setup: Setup) -> None:
    online(setup, 2)
    started = fogline(setup, "fl", "start", "--task", TASK, "--release", "digits-fl",
                      "--rounds", "3", "--deadline", "60")  # fmt: skip
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[1]
    assert run_id.startswith("fl-") and "round 0/3" in started.stdout
    assert f"fogline fl status {run_id} --watch" in started.stdout
    # the simulated devices have no learner: round 1 stays open, waiting for both
    wait_for("round 1 open", lambda: "round 1 open" in fogline(setup, "fl", "status").stdout)
    status = fogline(setup, "fl", "status", run_id).stdout
    assert "0 update(s) in, waiting for" in status
    second = fogline(setup, "fl", "start", "--task", TASK, "--release", "digits-fl")
    assert second.returncode == 2 and f"run {run_id} already trains release" in second.stderr
    stopped = fogline(setup, "fl", "stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    wait_for("the run to stop", lambda: "stopped" in fogline(setup, "fl", "status", run_id).stdout)
    final = fogline(setup, "fl", "status", run_id).stdout
    assert "stopped by the operator" in final
    again = fogline(setup, "fl", "stop", run_id)
    assert again.returncode == 2 and "already stopped" in again.stderr
