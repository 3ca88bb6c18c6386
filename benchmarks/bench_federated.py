"""fogline's federated simulation against Flower (flwr) in one run, on the same model and data.

    python benchmarks/bench_federated.py [--rounds 50] [--quick] [--engine ray|inprocess] [--out FILE]

Flower is installed for this benchmark only: on the first run it makes its
own venv, ``benchmarks/.venv-flwr`` (``python3 -m venv``, then ``pip install
'flwr[simulation]==1.42.*'``, or the newest 1.x when that pin is not to be
had; the folder is gitignored), and the Flower side runs there as a
subprocess, ``benchmarks/_flwr_side.py``, which exchanges JSON with this
script; Flower's pins never touch fogline's venv. ``--quick`` plays 5 rounds
(a smoke run); a full run takes a few minutes on 2 cores.

What both sides share: the bundled digits task (``fogline.examples:digits_task``:
scikit-learn's digits, 64 pixels into numpy softmax regression, lr 0.5,
batch 16, one local epoch), 10 clients, all of them each round, and the
same split of the training set: made once here with
``fogline.federated.split_clients`` (Dirichlet 0.5, and 2 shards per
client; seed 0), whose indices go to the Flower side, and which fogline's
``simulate`` makes again from the same seed (checked equal). Flower runs its
own ``FedAvg`` / ``FedProx`` strategy objects (mu 0.01, as fogline's FedProx)
with a centralised ``evaluate_fn``, ``NumPyClient``s, its serialisation
(``ndarrays_to_parameters``) and its simulation runtime
(``flwr.simulation.run_simulation`` on Ray), unless ``--engine inprocess``
(or a failing Ray) has the same strategy and clients driven in one process.

Printed, each line beside its anchor (the figure or claim it is compared with):

* accuracy after 10, 20 and 50 rounds, fogline vs Flower, FedAvg and FedProx,
  both splits (claim: fogline within 1 point);
* bytes per round per client upload: fogline plain (``encode_update``, a
  deflated float16 change) vs Flower (its Parameters tensors; claim <= 0.6x),
  and fogline with secure aggregation (``upload_cost`` at the default bits:
  masked vector, keys, shares) vs fogline plain (claim <= 1.3x);
* wall time of 50 rounds in simulation, both (claim: fogline <= Flower);
* 20 % of clients sending sign-flipped updates: FedAvg, Krum, Multi-Krum
  (both told f = 2) and trimmed mean (beta 0.2) vs FedAvg without attack
  (claim: the robust ones within 2 points);
* secure aggregation with 30 % of the clients dropping, driven through
  ``SecAggClient`` / ``SecAggServer`` on real client updates: the secure sum
  vs the plain sum of the survivors (max abs error, field step, bound);
* ε after 50 rounds at noise multiplier 1.0, sampling 0.3, δ = 1e-5 (fogline's
  ``PrivacyAccountant``, and dp-accounting's ``RdpAccountant`` directly),
  beside the accuracy with that noise and without it.

The figures also go to ``benchmarks/results/federated.json`` (``--out``;
``federated-quick.json`` for ``--quick``). Each side's numeric work is
single-threaded: Flower's numpy in its Ray actors (``OMP_NUM_THREADS=1``, one
CPU per actor, as many actors as cores), fogline's torch
(``torch.set_num_threads(1)``; fogline trains the clients one after another).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from fogline.federated import (
    PrivacyAccountant,
    SecAggClient,
    SecAggParams,
    SecAggServer,
    SimulationConfig,
    SimulationResult,
    SplitSpec,
    Task,
    load_task,
    simulate,
    split_clients,
    upload_cost,
)
from fogline.federated._simulate import SECAGG_BITS, SECAGG_CLIP

HERE = Path(__file__).resolve().parent
FLWR_VENV = HERE / ".venv-flwr"
FLWR_PINS = ("flwr[simulation]==1.42.*", "flwr[simulation]>=1,<2")
TASK = "fogline.examples:digits_task"
#: The model each side trains: fogline's task, as the Flower side names it.
MODELS = {"softmax": TASK, "mlp": "fogline.examples:digits_torch_task"}
CLIENTS = 10
SEED = 0
SPLITS = ("dirichlet:0.5", "shards:2")
STRATEGIES = ("fedavg", "fedprox")
MU = 0.01  # fogline's FedProx default, given to Flower's FedProx too
CHECKPOINTS = (10, 20, 50)
ROBUST = {"krum": {"f": 2}, "multi-krum": {"f": 2}, "trimmed-mean": {"beta": 0.2}}
DP = {"noise": 1.0, "clip": 0.5, "fraction": 0.3, "delta": 1e-5}
DP_CLIPS = (0.25, 0.5, 1.0, 2.0)


# -- Flower, in its own venv --------------------------------------------------------------


def flower_python() -> Path:
    """The Flower venv's interpreter; made on the first run (the pin, else the newest 1.x)."""
    python = FLWR_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {FLWR_VENV} for Flower (once) ...", file=sys.stderr)
        subprocess.run(["python3", "-m", "venv", str(FLWR_VENV)], check=True)
    probe = [str(python), "-c", "import flwr, ray; print(flwr.__version__)"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    for pin in FLWR_PINS:
        print(f"pip install '{pin}' into {FLWR_VENV} ...", file=sys.stderr)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", pin, "numpy"])
        if done.returncode == 0:
            return python
    raise SystemExit(f"could not install Flower into {FLWR_VENV}")


def run_flower(
    tasks: dict[str, Task],
    splits: dict[str, list[list[int]]],
    rounds: int,
    engine: str,
    seed: int = SEED,
) -> dict[str, Any]:
    """Play FedAvg and FedProx on both splits, for each model, in Flower; its results as JSON."""
    python = flower_python()
    task = tasks["softmax"]
    X, y = task.train
    Xt, yt = task.test
    for other in tasks.values():  # the same pixels, whatever shape the model takes them in
        assert np.array_equal(other.train[0].reshape(len(y), -1), X)
        assert np.array_equal(other.test[0].reshape(len(yt), -1), Xt)
    models = {}
    for name, t in tasks.items():
        initial = t.initial_weights(t.trainer(1))
        models[name] = {
            "lr": t.lr,
            "batch_size": t.batch_size,
            "initial": [a.tolist() for a in initial.arrays.values()],
        }
    job = {
        "X": X.tolist(),
        "y": y.tolist(),
        "Xt": Xt.tolist(),
        "yt": yt.tolist(),
        "splits": splits,
        "models": models,
        "local_epochs": 1,
        "mu": MU,
        "seed": seed,
        "clients": CLIENTS,
        "engine": engine,
        "runs": [
            {"model": model, "strategy": s, "split": split, "rounds": rounds}
            for model in tasks
            for split in SPLITS
            for s in STRATEGIES
        ],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    with tempfile.TemporaryDirectory() as folder:
        job_path, result_path = Path(folder) / "job.json", Path(folder) / "result.json"
        job_path.write_text(json.dumps(job))
        log = Path(folder) / "flower.log"
        with log.open("w") as sink:
            done = subprocess.run(
                [str(python), str(HERE / "_flwr_side.py"), str(job_path), str(result_path)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=3600,
            )
        if done.returncode != 0 or not result_path.exists():
            tail = log.read_text()[-3000:]
            if engine == "ray":
                print(f"Flower on Ray failed; in one process instead:\n{tail}", file=sys.stderr)
                return run_flower(tasks, splits, rounds, "inprocess", seed)
            raise SystemExit(f"the Flower side failed:\n{tail}")
        answer: dict[str, Any] = json.loads(result_path.read_text())
        return answer


# -- fogline ------------------------------------------------------------------------------


def split_indices(task: Task) -> dict[str, list[list[int]]]:
    """Each client's indices into the training set, per split: made once, given to both sides."""
    X, y = task.train
    rows = np.arange(len(y))[:, None]
    splits = {}
    for spec in SPLITS:
        parts = split_clients((rows, y), CLIENTS, SplitSpec.parse(spec), SEED)
        again = split_clients(
            task.train, CLIENTS, SplitSpec.parse(spec), SEED
        )  # what simulate does
        for (index, _), (Xc, yc) in zip(parts, again, strict=True):
            assert np.array_equal(X[index[:, 0]], Xc) and np.array_equal(y[index[:, 0]], yc)
        splits[spec] = [index[:, 0].tolist() for index, _ in parts]
    return splits


def play(task: Task | str, rounds: int, **options: Any) -> tuple[SimulationResult, float]:
    """One fogline simulation and its wall time; a task named by its spec is loaded afresh
    (a torch task's module is trained in place, so each run needs its own)."""
    if isinstance(task, str):
        task = load_task(task)
    options = {"clients": CLIENTS, "rounds": rounds, "seed": SEED, **options}
    if "split" in options:
        options["split"] = SplitSpec.parse(options["split"])
    if options.get("strategy") == "fedprox":
        options["strategy_options"] = {"mu": MU}
    start = time.perf_counter()
    result = simulate(task, SimulationConfig(**options))
    return result, time.perf_counter() - start


def per_client_up(result: SimulationResult) -> float:
    return float(np.mean([r.bytes_up / max(r.participants, 1) for r in result.history]))


# -- secure aggregation with dropouts, through the protocol objects ------------------------


def secagg_dropouts(task: Task, rounds_before: int, stage: str) -> dict[str, Any]:
    """One round of real client updates through SecAgg with 30 % of the clients dropping.

    ``stage`` is ``before-upload`` (they shared keys, then never sent their
    masked input: their pairwise masks are rebuilt from shares) or
    ``before-unmask`` (they sent it, then never answered the unmask request).
    """
    config = SimulationConfig(
        clients=CLIENTS, rounds=max(rounds_before, 1), split=SplitSpec.parse(SPLITS[0])
    )
    base_weights = simulate(task, config).weights
    trainer = task.trainer(1)
    rng = np.random.default_rng(SEED + 1)
    parts = split_clients(task.train, CLIENTS, config.split, SEED)
    names = [f"client-{i:03d}" for i in range(CLIENTS)]
    updates = [trainer.fit(n, base_weights, d, {}, rng) for n, d in zip(names, parts, strict=True)]
    largest = max(u.num_examples for u in updates)
    base = base_weights.vector()
    rows = {}
    for u in updates:  # as _simulate sends them: [n_i/s * delta_i, n_i/s]
        share = u.num_examples / largest
        rows[u.client] = np.append(share * (u.weights.vector() - base), share)
    dropping = set(rng.choice(names, size=round(0.3 * CLIENTS), replace=False).tolist())
    params = SecAggParams(
        num_clients=CLIENTS,
        dimension=len(base) + 1,
        clip=SECAGG_CLIP,
        bits=SECAGG_BITS,
        round_id="bench",
    )
    start = time.perf_counter()
    clients = [SecAggClient(n, params) for n in names]
    server = SecAggServer(params)
    adverts = server.collect_adverts([c.advertise() for c in clients])
    inbox = server.route_shares([s for c in clients for s in c.share_keys(adverts)])
    masking = [c for c in clients if stage == "before-unmask" or c.client_id not in dropping]
    request = server.collect_masked(
        [c.mask(rows[c.client_id], inbox[c.client_id]) for c in masking]
    )
    answering = [c for c in masking if c.client_id not in dropping]
    result = server.aggregate([c.unmask(request) for c in answering])
    seconds = time.perf_counter() - start
    plain = np.sum([rows[n] for n in result.survivors], axis=0)
    quantizer = params.quantizer
    return {
        "stage": stage,
        "dropped": sorted(dropping),
        "summed": len(result.survivors),
        "threshold": params.threshold,
        "bits": SECAGG_BITS,
        "max_abs_error": float(np.abs(result.total - plain).max()),
        "field_step": quantizer.step,
        "error_bound": quantizer.sum_error_bound(len(result.survivors)),
        "seconds": seconds,
    }


# -- privacy ------------------------------------------------------------------------------


def dp_accounting_epsilon(rounds: int) -> float:
    import dp_accounting
    from dp_accounting import rdp

    accountant = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(
        DP["fraction"], dp_accounting.GaussianDpEvent(DP["noise"])
    )
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(DP["delta"]))


# -- the run ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "holds" if ok else "DOES NOT HOLD"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="5 rounds: a smoke run")
    parser.add_argument("--engine", choices=("ray", "inprocess"), default="ray")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/federated.json")
    args = parser.parse_args()
    rounds = 5 if args.quick else args.rounds
    if args.out is None:  # a smoke run does not overwrite the figures of a full one
        args.out = HERE / "results" / ("federated-quick.json" if args.quick else "federated.json")
    # One thread for torch, as Flower's actors get one each (OMP_NUM_THREADS=1): on a small
    # machine two torch threads per tiny batch only contend, and the timing swings 5x.
    import torch

    torch.set_num_threads(1)
    checkpoints = [c for c in CHECKPOINTS if c < rounds] + [rounds]
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's convergence chatter
    tasks = {name: load_task(spec) for name, spec in MODELS.items()}
    task = tasks["softmax"]
    splits = split_indices(task)
    sizes = {name: t.initial_weights(t.trainer(1)).size for name, t in tasks.items()}
    figures: dict[str, Any] = {
        "tasks": MODELS,
        "parameters": sizes,
        "clients": CLIENTS,
        "rounds": rounds,
        "lr": {name: t.lr for name, t in tasks.items()},
        "batch_size": task.batch_size,
        "local_epochs": 1,
        "splits": list(SPLITS),
        "seed": SEED,
        "fedprox_mu": MU,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }

    print(f"Flower side ({args.engine}) ...", file=sys.stderr)
    flower = run_flower(tasks, splits, rounds, args.engine)
    engine = flower["runs"][0]["engine"]
    figures["flwr"] = flower["flwr"]
    figures["flower_engine"] = engine
    flower_runs = {(r["model"], r["strategy"], r["split"]): r for r in flower["runs"]}
    # Flower again with its clients' shuffling seeded otherwise: how far two runs of the same
    # thing land apart, the noise floor under the accuracy comparison
    flower_again: dict[tuple[str, str, str], Any] = {}
    if not args.quick:
        print("Flower side, second seed ...", file=sys.stderr)
        second = run_flower(tasks, splits, rounds, engine, seed=SEED + 1)
        flower_again = {(r["model"], r["strategy"], r["split"]): r for r in second["runs"]}

    print("fogline side ...", file=sys.stderr)
    fog: dict[tuple[str, str, str], tuple[SimulationResult, float]] = {}
    for model in MODELS:
        for split in SPLITS:
            for strategy in STRATEGIES:
                on = task if model == "softmax" else MODELS[model]  # torch: a fresh module
                fog[model, strategy, split] = play(on, rounds, strategy=strategy, split=split)
    runs = [(m, st, sp) for m in MODELS for sp in SPLITS for st in STRATEGIES]

    engine_words = (
        "flwr.simulation.run_simulation on Ray"
        if engine == "ray"
        else "Flower's strategy and clients driven in one process (no simulation engine)"
    )
    print(
        f"fogline vs Flower {flower['flwr']} ({engine_words}), {CLIENTS} clients, all each round,"
    )
    print(
        f"1 local epoch, batch {task.batch_size}; softmax: {sizes['softmax']} weights, "
        f"lr {tasks['softmax'].lr}; mlp (64-32-10): {sizes['mlp']} weights, lr {tasks['mlp'].lr}"
    )
    print()

    # accuracy
    print(
        "accuracy (anchor: Flower on the same split; claim: fogline within 1 point; "
        "'Flower again': Flower with its clients seeded otherwise)"
    )
    accuracy = []
    for model, strategy, split in runs:
        ours, _ = fog[model, strategy, split]
        theirs = flower_runs[model, strategy, split]
        for c in checkpoints:
            a = 100 * ours.history[c - 1].accuracy
            b = 100 * theirs["accuracy"][c - 1]
            b2 = (
                100 * flower_again[model, strategy, split]["accuracy"][c - 1]
                if flower_again
                else None
            )
            ok = abs(a - b) <= 1.0
            accuracy.append(
                {
                    "model": model,
                    "strategy": strategy,
                    "split": split,
                    "round": c,
                    "fogline": a,
                    "flower": b,
                    "flower_second_seed": b2,
                }
            )
            print(
                f"  {model:<7} {strategy:<8} {split:<14} round {c:>3}:  fogline {a:6.2f} %   "
                f"Flower {b:6.2f} %   diff {a - b:+6.2f}  {verdict(ok)}"
                + ("" if b2 is None else f"   (Flower again {b2:6.2f} %, {b2 - b:+6.2f})")
            )
    figures["accuracy"] = accuracy
    print()

    # bytes
    print("upload per client per round (anchor: Flower's serialised Parameters)")
    uploads: dict[str, Any] = {}
    for model in MODELS:
        for split in SPLITS:
            ours_up = per_client_up(fog[model, "fedavg", split][0])
            theirs_up = float(np.mean(flower_runs[model, "fedavg", split]["upload_bytes"]))
            uploads[f"{model} {split}"] = {
                "fogline_plain": ours_up,
                "flower": theirs_up,
                "ratio": ours_up / theirs_up,
            }
            print(
                f"  {model:<7} fedavg   {split:<14} fogline plain {ours_up:7.0f} B   Flower "
                f"{theirs_up:7.0f} B   ratio {ours_up / theirs_up:.2f}x (claim <= 0.6x) "
                f"{verdict(ours_up / theirs_up <= 0.6)}"
            )
    for model in MODELS:
        on = task if model == "softmax" else MODELS[model]
        secure, _ = play(on, rounds, strategy="fedavg", split=SPLITS[0], secagg=True)
        dimension = sizes[model] + 1  # the change and the client's weight
        cost = upload_cost(dimension, CLIENTS, SECAGG_BITS)
        cost32 = upload_cost(dimension, CLIENTS, 32)
        plain = uploads[f"{model} {SPLITS[0]}"]["fogline_plain"]
        measured = per_client_up(secure)
        clean_accuracy = fog[model, "fedavg", SPLITS[0]][0].history[-1].accuracy
        print(
            f"  {model:<7} secagg   {SPLITS[0]:<14} fogline {SECAGG_BITS}-bit {measured:7.0f} B "
            f"(masked {cost.masked}, keys {cost.keys}, shares {cost.shares}, unmask {cost.unmask})"
        )
        print(
            f"          anchor fogline plain {plain:7.0f} B   ratio {measured / plain:.2f}x "
            f"(claim <= 1.3x) {verdict(measured / plain <= 1.3)}; at 32 bits {cost32.total} B, "
            f"{cost32.total / plain:.2f}x"
        )
        print(
            f"          accuracy after {rounds} rounds with secagg "
            f"{100 * secure.history[-1].accuracy:.2f} % (anchor: plain {100 * clean_accuracy:.2f} %)"
        )
        uploads[f"{model} secagg"] = {
            "bits": SECAGG_BITS,
            "measured": measured,
            "cost": cost.__dict__,
            "total": cost.total,
            "ratio_to_plain": measured / plain,
            "total_at_32_bits": cost32.total,
            "accuracy": secure.history[-1].accuracy,
            "accuracy_plain": clean_accuracy,
        }
    uploads["flower_parameters_bytes_check"] = flower["parameters_bytes"]
    figures["upload_bytes"] = uploads
    print()

    # wall time
    print(f"wall time of {rounds} rounds (anchor: Flower's simulation; claim: fogline <= Flower)")
    wall = []
    for model, strategy, split in runs:
        ours, seconds = fog[model, strategy, split]
        theirs = flower_runs[model, strategy, split]
        per_round = sum(r.seconds for r in ours.history) / rounds
        wall.append(
            {
                "model": model,
                "strategy": strategy,
                "split": split,
                "fogline_s": seconds,
                "flower_s": theirs["seconds"],
                "fogline_round_s": per_round,
                "flower_round_s": theirs["round_seconds"],
            }
        )
        print(
            f"  {model:<7} {strategy:<8} {split:<14} fogline {seconds:6.2f} s   Flower "
            f"{theirs['seconds']:6.2f} s   per round {1000 * per_round:6.1f} vs "
            f"{1000 * theirs['round_seconds']:6.1f} ms  {verdict(seconds <= theirs['seconds'])}"
        )
    figures["wall_time"] = wall
    print()

    # attack
    print(
        "20 % sign-flipping clients, fogline (anchor: FedAvg without attack; "
        "claim: robust ones within 2 points)"
    )
    attack = []
    for split in ("iid", *SPLITS):
        clean = (
            fog["softmax", "fedavg", split][0]
            if split in SPLITS
            else play(task, rounds, split=split)[0]
        )
        anchor = 100 * clean.history[-1].accuracy
        row = {"split": split, "fedavg_no_attack": anchor}
        for strategy in ("fedavg", *ROBUST):
            result, _ = play(
                task,
                rounds,
                strategy=strategy,
                split=split,
                malicious=0.2,
                attack="sign-flip",
                strategy_options=ROBUST.get(strategy, {}),
            )
            a = 100 * result.history[-1].accuracy
            row[strategy] = a
            row[f"{strategy}_loss"] = result.history[-1].loss
            claim = "" if strategy == "fedavg" else f"  {verdict(anchor - a <= 2.0)}"
            extra = f" loss {result.history[-1].loss:7.3f}" if strategy == "fedavg" else ""
            print(
                f"  {split:<14} {strategy:<13} {a:6.2f} %{extra}   anchor {anchor:6.2f} %   "
                f"diff {a - anchor:+6.2f}{claim}"
            )
        attack.append(row)
    figures["sign_flip_20pct"] = attack
    print()

    # dropouts through secure aggregation
    print(
        "secure aggregation, 30 % of 10 clients dropping, real updates after "
        f"{min(10, rounds)} rounds "
        "(anchor: the plain sum of the survivors)"
    )
    drops = []
    for stage in ("before-upload", "before-unmask"):
        d = secagg_dropouts(task, min(10, rounds), stage)
        drops.append(d)
        ok = d["max_abs_error"] <= d["error_bound"] * (1 + 1e-9)  # float rounding of the bound
        print(
            f"  dropped {stage:<13} round completed, {d['summed']} inputs summed (threshold "
            f"{d['threshold']}): max abs error vs the plain sum {d['max_abs_error']:.2e}, field step "
            f"{d['field_step']:.2e}, bound {d['error_bound']:.2e} {verdict(ok)}  "
            f"({d['seconds']:.2f} s)"
        )
    figures["secagg_dropouts"] = drops
    print()

    # privacy
    print(
        f"privacy after {rounds} rounds, z {DP['noise']}, q {DP['fraction']}, "
        f"δ {DP['delta']:g} (anchor: dp-accounting's RdpAccountant directly)"
    )
    noisy, _ = play(
        task,
        rounds,
        split=SPLITS[0],
        fraction=DP["fraction"],
        dp_noise=DP["noise"],
        dp_clip=DP["clip"],
        dp_delta=DP["delta"],
    )
    quiet, _ = play(task, rounds, split=SPLITS[0], fraction=DP["fraction"])
    assert noisy.privacy is not None
    ours_eps = noisy.privacy.epsilon
    theirs_eps = dp_accounting_epsilon(rounds)
    again = PrivacyAccountant(noisy.config.privacy).epsilon(rounds)
    print(
        f"  ε fogline {ours_eps:.4f}   dp-accounting {theirs_eps:.4f}   "
        f"{verdict(math.isclose(ours_eps, theirs_eps, rel_tol=1e-9) and ours_eps == again)}"
    )
    clips = {}
    for clip in DP_CLIPS:
        if clip == DP["clip"]:
            clips[clip] = noisy.history[-1].accuracy
            continue
        result, _ = play(
            task,
            rounds,
            split=SPLITS[0],
            fraction=DP["fraction"],
            dp_noise=DP["noise"],
            dp_clip=clip,
            dp_delta=DP["delta"],
        )
        clips[clip] = result.history[-1].accuracy
    print(
        f"  accuracy {SPLITS[0]} FedAvg: with noise (clip {DP['clip']}) "
        f"{100 * noisy.history[-1].accuracy:.2f} %   anchor without noise "
        f"{100 * quiet.history[-1].accuracy:.2f} %   cost "
        f"{100 * (quiet.history[-1].accuracy - noisy.history[-1].accuracy):.2f} points"
    )
    print(
        "  accuracy by clip norm: "
        + ", ".join(f"C {c:g}: {100 * a:.2f} %" for c, a in clips.items())
    )
    figures["privacy"] = {
        **DP,
        "rounds": rounds,
        "epsilon_fogline": ours_eps,
        "epsilon_dp_accounting": theirs_eps,
        "accuracy_noise": noisy.history[-1].accuracy,
        "accuracy_no_noise": quiet.history[-1].accuracy,
        "accuracy_by_clip": {str(c): a for c, a in clips.items()},
    }

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
