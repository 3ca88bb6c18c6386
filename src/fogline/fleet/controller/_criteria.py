"""What a wave's devices must show before a rollout goes on: :class:`Criteria`.

Judged on the telemetry the registry holds for the wave (error rate, p99
latency) once its bake is over; see :mod:`fogline.fleet.controller._rollout`
for when. The gates on the model's health (accuracy: live, on the canary set
or estimated; drift alarms) are judged by :mod:`fogline.fleet.controller._model_gates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Criteria(BaseModel):
    """What a wave's devices must show on the new version before the rollout goes on.

    ``require_telemetry`` (the default) makes the bake wait for telemetry on
    the new version from every device of the wave, covering the whole bake;
    without it the bake is a time and the criteria judge whatever arrived.

    >>> Criteria().describe()
    'error rate ≤ 5.0%; telemetry from every device covering the bake'
    >>> Criteria(max_error_rate=None, require_telemetry=False).describe()
    'none (the bake is a time: no telemetry required)'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_error_rate: float | None = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    #: Labelled items live accuracy must rest on before it counts for ``min_accuracy``.
    min_labelled: int = Field(default=100, ge=1)
    #: Whether an accuracy estimate (not measured) may decide ``min_accuracy`` alone.
    accept_estimate: bool = False
    #: Fail the wave on any drift alarm its devices report on the new version.
    no_drift_alarm: bool = False
    require_telemetry: bool = True

    def describe(self) -> str:
        """The criteria in words, as ``fogline fleet rollout status`` prints them."""
        parts = []
        if self.max_error_rate is not None:
            parts.append(f"error rate ≤ {self.max_error_rate:.1%}")
        if self.max_p99_ms is not None:
            parts.append(f"p99 ≤ {self.max_p99_ms:g} ms")
        if self.min_accuracy is not None:
            parts.append(
                f"accuracy ≥ {self.min_accuracy:.1%} (live on ≥ {self.min_labelled} labelled "
                "items, or the canary set"
                + (", or else the estimate)" if self.accept_estimate else "; not the estimate)")
            )
        if self.no_drift_alarm:
            parts.append("no drift alarm")
        if self.require_telemetry:
            parts.append("telemetry from every device covering the bake")
        elif not parts:
            return "none (the bake is a time: no telemetry required)"
        else:
            parts.append("no telemetry required")
        return "; ".join(parts)

    def judge(self, devices: Sequence[str], rows: Sequence[dict[str, Any]]) -> str | None:
        """None when the rows meet the error-rate and latency criteria, else why not.

        >>> rows = [{"device_id": "a", "items": 100, "errors": 9, "p99_ms": 12.0}]
        >>> Criteria(max_error_rate=0.05).judge(["a"], rows)
        'error rate 9.0% over 100 items > 5.0%'
        >>> Criteria(max_p99_ms=10).judge(["a"], rows)
        'error rate 9.0% over 100 items > 5.0%'
        >>> Criteria(max_error_rate=None, max_p99_ms=10).judge(["a"], rows)
        'p99 12.0 ms on a > 10.0 ms'
        """
        items = sum(int(row["items"]) for row in rows)
        errors = sum(int(row["errors"]) for row in rows)
        if self.max_error_rate is not None and items and errors / items > self.max_error_rate:
            return f"error rate {errors / items:.1%} over {items} items > {self.max_error_rate:.1%}"
        if self.max_p99_ms is not None:
            for row in rows:
                if row["p99_ms"] is not None and row["p99_ms"] > self.max_p99_ms:
                    return f"p99 {row['p99_ms']:.1f} ms on {row['device_id']} > {self.max_p99_ms:.1f} ms"
        return None
