"""A toy federated task for the strategy tests: softmax regression on scikit-learn's digits.

Ten clients hold an iid split of the training set (a fixed seed); each trains
a few mini-batch steps in plain numpy, with FedProx's proximal term when its
configuration has ``mu``. ``run`` plays whole rounds in one process, with
optional sign-flip attackers (the update negated and scaled by 10).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from sklearn.datasets import load_digits

from fogline.federated.strategy import Strategy, Update, Weights, proximal_gradient

CLIENTS = [f"c{i}" for i in range(10)]


@dataclass(frozen=True)
class Split:
    clients: dict[str, tuple[np.ndarray, np.ndarray]]
    test: tuple[np.ndarray, np.ndarray]


@cache
def split(seed: int = 0) -> Split:
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(y))
    train, test = order[:1400], order[1400:]
    parts = np.array_split(train, len(CLIENTS))
    return Split({c: (X[p], y[p]) for c, p in zip(CLIENTS, parts, strict=True)}, (X[test], y[test]))


def initial_weights() -> Weights:
    return Weights({"W": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)})


def _probabilities(w: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    logits = X @ w["W"] + w["b"]
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def train(
    weights: Weights,
    data: tuple[np.ndarray, np.ndarray],
    config: Mapping[str, Any],
    rng: np.random.Generator,
    *,
    steps: int = 5,
    lr: float = 0.1,
    batch: int = 32,
) -> Weights:
    X, y = data
    w = {n: a.copy() for n, a in weights.items()}
    mu = float(config.get("mu", 0.0))
    for _ in range(steps):
        idx = rng.choice(len(y), size=batch, replace=False)
        p = _probabilities(w, X[idx])
        p[np.arange(batch), y[idx]] -= 1.0
        grad = Weights({"W": X[idx].T @ p / batch, "b": p.mean(axis=0)})
        if mu:
            prox = proximal_gradient(Weights(w), weights, mu)
            grad = grad.like(grad.vector() + prox.vector())
        for n in w:
            w[n] = (w[n] - lr * grad[n]).astype(np.float32)
    return Weights(w)


def accuracy(weights: Weights, data: tuple[np.ndarray, np.ndarray]) -> float:
    X, y = data
    return float((_probabilities(weights, X).argmax(axis=1) == y).mean())


def sign_flip(current: Weights, trained: Weights) -> Weights:
    """The attack: the client's change negated and scaled by 10."""
    return current.like(current.vector() - 10 * (trained.vector() - current.vector()))


def client_updates(
    strategy: Strategy,
    round: int,
    current: Weights,
    rng: np.random.Generator,
    attackers: int = 0,
) -> list[Update]:
    data = split()
    updates = []
    for instruction in strategy.configure(round, CLIENTS, rng):
        client = instruction.client
        trained = train(current, data.clients[client], instruction.config, rng)
        if CLIENTS.index(client) < attackers:
            trained = sign_flip(current, trained)
        updates.append(Update(client, trained, len(data.clients[client][1])))
    return updates


def run(strategy: Strategy, rounds: int = 5, seed: int = 0, attackers: int = 0) -> list[float]:
    """Test accuracy of the global model after each round."""
    rng = np.random.default_rng(seed)
    current = initial_weights()
    history = []
    for r in range(1, rounds + 1):
        updates = client_updates(strategy, r, current, rng, attackers)
        current = strategy.aggregate(r, current, updates).weights
        history.append(accuracy(current, split().test))
    return history
