"""Scores to decisions: ``classify`` (class scores → label) and ``anomaly`` (score → flag).

Both read one model output per item and write plain python values into
``item.result``. Both are cheap per item: a (10,) score vector costs a few
microseconds, because everything past the first numpy reduction is done on
python scalars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import model_validator

from fogline.errors import ConfigError, ItemError
from fogline.model import Signature
from fogline.pipeline._base import PostprocessSpec, Spec, Stage
from fogline.pipeline._item import Item
from fogline.pipeline.stages._common import (
    Finite,
    Labels,
    PositiveInt,
    label_of,
    output_of,
    per_item,
    pick_output,
)

_DECIMALS = 6


def _known_size(dims: tuple[int | None, ...]) -> int | None:
    return math.prod(d for d in dims if d is not None) if None not in dims else None


class ClassifySpec(PostprocessSpec):
    """Class scores → ``label``, ``score``, ``top_k`` [{label, score}] and ``confident``.

    ``softmax`` turns logits into probabilities first (turn it off when the
    model outputs probabilities); ``labels`` is a list or a text file with
    one label per line (default: the class index as a string); ``confident``
    is ``score >= min_score``.

    >>> from fogline.model import TensorSpec
    >>> sig = Signature((), (TensorSpec("logits", "float32", ("batch", 3)),))
    >>> stage = ClassifySpec(type="classify", labels=["cat", "dog", "owl"]).build(sig)
    >>> item = Item("cam", 0, 0.0, None, outputs={"logits": np.array([0.0, 3.0, 0.0])})
    >>> result = stage(item).result
    >>> result["label"], result["score"], result["confident"]
    ('dog', 0.909443, True)
    """

    type: Literal["classify"]
    output: str | None = None
    softmax: bool = True
    top_k: PositiveInt = 1
    labels: Labels = None
    min_score: Finite = 0.0

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        spec = pick_output(outputs, self.output, "classify")
        dims = per_item(spec)
        if not dims or sum(1 for d in dims if d != 1) > 1:
            raise ConfigError(
                f"classify needs one vector of class scores per item, but output "
                f"{spec.name!r} has shape {spec.describe_shape()}"
            )
        classes = _known_size(dims)
        if classes is not None:
            if self.labels is not None and len(self.labels) != classes:
                raise ConfigError(
                    f"classify has {len(self.labels)} labels, but output {spec.name!r} "
                    f"scores {classes} classes"
                )
            if self.top_k > classes:
                raise ConfigError(f"classify top_k {self.top_k} is more than {classes} classes")
        return produced | {"label", "score", "top_k", "confident"}

    def build(self, outputs: Signature) -> Stage:
        name = pick_output(outputs, self.output, "classify").name
        return _Classify(name, self.softmax, self.top_k, self.labels, self.min_score)


@dataclass(frozen=True, slots=True)
class _Classify:
    name: str
    softmax: bool
    top_k: int
    labels: tuple[str, ...] | None
    min_score: float

    def __call__(self, item: Item) -> Item:
        scores = output_of(item, self.name, "classify").reshape(-1)
        if scores.size == 0 or scores.dtype.kind not in "biuf":
            raise ItemError(f"classify: output {self.name!r} holds no scores", item.position)
        best, values = _best(scores, self.top_k)
        if self.softmax:  # only the top values and the normalizing sum are needed
            peak = values[0]
            if scores.size <= _SMALL:
                total = sum(math.exp(v - peak) for v in scores.tolist())
            else:
                total = float(np.exp(scores - peak).sum())
            values = [math.exp(v - peak) / total for v in values]
        if not math.isfinite(values[0]):
            raise ItemError(f"classify: output {self.name!r} is not finite", item.position)
        top = [
            {"label": label_of(self.labels, i), "score": round(s, _DECIMALS)}
            for i, s in zip(best, values, strict=True)
        ]
        result = item.result
        result["label"] = top[0]["label"]
        result["score"] = top[0]["score"]
        result["top_k"] = top
        result["confident"] = values[0] >= self.min_score
        return item


#: Up to this many classes, python floats beat numpy's per-call overhead.
_SMALL = 64


def _best(scores: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """Indices and values of the ``k`` highest scores, highest first."""
    if scores.size <= _SMALL:
        values = scores.tolist()
        if k == 1:
            best = [values.index(max(values))]
        else:
            best = sorted(range(len(values)), key=values.__getitem__, reverse=True)[:k]
        return best, [values[i] for i in best]
    if k == 1:
        best = [int(scores.argmax())]
    else:
        k = min(k, scores.size)
        picked = np.argpartition(-scores, k - 1)[:k]
        best = picked[np.argsort(-scores[picked], kind="stable")].tolist()
    return best, scores[best].tolist()


class Baseline(Spec):
    """Learn the threshold: ``mean + k * std`` of each source's first ``items`` scores."""

    items: PositiveInt = 200
    k: Finite = 4.0


