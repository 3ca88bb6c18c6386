"""The server optimizers of Reddi et al. 2021, "Adaptive Federated Optimization".

Each round the pseudo-gradient ``Δ`` is the examples-weighted mean of
``update - current``; the server keeps a first moment ``m`` and a second
moment ``v`` (started at ``0`` and ``tau²``) and steps
``x ← x + eta · m / (sqrt(v) + tau)`` with ``m ← beta1·m + (1 - beta1)·Δ``.
The three algorithms differ only in ``v`` (:meth:`FedOpt.second_moment`).
The moments are state: one strategy object serves one run.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping

import numpy as np

from fogline.errors import ConfigError
from fogline.federated.strategy._base import Strategy, Vector
from fogline.federated.strategy._weights import Weights
from fogline.federated.strategy.fedavg import weighted_mean

__all__ = ["FedOpt"]


class FedOpt(Strategy):
    """Base of FedAdam, FedYogi and FedAdagrad: an adaptive optimizer on the pseudo-gradient."""

    def __init__(
        self,
        *,
        eta: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        fraction: float = 1.0,
        min_clients: int = 2,
        evaluate_fn: Callable[[int, Weights], Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__(fraction=fraction, min_clients=min_clients, evaluate_fn=evaluate_fn)
        name = type(self).__name__
        if not eta > 0:
            raise ConfigError(f"{name}: eta must be > 0, not {eta}")
        if not 0 <= beta1 < 1 or not 0 <= beta2 < 1:
            raise ConfigError(f"{name}: beta1 and beta2 must be in [0, 1), not {beta1}, {beta2}")
        if not tau > 0:
            raise ConfigError(f"{name}: tau must be > 0, not {tau}")
        self.eta, self.beta1, self.beta2, self.tau = (
            float(eta),
            float(beta1),
            float(beta2),
            float(tau),
        )
        self.m: Vector | None = None
        self.v: Vector | None = None

    @abstractmethod
    def second_moment(self, v: Vector, delta: Vector) -> Vector:
        """The next second moment from the last one and the pseudo-gradient."""

    def combine(self, current: Vector, updates: Vector, examples: Vector) -> Vector:
        delta = weighted_mean(updates, examples) - current
        if self.m is None or self.v is None or self.m.shape != delta.shape:
            if self.m is not None:
                raise ConfigError(
                    f"{type(self).__name__}: the model changed size ({self.m.size} -> {delta.size}) "
                    "during a run"
                )
            self.m = np.zeros_like(delta)
            self.v = np.full_like(delta, self.tau**2)
        self.m = self.beta1 * self.m + (1 - self.beta1) * delta
        self.v = self.second_moment(self.v, delta)
        result: Vector = current + self.eta * self.m / (np.sqrt(self.v) + self.tau)
        return result

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eta={self.eta}, beta1={self.beta1}, "
            f"beta2={self.beta2}, tau={self.tau})"
        )
