"""FedAdagrad (Reddi et al. 2021): Adagrad's accumulated second moment on the server."""

from __future__ import annotations

from fogline.federated.strategy._base import Vector
from fogline.federated.strategy._fedopt import FedOpt

__all__ = ["FedAdagrad"]


class FedAdagrad(FedOpt):
    """``v ← v + Δ²`` (``beta2`` is not used).

    >>> FedAdagrad(eta=0.05).eta
    0.05
    """

    name = "fedadagrad"

    def second_moment(self, v: Vector, delta: Vector) -> Vector:
        result: Vector = v + delta**2
        return result
