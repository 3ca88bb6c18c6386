"""Measuring one variant: speed, energy per inference, memory, accuracy and agreement with FP32."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fogline.data import Dataset
from fogline.model import Engine, measure


@dataclass(frozen=True)
class Agreement:
    """How close a variant's outputs are to the FP32 reference on the same inputs.

    ``top1`` is the share (in %) of rows whose argmax over the last axis of the
    first output matches; ``max_abs``/``mean_abs`` are over all float outputs;
    ``max_rel`` is the largest of each output's max abs error divided by the
    range of that output in FP32 (so scores in 0..1 and boxes in pixels compare).
    """

    top1: float
    max_abs: float
    mean_abs: float
    max_rel: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return {
            "top1": round(self.top1, 3),
            "max_abs": float(f"{self.max_abs:.6g}"),
            "mean_abs": float(f"{self.mean_abs:.6g}"),
            "max_rel": float(f"{self.max_rel:.6g}"),
        }


#: Max error relative to each output's range allowed when outputs are not class scores.
DEFAULT_REL_ERROR = 0.02


@dataclass(frozen=True)
class Budget:
    """How far a variant may stray from FP32 and still be chosen.

    ``criterion`` is ``accuracy`` (labels exist), ``top1`` (agreement of the
    argmax of a [batch, classes] output) or ``abs`` (outputs that are not class
    scores, e.g. detector scores and boxes: ``max_rel_error``, and
    ``max_abs_error`` when given, apply).
    """

    criterion: str
    max_drop: float
    max_abs_error: float | None
    max_rel_error: float | None = None

    @classmethod
    def decide(
        cls,
        max_drop: float,
        max_abs_error: float | None,
        has_labels: bool,
        reference: Mapping[str, np.ndarray],
    ) -> Budget:
        if has_labels:
            return cls("accuracy", max_drop, max_abs_error)
        first = _first_float(reference)
        if first is not None and first.ndim == 2:
            return cls("top1", max_drop, max_abs_error)
        return cls("abs", max_drop, max_abs_error, DEFAULT_REL_ERROR)


def run_dataset(engine: Engine, data: Dataset) -> dict[str, np.ndarray]:
    """Outputs of ``engine`` over every batch of ``data``, concatenated."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in data.batches:
        for name, value in engine.run(batch).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _first_float(outputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
    for value in outputs.values():
        if value.dtype.kind == "f" and value.ndim >= 2:
            return value
    return None


def agreement(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> Agreement:
    ref_values = list(reference.values())
    out_values = list(outputs.values())
    # (|difference|, FP32 range) of every non-empty float output both sides have
    compared = [
        (np.abs(o.astype(np.float64) - r.astype(np.float64)), float(r.max() - r.min()))
        for r, o in zip(ref_values, out_values, strict=False)
        if r.dtype.kind == "f" and r.shape == o.shape and r.size
    ]
    max_abs = max((float(d.max()) for d, _ in compared), default=0.0)
    mean_abs = float(np.mean([d.mean() for d, _ in compared])) if compared else 0.0
    max_rel = max(
        (float(d.max()) / rng if rng > 0 else float(d.max() > 0) for d, rng in compared),
        default=0.0,
    )
    ref, out = _first_float(reference), _first_float(outputs)
    if ref is None or out is None or ref.shape != out.shape:
        # Integer outputs (labels) agree when they are equal.
        pairs = [(r, o) for r, o in zip(ref_values, out_values, strict=False) if r.shape == o.shape]
        top1 = 100.0 * float(np.mean(pairs[0][0] == pairs[0][1])) if pairs else 0.0
    else:
        top1 = 100.0 * float(np.mean(ref.argmax(-1) == out.argmax(-1)))
    return Agreement(top1, max_abs, mean_abs, max_rel)


def accuracy(outputs: Mapping[str, np.ndarray], labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy in % when labels exist and the model classifies (a [N, C] output)."""
    if labels is None:
        return None
    scores = _first_float(outputs)
    if scores is not None and scores.ndim == 2 and len(scores) == len(labels):
        return 100.0 * float(np.mean(scores.argmax(1) == labels))
    for value in outputs.values():  # a model that emits the label itself
        if value.dtype.kind in "iu" and value.shape == labels.shape:
            return 100.0 * float(np.mean(value == labels))
    return None


def measure_variant(
    engine: Engine,
    eval_data: Dataset,
    *,
    batches: tuple[int, ...],
    duration_s: float,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Latency and joules per item at each batch size, throughput, and outputs on ``eval_data``.

    ``energy`` holds ``joules_per_item`` by batch and how they were obtained
    (``measured``, ``source``, ``label``, ``note``: see :class:`fogline.power.Energy`).
    """
    latency: dict[str, Any] = {}
    throughput: dict[str, float] = {}
    energy: dict[str, Any] = {}
    outputs = run_dataset(engine, eval_data)
    for batch in batches:
        feeds = feeds_of_size(eval_data, batch, engine)
        stats = measure(engine, feeds, batch=batch, duration_s=duration_s)
        latency[f"batch{batch}"] = {"p50": round(stats.p50, 4), "p99": round(stats.p99, 4)}
        throughput[f"batch{batch}"] = round(stats.throughput, 1)
        if stats.energy is not None and stats.joules_per_item is not None:
            per_item = energy.setdefault("joules_per_item", {})
            per_item[f"batch{batch}"] = float(f"{stats.joules_per_item:.6g}")
            figure = stats.energy.to_dict()
            energy.update({key: figure[key] for key in ("measured", "source", "label", "note")})
    return {"latency_ms": latency, "throughput": throughput, "energy": energy}, outputs


def feeds_of_size(data: Dataset, batch: int, engine: Engine) -> dict[str, np.ndarray]:
    """``batch`` real items from ``data`` (repeated if it holds fewer)."""
    first = data.batches[0]
    feeds: dict[str, np.ndarray] = {}
    for name in first:
        joined = np.concatenate([b[name] for b in data.batches])
        reps = -(-batch // len(joined))
        feeds[name] = np.ascontiguousarray(np.concatenate([joined] * reps)[:batch])
    for spec in engine.signature.inputs:
        if spec.name not in feeds:
            return engine.signature.sample_feeds(batch)
    return feeds
