"""Federated learning on a real fleet against the simulation of the same run.

    python benchmarks/bench_federated_fleet.py [--agents 10] [--rounds 20] [--kill 3 --kill-round 5]

In a fresh folder (``fogline.testing.LocalFleet``): a real Mosquitto with
passwords and the ACL, ``fogline controller`` as its own process, and
``--agents`` ``fogline agent`` processes (``edge-0`` …), each enrolled, each
given the bundled learner release with ``data_args`` ``clients: N`` (so
device ``edge-i`` trains on part ``i`` of the digits training set split by
Dirichlet 0.5 with seed 0 — the very partition ``fogline fl simulate
--clients N --split dirichlet:0.5 --seed 0`` makes). A FedAvg run of
``--rounds`` rounds then goes over the broker. While round ``--kill-round`` is
open, ``--kill`` agents are killed with ``SIGKILL`` (after the others' updates
are in); the round closes at its deadline with the rest, the next rounds
sample only who is online, and the killed agents are started again
``--rejoin-after`` rounds later and take part once more.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--kill", type=int, default=3)
    parser.add_argument("--kill-round", type=int, default=5)
    parser.add_argument("--rejoin-after", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/federated_fleet.json"))
    args = parser.parse_args()
    devices = [f"edge-{i}" for i in range(args.agents)]
    killed = devices[-args.kill :] if args.kill else []

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
        print(
            f"{args.agents} agents online with the learner release; starting {args.rounds} rounds"
        )
        started = fleet.call("POST", "/api/fl/runs", {
            "task": TASK, "release": "digits-fl", "rounds": args.rounds, "seed": 0,
            "min_clients": max(2, args.agents - args.kill), "deadline": args.deadline,
            "max_drop": 1.0,
        })  # fmt: skip
        run_id = started["id"]

        def run() -> dict:
            return fleet.call("GET", f"/api/fl/runs/{run_id}")

        rejoin_round = None
        if killed:
            # killed as soon as the round opens: what they already sent, if anything, counts
            wait_until(
                f"round {args.kill_round} open",
                lambda: run()["round"] >= args.kill_round,
                600,
                0.01,
            )
            for device in killed:
                fleet.kill_agent(device)
            print(f"round {args.kill_round}: killed {', '.join(killed)} with SIGKILL")
            rejoin_round = args.kill_round + args.rejoin_after
            wait_until(f"round {rejoin_round}", lambda: run()["round"] >= rejoin_round, 900)
            for device in killed:
                fleet.start_agent(device)
            print(f"round {rejoin_round}: started {', '.join(killed)} again")
        wait_until("the run to end", lambda: run()["status"] in ENDED, 1800, 0.5)
        found = run()

    rounds = found["rounds"]
    print("\nround  participants  accuracy  bytes up  bytes down  seconds")
    for r in rounds:
        seconds = (r["closed"] or r["opened"]) - r["opened"]
        print(f"{r['round']:5d}  {r['participants']:5d}/{len(r['sampled']):<6d}  "
              f"{100 * r['accuracy']:7.2f}%  {r['bytes_up']:8d}  {r['bytes_down']:10d}  {seconds:7.2f}")  # fmt: skip
    task = load_task(TASK)
    sim = simulate(task, SimulationConfig(
        clients=args.agents, rounds=args.rounds, split=SplitSpec.parse("dirichlet:0.5"), seed=0,
    ))  # fmt: skip
    back = next(
        (r["round"] for r in rounds if rejoin_round and r["round"] >= rejoin_round
         and set(killed) <= set(r["sampled"])), None,
    )  # fmt: skip
    if killed:
        print(f"the killed agents were started again after round {rejoin_round - 1}; "
              f"sampled again from round {back}" if back else "they were not sampled again "
              "before the run ended (an agent takes seconds to start; rounds here take under one)")  # fmt: skip
    fleet_acc = rounds[-1]["accuracy"]
    sim_acc = sim.history[-1].accuracy
    per_round = [r["closed"] - r["opened"] for r in rounds if r["closed"]]
    normal = [s for r, s in zip(rounds, per_round, strict=False) if r["round"] != args.kill_round]
    print(f"\nfleet ({args.agents} agents, {args.kill} killed in round {args.kill_round}): "
          f"{100 * fleet_acc:.2f}% after {len(rounds)} rounds; simulation of the same split: "
          f"{100 * sim_acc:.2f}% (difference {100 * (fleet_acc - sim_acc):+.2f} points)")  # fmt: skip
    print(f"seconds per round: median {statistics.median(normal):.2f} (round {args.kill_round}, "
          f"which waited for its deadline: {per_round[args.kill_round - 1]:.2f})")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "agents": args.agents, "killed": killed, "kill_round": args.kill_round,
        "rejoin_round": rejoin_round, "rejoined_in_round": back, "rounds": rounds, "fleet_accuracy": fleet_acc,
        "simulation_accuracy": sim_acc, "median_round_seconds": statistics.median(normal),
    }, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
