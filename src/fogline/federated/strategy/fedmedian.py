"""FedMedian (Yin et al. 2018): the coordinate-wise median of the clients' weights."""

from __future__ import annotations

import numpy as np

from fogline.federated.strategy._base import Strategy, Vector

__all__ = ["FedMedian"]


class FedMedian(Strategy):
    """Each coordinate of the new weights is the median of the updates' (examples are ignored).

    >>> from fogline.federated.strategy import Update, Weights
    >>> ups = [Update(c, Weights({"w": np.array([v])}), 1) for c, v in zip("abc", [1.0, 2.0, 90.0])]
    >>> FedMedian().aggregate(1, Weights({"w": np.zeros(1)}), ups).weights["w"]
    array([2.])
    """

    name = "fedmedian"

    def combine(self, current: Vector, updates: Vector, examples: Vector) -> Vector:
        result: Vector = np.median(updates, axis=0)
        return result
