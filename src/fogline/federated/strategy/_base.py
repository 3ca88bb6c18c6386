"""The :class:`Strategy` template: which clients train in a round, and how their updates combine.

A strategy is plain, synchronous computation on numpy arrays: the round
code (over the broker, or in one process for a simulation) calls
:meth:`Strategy.configure` to sample clients, collects their updates and
calls :meth:`Strategy.aggregate`. Every strategy shares the template's
checks (names, shapes, dtypes, finite values, one update per client, the
strategy's bound on the number of updates); an algorithm implements only
:meth:`Strategy.combine` on flat float64 vectors, and may say its bound in
:meth:`Strategy.bound`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from fogline.errors import ConfigError, ItemError
from fogline.federated.strategy._weights import Update, Weights

__all__ = ["Aggregate", "Bound", "Instruction", "Strategy"]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Instruction:
    """One sampled client and the configuration it trains with this round."""

    client: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Bound:
    """The fewest updates a strategy aggregates (``minimum``) and the rule, in words (``rule``)."""

    minimum: int
    rule: str


@dataclass(frozen=True)
class Aggregate:
    """The result of a round: the new global weights, whose updates went in, and which were refused."""

    weights: Weights
    used: tuple[str, ...]
    refused: tuple[ItemError, ...] = ()


class Strategy(ABC):
    """Template for a federated strategy; subclasses implement :meth:`combine`.

    ``fraction`` of the available clients (at least ``min_clients``) are
    sampled each round. ``evaluate_fn``, when given, is called by
    :meth:`evaluate` on the new global weights (server-side evaluation).
    """

    #: The registry name (``fogline fl --strategy NAME``).
    name: ClassVar[str]

    def __init__(
        self,
        *,
        fraction: float = 1.0,
        min_clients: int = 2,
        evaluate_fn: Callable[[int, Weights], Mapping[str, float]] | None = None,
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"{type(self).__name__}: fraction must be in (0, 1], not {fraction}")
        if isinstance(min_clients, bool) or not isinstance(min_clients, int) or min_clients < 1:
            raise ConfigError(
                f"{type(self).__name__}: min_clients must be >= 1, not {min_clients!r}"
            )
        self.fraction = fraction
        self.min_clients = min_clients
        self.evaluate_fn = evaluate_fn

    # -- what an algorithm provides -------------------------------------------------------

    @abstractmethod
    def combine(self, current: Vector, updates: Vector, examples: Vector) -> Vector:
        """The new global weights from ``current`` (shape ``(d,)``) and the updates' new
        weights (shape ``(n, d)``), each trained on ``examples[i]`` examples."""

    def bound(self, n: int) -> Bound:
        """The fewest updates this strategy aggregates, given ``n`` (default: one)."""
        return Bound(1, "n >= 1")

    def client_config(self, round: int) -> dict[str, Any]:
        """The configuration each sampled client trains with (default: the round number)."""
        return {"round": round}

    def evaluate(self, round: int, weights: Weights) -> Mapping[str, float] | None:
        """Server-side metrics of the global weights after ``round``, or None (the default)."""
        return None if self.evaluate_fn is None else self.evaluate_fn(round, weights)

    # -- the template ---------------------------------------------------------------------

    def configure(
        self, round: int, clients: Sequence[str], rng: np.random.Generator
    ) -> list[Instruction]:
        """Sample this round's clients from ``clients``: ``ceil(fraction * n)``, at least
        ``min_clients``, chosen by ``rng`` (the same seed gives the same choice)."""
        available = sorted(set(clients))
        if len(available) < self.min_clients:
            raise ConfigError(
                f"{type(self).__name__}: {len(available)} clients available, "
                f"min_clients is {self.min_clients}"
            )
        k = max(self.min_clients, math.ceil(self.fraction * len(available)))
        picked = rng.choice(len(available), size=k, replace=False)
        config = self.client_config(round)
        return [Instruction(available[i], dict(config)) for i in sorted(picked.tolist())]

    def check(self, current: Weights, update: Update) -> None:
        """Raise :class:`~fogline.errors.ItemError` naming the client and the tensor when
        ``update`` does not fit ``current`` (names, shapes, dtypes) or is not finite."""
        where = f"client {update.client!r}"
        if list(update.weights) != list(current):
            raise ItemError(
                f"tensors {list(update.weights)} do not match the model's {list(current)}", where
            )
        for name, want in current.items():
            got = update.weights[name]
            if got.shape != want.shape:
                raise ItemError(
                    f"tensor {name!r} has shape {got.shape}, expected {want.shape}", where
                )
            if got.dtype != want.dtype:
                raise ItemError(
                    f"tensor {name!r} has dtype {got.dtype}, expected {want.dtype}", where
                )
            if not np.isfinite(got).all():
                raise ItemError(f"tensor {name!r} has NaN or Inf values", where)

    def aggregate(self, round: int, current: Weights, updates: Sequence[Update]) -> Aggregate:
        """The new global weights from the round's ``updates``.

        An update that fails :meth:`check`, or a second one from the same
        client, is left out and returned in ``refused``; the others are
        combined if there are still enough of them for the strategy's bound,
        otherwise :class:`~fogline.errors.ConfigError` says the bound.
        """
        good: list[Update] = []
        refused: list[ItemError] = []
        seen: set[str] = set()
        for update in updates:
            try:
                if update.client in seen:
                    raise ItemError("sent a second update this round", f"client {update.client!r}")
                seen.add(update.client)
                self.check(current, update)
            except ItemError as exc:
                refused.append(exc)
            else:
                good.append(update)
        n = len(good)
        bound = self.bound(n)
        if n < bound.minimum:
            raise ConfigError(
                f"{self!r} needs {bound.rule}, i.e. at least {bound.minimum} updates; "
                f"got n = {n} (round {round}, {len(refused)} refused)"
            )
        stacked = np.stack([u.weights.vector() for u in good])
        examples = np.array([u.num_examples for u in good], dtype=np.float64)
        combined = self.combine(current.vector(), stacked, examples)
        return Aggregate(current.like(combined), tuple(u.client for u in good), tuple(refused))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
