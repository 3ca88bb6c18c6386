"""The Flower side of bench_federated.py: run in benchmarks/.venv-flwr, never in fogline's venv.

    benchmarks/.venv-flwr/bin/python benchmarks/_flwr_side.py JOB.json RESULT.json

JOB.json (written by bench_federated.py) holds the digits train and test
sets (64 pixels flattened), each client's indices into the train set (the
split fogline made), the models (softmax regression, and fogline's MLP with
the initial weights of its torch module) with their learning rate and batch
size, and the runs to play. For each run this plays Flower's own pieces:
``flwr.server.strategy.FedAvg`` / ``FedProx`` with a centralised
``evaluate_fn``, a ``NumPyClient`` per client (the model in numpy, the same
mini-batch SGD on the mean cross-entropy as fogline's SoftmaxTrainer and
TorchTrainer, with FedProx's proximal term when the round's config has
``proximal_mu``), and
Flower's serialisation (``ndarrays_to_parameters``: one ``np.save`` blob
per tensor). The engine is Flower's simulation runtime
(``flwr.simulation.run_simulation``, Ray backend); with ``"engine":
"inprocess"`` the same strategy and client objects are driven in one
process instead (no Ray). RESULT.json gets, per run: accuracy after each
round, the bytes of each client's FitRes Parameters tensors, and the wall
time of the whole simulation.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import numpy as np
from flwr.client import Client, NumPyClient
from flwr.common import (
    Code,
    Context,
    FitRes,
    Parameters,
    Scalar,
    Status,
    ndarrays_to_parameters,
)
from flwr.server.strategy import FedAvg, FedProx

JOB: dict[str, Any] = {}
ACCURACY: list[float] = []
UPLOADS: list[int] = []
STAMPS: list[float] = []  # when each round's evaluation ran (perf_counter)


def _job() -> dict[str, Any]:
    """The job, loaded once per process (Ray actors load it from the path in the environment)."""
    if not JOB:
        JOB.update(json.loads(Path(os.environ["FOGLINE_FLWR_JOB"]).read_text()))
        for key in ("X", "y", "Xt", "yt"):
            JOB[key] = np.asarray(JOB[key], dtype=np.int64 if key.startswith("y") else np.float64)
    return JOB


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def grads_softmax(w: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Mean cross-entropy gradient of softmax regression ``X @ W + b``."""
    W, b = w
    p = softmax(X @ W + b)
    p[np.arange(len(y)), y] -= 1.0
    return [X.T @ p / len(y), p.mean(axis=0)]


def grads_mlp(w: list[np.ndarray], X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Mean cross-entropy gradient of fogline's federated_mlp (Linear, ReLU, Linear), torch's layout."""
    W1, b1, W2, b2 = w  # W1 (hidden, 64), W2 (10, hidden), as torch.nn.Linear holds them
    h = np.maximum(X @ W1.T + b1, 0.0)
    p = softmax(h @ W2.T + b2)
    p[np.arange(len(y)), y] -= 1.0
    p /= len(y)
    dh = (p @ W2) * (h > 0)
    return [dh.T @ X, dh.sum(axis=0), p.T @ h, p.sum(axis=0)]


def predict(w: list[np.ndarray], X: np.ndarray) -> np.ndarray:
    if len(w) == 2:
        return X @ w[0] + w[1]
    return np.maximum(X @ w[0].T + w[1], 0.0) @ w[2].T + w[3]


class DigitsClient(NumPyClient):
    """The task's model on one client's digits, mini-batch SGD in numpy (as a Flower user writes it).

    FedProx's proximal term ``mu/2 ||w - w_global||²`` adds ``mu (w - w_global)``
    to each step's gradient when the round's config has ``proximal_mu``.
    """

    def __init__(self, partition: int, split: str, model: str) -> None:
        job = _job()
        index = np.asarray(job["splits"][split][partition], dtype=np.int64)
        self.X, self.y = job["X"][index], job["y"][index]
        spec = job["models"][model]
        self.grads = grads_mlp if model == "mlp" else grads_softmax
        self.lr, self.batch, self.epochs = spec["lr"], spec["batch_size"], job["local_epochs"]
        self.rng = np.random.default_rng([job["seed"], partition])

    def get_parameters(self, config: dict[str, Scalar]) -> list[np.ndarray]:
        raise NotImplementedError  # the strategy has initial parameters

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Scalar]
    ) -> tuple[list[np.ndarray], int, dict[str, Scalar]]:
        start = [p.astype(np.float64) for p in parameters]
        w = [p.copy() for p in start]
        mu = float(config.get("proximal_mu", 0.0))
        rng = np.random.default_rng([self.rng.integers(1 << 31), int(config.get("round", 0))])
        for _ in range(self.epochs):
            order = rng.permutation(len(self.y))
            for first in range(0, len(order), self.batch):
                idx = order[first : first + self.batch]
                grads = self.grads(w, self.X[idx], self.y[idx])
                if mu:
                    grads = [g + mu * (a - a0) for g, a, a0 in zip(grads, w, start, strict=True)]
                w = [a - self.lr * g for a, g in zip(w, grads, strict=True)]
        return [a.astype(np.float32) for a in w], len(self.y), {}


def evaluate(weights: list[np.ndarray]) -> float:
    job = _job()
    w = [a.astype(np.float64) for a in weights]
    return float((predict(w, job["Xt"]).argmax(axis=1) == job["yt"]).mean())


def make_strategy(name: str, model: str) -> FedAvg:
    job = _job()

    class Measured(FedProx if name == "fedprox" else FedAvg):  # type: ignore[misc, valid-type]
        """Flower's strategy, noting the bytes of each FitRes Parameters before aggregating."""

        def aggregate_fit(self, server_round, results, failures):  # type: ignore[no-untyped-def]
            UPLOADS.extend(sum(len(t) for t in res.parameters.tensors) for _, res in results)
            return super().aggregate_fit(server_round, results, failures)

    initial = [np.asarray(a, np.float32) for a in job["models"][model]["initial"]]
    options: dict[str, Any] = {
        "fraction_fit": 1.0,
        "fraction_evaluate": 0.0,
        "min_fit_clients": job["clients"],
        "min_available_clients": job["clients"],
        "initial_parameters": ndarrays_to_parameters(initial),
        "on_fit_config_fn": lambda r: {"round": r},
        "evaluate_fn": lambda r, w, c: (0.0, {"accuracy": _record(r, w)}),
    }
    if name == "fedprox":
        options["proximal_mu"] = job["mu"]
    return Measured(**options)


def _record(server_round: int, weights: list[np.ndarray]) -> float:
    accuracy = evaluate(weights)
    STAMPS.append(time.perf_counter())
    if server_round > 0:  # round 0 is the initial model
        ACCURACY.append(accuracy)
    return accuracy


def run_engine(strategy_name: str, split: str, rounds: int, model: str) -> None:
    """Flower's simulation runtime: a ServerApp and a ClientApp on Ray, one SuperNode per client."""
    from flwr.client import ClientApp
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    def client_fn(context: Context) -> Client:
        return DigitsClient(int(context.node_config["partition-id"]), split, model).to_client()

    def server_fn(context: Context) -> ServerAppComponents:
        return ServerAppComponents(
            strategy=make_strategy(strategy_name, model), config=ServerConfig(num_rounds=rounds)
        )

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=_job()["clients"],
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
        },
    )


