"""What the architecture search found: every candidate, the Pareto front, the choice.

Plain values, no PyTorch: the report reads them, and so does a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fogline.optimize._nas_family import Knobs


@dataclass
class Candidate:
    """One network of the family: its knobs and what it measured here.

    >>> c = Candidate({"width": 16, "depth": 1}, latency_ms=0.03, metric=98.5)
    >>> c.label, c.dominates(Candidate({"width": 32, "depth": 2}, latency_ms=0.2, metric=98.0))
    ('width=16 depth=1', True)
    """

    knobs: Knobs
    latency_ms: float = 0.0
    p99_ms: float = 0.0
    metric: float | None = None
    epochs: int = 0
    params: int = 0
    size_bytes: int = 0
    seconds: float = 0.0
    status: str = "ok"
    error: str | None = None
    on_front: bool = False
    within_budget: bool = False
    chosen: bool = False

    @property
    def label(self) -> str:
        return " ".join(f"{k}={_number(v)}" for k, v in self.knobs.items())

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.metric is not None

    def dominates(self, other: Candidate) -> bool:
        """At least as fast and as good as ``other``, and strictly better in one of the two."""
        if not (self.ok and other.ok):
            return False
        assert self.metric is not None and other.metric is not None
        no_worse = self.latency_ms <= other.latency_ms and self.metric >= other.metric
        better = self.latency_ms < other.latency_ms or self.metric > other.metric
        return no_worse and better

    def to_dict(self) -> dict[str, Any]:
        return {
            "knobs": dict(self.knobs),
            "latency_ms": {"p50": round(self.latency_ms, 4), "p99": round(self.p99_ms, 4)},
            "metric": None if self.metric is None else round(self.metric, 4),
            "epochs": self.epochs,
            "params": self.params,
            "size_bytes": self.size_bytes,
            "seconds": round(self.seconds, 2),
            "status": self.status,
            "error": self.error,
            "on_front": self.on_front,
            "within_budget": self.within_budget,
            "chosen": self.chosen,
        }


def _number(value: int | float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other one dominates (faster and at least as good), fastest first.

    >>> a = Candidate({"w": 1}, latency_ms=1.0, metric=90.0)
    >>> b = Candidate({"w": 2}, latency_ms=2.0, metric=95.0)
    >>> c = Candidate({"w": 3}, latency_ms=3.0, metric=94.0)  # slower and worse than b
    >>> [x.label for x in pareto_front([a, b, c])]
    ['w=1', 'w=2']
    """
    ok = [c for c in candidates if c.ok]
    front = [c for c in ok if not any(other.dominates(c) for other in ok)]
    return sorted(front, key=lambda c: c.latency_ms)


@dataclass
class NasResult:
    """The search: its settings, every candidate in the order tried, and the chosen one.

    >>> result = NasResult("f", "accuracy", 1.0, 8, 2, 5, 40, 2, False, 0, [
    ...     Candidate({"w": 1}, latency_ms=0.5, metric=90.0),
    ...     Candidate({"w": 2}, latency_ms=2.0, metric=95.0)])
    >>> result.decide().label, [c.label for c in result.front]  # w=2 is over the 1 ms budget
    ('w=1', ['w=1', 'w=2'])
    """

    family: str
    metric: str
    budget_ms: float
    batch: int
    threads: int | None
    epochs: int
    final_epochs: int
    grid_size: int
    sampled: bool
    seed: int
    candidates: list[Candidate] = field(default_factory=list)
    search_seconds: float = 0.0
    #: Items the candidates were trained on, and held out of the training data to rank them on.
    train_items: int = 0
    val_items: int = 0
    #: The chosen network's metric on the eval data (unseen by the search) after the full schedule.
    final_metric: float | None = None

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.chosen), None)

    @property
    def front(self) -> list[Candidate]:
        return sorted((c for c in self.candidates if c.on_front), key=lambda c: c.latency_ms)

    def decide(self) -> Candidate | None:
        """Mark the front and the budget, and choose: the best metric inside the budget.

        A tie goes to the faster one; ``None`` when no candidate is inside the budget.
        """
        front = pareto_front(self.candidates)
        inside = []
        for c in self.candidates:
            c.on_front = any(c is f for f in front)
            c.within_budget = c.ok and c.latency_ms <= self.budget_ms
            c.chosen = False
            if c.within_budget:
                inside.append(c)
        if not inside:
            return None
        best = max(inside, key=lambda c: (c.metric, -c.latency_ms))
        best.chosen = True
        return best

    def fastest(self) -> Candidate | None:
        ok = [c for c in self.candidates if c.ok]
        return min(ok, key=lambda c: c.latency_ms) if ok else None

    def describe(self) -> str:
        """``"32 of 32 candidates (the whole grid), 5 epochs each, batch 8"``."""
        how = "a seeded sample of the grid" if self.sampled else "the whole grid"
        tried = len(self.candidates)
        return (
            f"{tried} of {self.grid_size} candidates ({how}, seed {self.seed}), "
            f"{self.epochs} epoch(s) each, latency p50 at batch {self.batch}"
            + (f", {self.threads} thread(s)" if self.threads else "")
            + (f", ranked on {self.val_items} validation items" if self.val_items else "")
        )

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "family": self.family,
            "metric": self.metric,
            "latency_budget_ms": self.budget_ms,
            "batch": self.batch,
            "threads": self.threads,
            "epochs": self.epochs,
            "final_epochs": self.final_epochs,
            "grid_size": self.grid_size,
            "sampled": self.sampled,
            "seed": self.seed,
            "search_seconds": round(self.search_seconds, 1),
            "train_items": self.train_items,
            "val_items": self.val_items,
            "chosen": None if chosen is None else dict(chosen.knobs),
            "final_metric": None if self.final_metric is None else round(self.final_metric, 4),
            "front": [dict(c.knobs) for c in self.front],
            "candidates": [c.to_dict() for c in self.candidates],
        }