class AnomalySpec(PostprocessSpec):
    """A model output → ``score`` and ``anomaly`` (``score > threshold``).

    The score is the output itself (``reduce: none``: one value per item)
    or its ``mean`` or ``max`` (a per-sample reconstruction error, say). The
    threshold is fixed, or learned per source by ``baseline`` from the first
    ``items`` scores, which are taken to be normal: while learning,
    ``anomaly`` is false and ``baseline`` is ``"learning"``, then
    ``"ready"``. ``threshold`` is written too (null while learning).

    >>> from fogline.model import TensorSpec
    >>> sig = Signature((), (TensorSpec("error", "float32", ("batch", 1)),))
    >>> stage = AnomalySpec(type="anomaly", threshold=0.5).build(sig)
    >>> stage(Item("s", 0, 0.0, None, outputs={"error": np.array([0.75])})).result
    {'score': 0.75, 'anomaly': True, 'threshold': 0.5}
    """

    type: Literal["anomaly"]
    output: str | None = None
    reduce: Literal["none", "mean", "max"] = "none"
    threshold: Finite | None = None
    baseline: Baseline | None = None

    @model_validator(mode="after")
    def _one(self) -> AnomalySpec:
        if (self.threshold is None) == (self.baseline is None):
            raise ValueError("anomaly takes either `threshold` or `baseline: {items, k}`")
        return self

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        spec = pick_output(outputs, self.output, "anomaly")
        size = _known_size(per_item(spec))
        if self.reduce == "none" and size is not None and size != 1:
            raise ConfigError(
                f"anomaly: output {spec.name!r} has {size} values per item "
                f"({spec.describe_shape()}); set `reduce: mean` or `reduce: max`"
            )
        keys = {"score", "anomaly", "threshold"}
        if self.baseline is not None:
            keys.add("baseline")
        return produced | keys

    def build(self, outputs: Signature) -> Stage:
        name = pick_output(outputs, self.output, "anomaly").name
        if self.baseline is not None:
            return _Anomaly(name, self.reduce, None, self.baseline.items, self.baseline.k)
        return _Anomaly(name, self.reduce, self.threshold)


@dataclass(slots=True)
class _Learner:
    """Welford's running mean and variance of one source's first scores."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    threshold: float | None = None


@dataclass(slots=True)
class _Anomaly:
    name: str
    reduce: str
    threshold: float | None
    items: int = 0
    k: float = 0.0
    learners: dict[str, _Learner] = field(default_factory=dict)

    def _score(self, item: Item) -> float:
        values = output_of(item, self.name, "anomaly")
        if values.size == 0 or (self.reduce == "none" and values.size != 1):
            raise ItemError(
                f"anomaly: output {self.name!r} has shape {list(values.shape)}, "
                "not one value (set `reduce`)",
                item.position,
            )
        if self.reduce == "max":
            score = float(values.max())
        elif self.reduce == "mean":
            score = float(values.mean())
        else:
            score = float(values.reshape(-1)[0])
        if not math.isfinite(score):
            raise ItemError(f"anomaly: score from {self.name!r} is {score}", item.position)
        return score

    def __call__(self, item: Item) -> Item:
        score = self._score(item)
        result = item.result
        result["score"] = round(score, _DECIMALS)
        threshold = self.threshold
        if threshold is None:
            learner = self.learners.get(item.source)
            if learner is None:
                learner = self.learners[item.source] = _Learner()
            if learner.threshold is None:
                learner.count += 1
                delta = score - learner.mean
                learner.mean += delta / learner.count
                learner.m2 += delta * (score - learner.mean)
                result["anomaly"] = False
                result["threshold"] = None
                result["baseline"] = "learning"
                if learner.count >= self.items:
                    std = math.sqrt(learner.m2 / max(1, learner.count - 1))
                    learner.threshold = learner.mean + self.k * std
                return item
            threshold = learner.threshold
            result["baseline"] = "ready"
        result["anomaly"] = score > threshold
        result["threshold"] = round(threshold, _DECIMALS)
        return item
