"""Federated learning on a real fleet against the simulation of the same run.

    python benchmarks/bench_federated_fleet.py [--agents 10] [--rounds 20] [--kill 3 --kill-round 5] [--secagg]

In a fresh folder (``fogline.testing.LocalFleet``): a real Mosquitto with
passwords and the ACL, ``fogline controller`` as its own process, and
``--agents`` ``fogline agent`` processes (``edge-0`` …), each enrolled, each
given the bundled learner release with ``data_args`` ``clients: N`` (so
device ``edge-i`` trains on part ``i`` of the digits training set split by
Dirichlet 0.5 with seed 0 — the very partition ``fogline fl simulate
--clients N --split dirichlet:0.5 --seed 0`` makes). A FedAvg run of
``--rounds`` rounds then goes over the broker, every agent in every round,
and is compared with the simulation. A second run (``--kill-rounds``) kills
``--kill`` agents with ``SIGKILL`` as round ``--kill-round`` opens: the round
closes at its deadline with the rest, the next rounds sample only who is
online, and the killed agents, started again once that round closed, take
part again as soon as they are back.

Printed: per round its participants, accuracy, bytes up and down and
seconds; then the final accuracy beside the simulation's after the same
number of rounds (``fogline.federated.simulate``, same task, split, epochs,
learning rate), and the median seconds per round. No extra dependencies.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from fogline.examples import digits_learner_path
from fogline.federated import SimulationConfig, SplitSpec, load_task, simulate
from fogline.testing import LocalFleet, wait_until

TASK = "fogline.examples:digits_task"
ENDED = ("finished", "stopped", "failed", "gate-failed")


def learner(folder: Path, agents: int) -> Path:
    """The bundled learner release with every device's part of a split into ``agents``."""
    spec = yaml.safe_load((digits_learner_path() / "learner.yaml").read_text())
    spec["data_args"] = {"clients": agents, "split": "dirichlet:0.5", "seed": 0}
    # Ten agents and a controller share this machine's cores: a device would decline
    # every round for a busy CPU that is only its neighbours training.
    spec["eligibility"] = {**spec.get("eligibility", {}), "max_cpu_percent": 100}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "learner.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def table(rounds: list[dict[str, Any]]) -> None:
    print("round  participants  accuracy  bytes up  bytes down  seconds")
    for r in rounds:
        seconds = (r["closed"] or r["opened"]) - r["opened"]
        print(f"{r['round']:5d}  {r['participants']:5d}/{len(r['sampled']):<6d}  "
              f"{100 * r['accuracy']:7.2f}%  {r['bytes_up']:8d}  {r['bytes_down']:10d}  {seconds:7.2f}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--kill", type=int, default=3)
    parser.add_argument("--kill-round", type=int, default=5)
    parser.add_argument("--kill-rounds", type=int, default=40, help="Rounds of the crash run.")
    parser.add_argument("--deadline", type=float, default=20.0)
    parser.add_argument("--secagg", action="store_true", help="Secure aggregation (16 bits).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/federated_fleet.json"))
    args = parser.parse_args()
    devices = [f"edge-{i}" for i in range(args.agents)]
    killed = devices[-args.kill :] if args.kill else []
    mode = "secure aggregation, 16-bit field" if args.secagg else "deflated float16 change"
    out: dict[str, Any] = {"agents": args.agents, "secagg": args.secagg}

    with (
        tempfile.TemporaryDirectory(prefix="fogline-fl-fleet-") as tmp,
        LocalFleet(Path(tmp)) as fleet,
    ):
        fleet.start_controller()
        for device in devices:
            fleet.start_agent(device)
        wait_until(f"{args.agents} agents online", lambda: fleet.online() == set(devices), 180)
        fleet.publish(learner(Path(tmp) / "learner", args.agents), "digits-learner", "1.0.0")
        deployment = fleet.deploy("digits-learner", "1.0.0")
        wait_until("the learner release on every agent",
                   lambda: fleet.deployment(deployment)["status"] == "succeeded", 180)  # fmt: skip

        def start(rounds: int, min_clients: int) -> str:
            started = fleet.call("POST", "/api/fl/runs", {
                "task": TASK, "release": "digits-fl", "rounds": rounds, "seed": 0,
                "min_clients": min_clients, "deadline": args.deadline, "max_drop": 1.0,
                "secagg": args.secagg,
            })  # fmt: skip
            return str(started["id"])

        def run(run_id: str) -> dict[str, Any]:
            found: dict[str, Any] = fleet.call("GET", f"/api/fl/runs/{run_id}")
            return found

        # 1. every agent, every round: the fleet against the simulation of the same split
        print(f"run 1: {args.agents} agents, {args.rounds} rounds of FedAvg ({mode})")
        first = start(args.rounds, args.agents)
        wait_until("run 1 to end", lambda: run(first)["status"] in ENDED, 1800, 0.5)
        rounds = run(first)["rounds"]
        table(rounds)
        sim = simulate(load_task(TASK), SimulationConfig(
            clients=args.agents, rounds=args.rounds, split=SplitSpec.parse("dirichlet:0.5"),
            seed=0, secagg=args.secagg,
        ))  # fmt: skip
        fleet_acc, sim_acc = rounds[-1]["accuracy"], sim.history[-1].accuracy
        per_round = [r["closed"] - r["opened"] for r in rounds[1:]]  # the first loads the task
        up = statistics.median(r["bytes_up"] / r["participants"] for r in rounds)
        print(f"fleet {100 * fleet_acc:.2f}% after {len(rounds)} rounds; simulation of the same "
              f"split (anchor) {100 * sim_acc:.2f}%: difference {100 * (fleet_acc - sim_acc):+.2f} "
              f"points (claim: within 1)")  # fmt: skip
        print(f"seconds per round: median {statistics.median(per_round):.2f} (round 1, which "
              f"loads the task on every device: {rounds[0]['closed'] - rounds[0]['opened']:.2f}); "
              f"upload per device per round: median {up:.0f} B ({mode})")  # fmt: skip
        out.update(rounds=rounds, fleet_accuracy=fleet_acc, simulation_accuracy=sim_acc,
                   median_round_seconds=statistics.median(per_round), upload_bytes=up)  # fmt: skip
        if not killed:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=2))
            return 0

        # 2. agents killed with SIGKILL while a round is open, started again once it closed
        print(f"\nrun 2: {args.kill_rounds} rounds; {', '.join(killed)} killed with SIGKILL as "
              f"round {args.kill_round} opens, started again once it closed")  # fmt: skip
        second = start(args.kill_rounds, max(2, args.agents - args.kill))
        wait_until(f"round {args.kill_round} open",
                   lambda: run(second)["round"] >= args.kill_round, 600, 0.01)  # fmt: skip
        for device in killed:
            fleet.kill_agent(device)
        wait_until(f"round {args.kill_round} closed",
                   lambda: run(second)["round"] > args.kill_round, 600, 0.05)  # fmt: skip
        for device in killed:
            fleet.start_agent(device)
        wait_until("run 2 to end", lambda: run(second)["status"] in ENDED, 1800, 0.5)
        crashed = run(second)["rounds"]
    table(crashed)
    hit = crashed[args.kill_round - 1]
    back = next((r["round"] for r in crashed if r["round"] > args.kill_round
                 and set(killed) <= set(r["sampled"])), None)  # fmt: skip
    print(f"round {args.kill_round} closed at its deadline ({hit['closed'] - hit['opened']:.1f} s) "
          f"with {hit['participants']} of {len(hit['sampled'])} updates; the next rounds sampled "
          f"the {args.agents - args.kill} online; the killed agents took part again from round "
          f"{back}" if back else "; the killed agents were not back before the run ended")  # fmt: skip
    print(f"after {len(crashed)} rounds: {100 * crashed[-1]['accuracy']:.2f}%")
    out.update(killed=killed, kill_round=args.kill_round, crash_rounds=crashed, rejoined_in=back)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
