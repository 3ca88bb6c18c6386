"""FedAvg (McMahan et al. 2017): the mean of the clients' weights, weighted by their examples."""

from __future__ import annotations

from fogline.federated.strategy._base import Strategy, Vector

__all__ = ["FedAvg", "weighted_mean"]


def weighted_mean(updates: Vector, examples: Vector) -> Vector:
    """The rows of ``updates`` averaged with weights ``examples``."""
    result: Vector = (examples / examples.sum()) @ updates
    return result


class FedAvg(Strategy):
    """Federated averaging: the new global weights are the examples-weighted mean of the updates.

    >>> import numpy as np
    >>> from fogline.federated.strategy import Update, Weights
    >>> current = Weights({"w": np.zeros(2)})
    >>> updates = [Update("a", Weights({"w": np.array([1.0, 0.0])}), 1),
    ...            Update("b", Weights({"w": np.array([4.0, 3.0])}), 2)]
    >>> FedAvg().aggregate(1, current, updates).weights["w"]
    array([3., 2.])
    """

    name = "fedavg"

    def combine(self, current: Vector, updates: Vector, examples: Vector) -> Vector:
        return weighted_mean(updates, examples)
