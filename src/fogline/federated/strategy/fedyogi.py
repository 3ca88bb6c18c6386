"""FedYogi (Reddi et al. 2021): Yogi's additive, sign-controlled second moment on the server."""

from __future__ import annotations

import numpy as np

from fogline.federated.strategy._base import Vector
from fogline.federated.strategy._fedopt import FedOpt

__all__ = ["FedYogi"]


class FedYogi(FedOpt):
    """``v ← v - (1 - beta2)·Δ²·sign(v - Δ²)``: ``v`` moves towards ``Δ²`` by a bounded step.

    >>> FedYogi(eta=0.01)
    FedYogi(eta=0.01, beta1=0.9, beta2=0.99, tau=0.001)
    """

    name = "fedyogi"

    def second_moment(self, v: Vector, delta: Vector) -> Vector:
        square = delta**2
        result: Vector = v - (1 - self.beta2) * square * np.sign(v - square)
        return result
