"""Krum and Multi-Krum (Blanchard et al. 2017): keep the updates closest to their neighbours.

Each update's score is the sum of its squared distances to its ``n - f - 2``
nearest other updates; with at most ``f`` Byzantine clients among ``n > 2f + 2``,
the lowest score belongs to an update close to the honest ones. Krum takes
that one update; Multi-Krum averages the ``m`` lowest-scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fogline.errors import ConfigError
from fogline.federated.strategy._base import Bound, Strategy, Vector
from fogline.federated.strategy._weights import Weights

__all__ = ["Krum", "MultiKrum", "krum_scores"]


def krum_scores(updates: Vector, f: int) -> Vector:
    """Each row's sum of squared distances to its ``n - f - 2`` nearest other rows.

    >>> krum_scores(np.array([[0.0], [1.0], [2.0], [3.0], [100.0]]), f=1)
    array([5.0000e+00, 2.0000e+00, 2.0000e+00, 5.0000e+00, 1.9013e+04])
    """
    squares = (updates**2).sum(axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2 * updates @ updates.T, 0.0)
    np.fill_diagonal(distances, np.inf)
    closest = len(updates) - f - 2
    result: Vector = np.sort(distances, axis=1)[:, :closest].sum(axis=1)
    return result


class Krum(Strategy):
    """The single update with the lowest Krum score, tolerating ``f`` Byzantine clients.

    >>> from fogline.federated.strategy import Update, Weights
    >>> ups = [Update(str(i), Weights({"w": np.array([float(v)])}), 1) for i, v in enumerate([0.0, 1, 2, 3, 100])]
    >>> Krum(f=1).aggregate(1, Weights({"w": np.zeros(1)}), ups).weights["w"]
    array([1.])
    """

    name = "krum"

    def __init__(
        self,
        *,
        f: int = 1,
        fraction: float = 1.0,
        min_clients: int = 2,
        evaluate_fn: Callable[[int, Weights], Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__(fraction=fraction, min_clients=min_clients, evaluate_fn=evaluate_fn)
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ConfigError(f"{type(self).__name__}: f must be an integer >= 0, not {f!r}")
        self.f = f

    def bound(self, n: int) -> Bound:
        return Bound(2 * self.f + 3, f"n > 2f + 2 = {2 * self.f + 2}")

    def selected(self, updates: Vector) -> list[int]:
        """The rows that go into the aggregate, best first (ties go to the lower index)."""
        return [int(np.argsort(krum_scores(updates, self.f), kind="stable")[0])]

    def combine(self, current: Vector, updates: Vector, examples: Vector) -> Vector:
        result: Vector = updates[self.selected(updates)].mean(axis=0)
        return result

    def __repr__(self) -> str:
        return f"Krum(f={self.f})"


class MultiKrum(Krum):
    """The mean of the ``m`` updates with the lowest Krum scores (``m = n - f`` when not given).

    >>> MultiKrum(f=2, m=5)
    MultiKrum(f=2, m=5)
    """

    name = "multi-krum"

    def __init__(
        self,
        *,
        f: int = 1,
        m: int | None = None,
        fraction: float = 1.0,
        min_clients: int = 2,
        evaluate_fn: Callable[[int, Weights], Mapping[str, float]] | None = None,
    ) -> None:
        super().__init__(f=f, fraction=fraction, min_clients=min_clients, evaluate_fn=evaluate_fn)
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ConfigError(f"MultiKrum: m must be an integer >= 1, not {m!r}")
        self.m = m

    def bound(self, n: int) -> Bound:
        if self.m is None:
            return super().bound(n)
        minimum = max(2 * self.f + 3, self.m)
        return Bound(minimum, f"n > 2f + 2 = {2 * self.f + 2} and n >= m = {self.m}")

    def selected(self, updates: Vector) -> list[int]:
        count = len(updates) - self.f if self.m is None else self.m
        order = np.argsort(krum_scores(updates, self.f), kind="stable")
        return [int(i) for i in order[:count]]

    def __repr__(self) -> str:
        return f"MultiKrum(f={self.f}, m={self.m})"
