"""The gate a fine-tuned candidate must pass before it may replace the model it came from.

Both models run in ONNX Runtime on the same two labelled sets: the held-out
new data (the candidate must beat the current model there by at least
``min_gain``) and the original evaluation data (it may lose at most
``max_forgetting`` there). Accuracies and margins are fractions (0.02 is two
points).

>>> verdict = judge(holdout=(0.80, 0.90), original=(0.99, 0.985), options=GateOptions())
>>> verdict.passed, round(verdict.gain, 3), round(verdict.forgetting, 3)
(True, 0.1, 0.005)
>>> judge((0.80, 0.81), (0.99, 0.99), GateOptions()).reason
'accuracy on the held-out new data 81.00% is 1.00 points above the current 80.00%; the gate asks for at least 2.00'
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fogline.data import Dataset
from fogline.errors import ConfigError
from fogline.model import ModelReader, open_model

__all__ = ["GateOptions", "GateVerdict", "accuracy", "judge", "run_gate"]


@dataclass(frozen=True)
class GateOptions:
    """The margins: ``min_gain`` on the new data, ``max_forgetting`` on the original (fractions)."""

    min_gain: float = 0.02
    max_forgetting: float = 0.01
    #: The fewest held-out new items the gain may rest on (one item in 20 is 5 points).
    min_items: int = 20

    def __post_init__(self) -> None:
        for key in ("min_gain", "max_forgetting"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 1):
                raise ConfigError(
                    f"{key} is a fraction of accuracy between 0 and 1 (0.02 is two points), "
                    f"not {value!r}"
                )
        if not (isinstance(self.min_items, int) and self.min_items >= 1):
            raise ConfigError(f"min_items is a number of items, at least 1, not {self.min_items!r}")


@dataclass(frozen=True)
class GateVerdict:
    """What the gate measured and decided; ``(current, candidate)`` accuracy on each set."""

    passed: bool
    reason: str
    holdout: tuple[float, float]
    original: tuple[float, float]
    options: GateOptions

    @property
    def gain(self) -> float:
        return self.holdout[1] - self.holdout[0]

    @property
    def forgetting(self) -> float:
        return self.original[0] - self.original[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "holdout": {"current": self.holdout[0], "candidate": self.holdout[1]},
            "original": {"current": self.original[0], "candidate": self.original[1]},
            "gain": self.gain,
            "forgetting": self.forgetting,
            **asdict(self.options),
        }


def judge(
    holdout: tuple[float, float], original: tuple[float, float], options: GateOptions
) -> GateVerdict:
    """The verdict on figures already measured (``(current, candidate)`` accuracies).

    A figure that is not a number (an empty set measures NaN) fails the gate:

    >>> judge((float("nan"), float("nan")), (0.99, 0.99), GateOptions()).passed
    False
    """
    figures = (*holdout, *original)
    if not all(isinstance(f, int | float) and math.isfinite(f) for f in figures):
        reason = f"the accuracies could not all be measured ({', '.join(map(str, figures))})"
        return GateVerdict(False, reason, holdout, original, options)
    gain, forgetting = holdout[1] - holdout[0], original[0] - original[1]
    new = (
        f"accuracy on the held-out new data {holdout[1]:.2%} is {abs(gain) * 100:.2f} points "
        f"{'above' if gain >= 0 else 'below'} the current {holdout[0]:.2%}"
    )
    old = (
        f"on the original data {original[1]:.2%} against {original[0]:.2%} "
        f"({forgetting * 100:+.2f} points forgotten"
    )
    if gain < options.min_gain - 1e-12:
        reason = f"{new}; the gate asks for at least {options.min_gain * 100:.2f}"
        return GateVerdict(False, reason, holdout, original, options)
    if forgetting > options.max_forgetting + 1e-12:
        reason = f"{old}, the gate allows at most {options.max_forgetting * 100:.2f})"
        return GateVerdict(False, reason, holdout, original, options)
    reason = (
        f"{new} (at least {options.min_gain * 100:.2f} asked); {old}, at most "
        f"{options.max_forgetting * 100:.2f} allowed)"
    )
    return GateVerdict(True, reason, holdout, original, options)


def accuracy(
    model: Path,
    data: Dataset,
    labels: npt.NDArray[np.int64],
    threads: int | None = None,
    read: ModelReader | None = None,
) -> float:
    """Top-1 accuracy of the model folder (or file) ``model`` on ``data``, in ONNX Runtime."""
    opened = open_model(model, backend="onnxruntime", threads=threads, read=read)
    try:
        output = opened.engine.signature.output_names[0]
        predicted = np.concatenate(
            [np.argmax(opened.engine.run(batch)[output], axis=-1) for batch in data.batches]
        )
    finally:
        opened.engine.close()
    return float(np.mean(predicted.reshape(-1) == labels))


def run_gate(
    current: Path,
    candidate: Path,
    holdout: tuple[Dataset, npt.NDArray[np.int64]],
    original: tuple[Dataset, npt.NDArray[np.int64]],
    options: GateOptions,
    *,
    threads: int | None = None,
    read: ModelReader | None = None,
) -> GateVerdict:
    """Measure both models on both sets and judge the candidate (``read``: sealed files)."""
    return judge(
        (accuracy(current, *holdout, threads, read), accuracy(candidate, *holdout, threads, read)),
        (
            accuracy(current, *original, threads, read),
            accuracy(candidate, *original, threads, read),
        ),
        options,
    )
