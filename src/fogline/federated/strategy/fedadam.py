"""FedAdam (Reddi et al. 2021): Adam's second moment on the server's pseudo-gradient."""

from __future__ import annotations

from fogline.federated.strategy._base import Vector
from fogline.federated.strategy._fedopt import FedOpt

__all__ = ["FedAdam"]


class FedAdam(FedOpt):
    """``v ← beta2·v + (1 - beta2)·Δ²``.

    >>> import numpy as np
    >>> from fogline.federated.strategy import Update, Weights
    >>> s = FedAdam(eta=0.1, beta1=0.0, beta2=0.0, tau=1e-9)
    >>> s.aggregate(1, Weights({"w": np.zeros(1)}), [Update("a", Weights({"w": np.ones(1)}), 1)]).weights["w"]
    array([0.1])
    """

    name = "fedadam"

    def second_moment(self, v: Vector, delta: Vector) -> Vector:
        result: Vector = self.beta2 * v + (1 - self.beta2) * delta**2
        return result
