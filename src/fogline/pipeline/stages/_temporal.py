"""Steps over time, per source: ``smooth`` (moving mean) and ``debounce`` (k of the last n).

Each keeps a short history per ``item.source``, so two cameras feeding one
pipeline never mix. They read a result key an earlier step wrote, and add
one of their own.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from fogline.errors import ItemError
from fogline.model import Signature
from fogline.pipeline._base import PostprocessSpec, Stage
from fogline.pipeline._item import Item
from fogline.pipeline.stages._common import PositiveInt, _is_number, need


class SmoothSpec(PostprocessSpec):
    """Moving mean of ``result[field]`` over each source's last ``window`` values.

    Writes ``result[field + "_smooth"]``; an item whose value is missing or
    null gets null and leaves the history as it was.

    >>> stage = SmoothSpec(type="smooth", field="score", window=2).build(Signature((), ()))
    >>> [stage(Item("s", i, 0.0, None, result={"score": v})).result["score_smooth"]
    ...  for i, v in enumerate([1.0, 3.0, 5.0])]
    [1.0, 2.0, 4.0]
    """

    type: Literal["smooth"]
    field: str = "score"
    window: PositiveInt = 5

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        need(produced, self.field, "smooth")
        return produced | {self.field + "_smooth"}

    def build(self, outputs: Signature) -> Stage:
        return _Smooth(self.field, self.field + "_smooth", self.window)


@dataclass(slots=True)
class _Smooth:
    field: str
    key: str
    window: int
    history: dict[str, deque[float]] = dataclasses.field(default_factory=dict)

    def __call__(self, item: Item) -> Item:
        value = item.result.get(self.field)
        if value is None:
            item.result[self.key] = None
            return item
        if not (_is_number(value) or isinstance(value, bool)):
            raise ItemError(
                f"smooth: result[{self.field!r}] is not a number: {value!r}", item.position
            )
        past = self.history.get(item.source)
        if past is None:
            past = self.history[item.source] = deque(maxlen=self.window)
        past.append(float(value))
        item.result[self.key] = round(sum(past) / len(past), 6)
        return item


class DebounceSpec(PostprocessSpec):
    """``result[as]`` is true when ``result[field]`` was true in at least ``k`` of the last ``n``.

    Counted per source; before ``n`` items have been seen, the ones seen so
    far count (so the first ``k`` true items can already raise it). A
    missing or null value counts as false.

    >>> stage = DebounceSpec(type="debounce", k=2, n=3).build(Signature((), ()))
    >>> [stage(Item("s", i, 0.0, None, result={"anomaly": v})).result["alarm"]
    ...  for i, v in enumerate([True, False, True, True, False])]
    [False, False, True, True, True]
    """

    model_config = ConfigDict(populate_by_name=True)

    type: Literal["debounce"]
    field: str = "anomaly"
    k: PositiveInt = 3
    n: PositiveInt = 5
    as_: str = Field("alarm", alias="as")

    @model_validator(mode="after")
    def _k_of_n(self) -> DebounceSpec:
        if self.k > self.n:
            raise ValueError(f"debounce needs k <= n, got k={self.k}, n={self.n}")
        return self

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        need(produced, self.field, "debounce")
        return produced | {self.as_}

    def build(self, outputs: Signature) -> Stage:
        return _Debounce(self.field, self.as_, self.k, self.n)


@dataclass(slots=True)
class _Votes:
    recent: deque[bool]
    count: int = 0


@dataclass(slots=True)
class _Debounce:
    field: str
    key: str
    k: int
    n: int
    votes: dict[str, _Votes] = dataclasses.field(default_factory=dict)

    def __call__(self, item: Item) -> Item:
        vote = bool(item.result.get(self.field))
        votes = self.votes.get(item.source)
        if votes is None:
            votes = self.votes[item.source] = _Votes(deque(maxlen=self.n))
        if len(votes.recent) == self.n:
            votes.count -= votes.recent[0]
        votes.recent.append(vote)
        votes.count += vote
        item.result[self.key] = votes.count >= self.k
        return item
