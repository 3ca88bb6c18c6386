"""Trimmed mean (Yin et al. 2018): per coordinate, drop the ``beta`` fraction at each end and average."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from fogline.errors import ConfigError
from fogline.federated.strategy._base import Bound, Strategy, Vector
from fogline.federated.strategy._weights import Weights

__all__ = ["TrimmedMean"]


class TrimmedMean(Strategy):
    """Coordinate-wise mean of the updates after trimming ``k = floor(beta·n)`` from each side.

    It refuses to run unless at least one update is trimmed from each side
    and one is left (``floor(beta·n) >= 1`` and ``n > 2·floor(beta·n)``):
    with nothing trimmed it would be a plain mean, with no robustness.

    >>> from fogline.federated.strategy import Update, Weights
    >>> ups = [Update(str(i), Weights({"w": np.array([float(v)])}), 1) for i, v in enumerate([-50.0, 1, 2, 3, 99])]
    >>> TrimmedMean(beta=0.2).aggregate(1, Weights({"w": np.zeros(1)}), ups).weights["w"]
    array([2.])
    """

    name = "trimmed-mean"

    def __init__(
        self,
        *,
        beta: float = 0.2,
        fraction: float = 1.0,
        min_clients: int = 2,
        evaluate_fn: Callable[[int, Weights], Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__(fraction=fraction, min_clients=min_clients, evaluate_fn=evaluate_fn)
        if not 0 < beta < 0.5:
            raise ConfigError(f"TrimmedMean: beta must be in (0, 0.5), not {beta}")
        self.beta = float(beta)

    def trimmed(self, n: int) -> int:
        """How many updates are trimmed from each side when there are ``n``."""
        return math.floor(self.beta * n)

    def bound(self, n: int) -> Bound:
        minimum = next(m for m in range(1, 10**6) if 1 <= self.trimmed(m) < m / 2)
        return Bound(minimum, f"floor(beta*n) >= 1 and n > 2*floor(beta*n) (beta = {self.beta})")

    def combine(self, current: Vector, updates: Vector, examples: Vector) -> Vector:
        k = self.trimmed(len(updates))
        ordered = np.sort(updates, axis=0)
        result: Vector = ordered[k : len(updates) - k].mean(axis=0)
        return result

    def __repr__(self) -> str:
        return f"TrimmedMean(beta={self.beta})"
