"""FedProx (Li et al. 2020): FedAvg on the server, a proximal term ``mu/2 ||w - w_global||²`` on the client.

The server's only part is to send ``mu`` in each client's configuration;
the client trainer adds :func:`proximal_gradient` to its loss gradient at
every local step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fogline.errors import ConfigError
from fogline.federated.strategy._weights import Weights
from fogline.federated.strategy.fedavg import FedAvg

__all__ = ["FedProx", "proximal_gradient"]


def proximal_gradient(weights: Weights, global_weights: Weights, mu: float) -> Weights:
    """The gradient of ``mu/2 * ||weights - global_weights||²``: ``mu * (weights - global_weights)``.

    >>> import numpy as np
    >>> w, g = Weights({"w": np.array([1.0, 3.0])}), Weights({"w": np.array([0.0, 1.0])})
    >>> proximal_gradient(w, g, mu=0.5)["w"]
    array([0.5, 1. ])
    """
    if mu < 0:
        raise ConfigError(f"FedProx: mu must be >= 0, not {mu}")
    if [(n, a.shape) for n, a in weights.items()] != [
        (n, a.shape) for n, a in global_weights.items()
    ]:
        raise ConfigError("proximal_gradient: the weights and the global weights differ in tensors")
    return weights.like(mu * (weights.vector() - global_weights.vector()))


class FedProx(FedAvg):
    """FedAvg that asks clients to train with a proximal term of strength ``mu``.

    >>> FedProx(mu=0.1).client_config(3)
    {'round': 3, 'mu': 0.1}
    """

    name = "fedprox"

    def __init__(
        self,
        *,
        mu: float = 0.01,
        fraction: float = 1.0,
        min_clients: int = 2,
        evaluate_fn: Callable[[int, Weights], Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__(fraction=fraction, min_clients=min_clients, evaluate_fn=evaluate_fn)
        if not mu >= 0:
            raise ConfigError(f"FedProx: mu must be >= 0, not {mu}")
        self.mu = float(mu)

    def client_config(self, round: int) -> dict[str, Any]:
        return {**super().client_config(round), "mu": self.mu}

    def __repr__(self) -> str:
        return f"FedProx(mu={self.mu})"