def run_inprocess(strategy_name: str, split: str, rounds: int, model: str) -> None:
    """The same strategy and clients without the runtime: configure_fit, fit, aggregate_fit."""
    from flwr.server.client_manager import SimpleClientManager
    from flwr.server.client_proxy import ClientProxy

    class Proxy(ClientProxy):
        def __init__(self, cid: int) -> None:
            super().__init__(str(cid))
            self.client = DigitsClient(cid, split, model).to_client()

        def fit(self, ins, timeout, group_id):  # type: ignore[no-untyped-def]
            return self.client.fit(ins)

        def get_properties(self, *a):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def get_parameters(self, *a):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def evaluate(self, *a):  # type: ignore[no-untyped-def]
            raise NotImplementedError

        def reconnect(self, *a):  # type: ignore[no-untyped-def]
            raise NotImplementedError

    strategy = make_strategy(strategy_name, model)
    manager = SimpleClientManager()
    for cid in range(_job()["clients"]):
        manager.register(Proxy(cid))
    parameters = strategy.initialize_parameters(manager)
    assert parameters is not None
    strategy.evaluate(0, parameters)
    for r in range(1, rounds + 1):
        plan = strategy.configure_fit(r, parameters, manager)
        results: list[tuple[ClientProxy, FitRes]] = []
        for proxy, ins in plan:
            res = proxy.fit(ins, None, r)
            # what crosses the wire: the client's arrays serialised into Parameters
            sent = Parameters(tensors=list(res.parameters.tensors), tensor_type="numpy.ndarray")
            results.append((proxy, FitRes(Status(Code.OK, ""), sent, res.num_examples, {})))
        aggregated, _ = strategy.aggregate_fit(r, results, [])
        assert aggregated is not None
        parameters = aggregated
        strategy.evaluate(r, parameters)


def main() -> None:
    job_path, out_path = sys.argv[1], sys.argv[2]
    os.environ["FOGLINE_FLWR_JOB"] = str(Path(job_path).resolve())
    job = _job()
    import flwr

    results = []
    for run in job["runs"]:
        ACCURACY.clear()
        UPLOADS.clear()
        STAMPS.clear()
        start = time.perf_counter()
        engine = job["engine"]
        if engine == "ray":
            run_engine(run["strategy"], run["split"], run["rounds"], run["model"])
        else:
            run_inprocess(run["strategy"], run["split"], run["rounds"], run["model"])
        seconds = time.perf_counter() - start
        results.append(
            {
                **run,
                "engine": engine,
                "seconds": seconds,
                "accuracy": list(ACCURACY),
                "upload_bytes": list(UPLOADS),
                # from round 1's evaluation to the last round's: steady rounds, the start-up
                # of the runtime and its actors left out
                "round_seconds": (STAMPS[-1] - STAMPS[1]) / max(len(STAMPS) - 2, 1),
            }
        )
        print(
            f"flower {run['model']} {run['strategy']} {run['split']}: {seconds:.1f} s",
            file=sys.stderr,
        )
    # what ndarrays_to_parameters makes of each model, checked outside the runtime
    sizes = {
        name: sum(
            len(t)
            for t in ndarrays_to_parameters(
                [np.asarray(a, np.float32) for a in spec["initial"]]
            ).tensors
        )
        for name, spec in job["models"].items()
    }
    answer = {"flwr": flwr.__version__, "runs": results, "parameters_bytes": sizes}
    Path(out_path).write_text(json.dumps(answer))
    # Ray's threads may keep the interpreter alive; the results are written
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
