"""What a device says about its model's health: drift, live accuracy, its estimate, captures.

A pipeline release exports these on its Prometheus endpoint (the names of
:mod:`fogline.metrics`: ``fogline_drift_*``, ``fogline_labels``,
``fogline_live_*``, ``fogline_accuracy_estimate``, ``fogline_captures``,
``fogline_variant_*`` for a model with variants switched by load);
the agent reads them and sends one :class:`Monitoring` per release in each
telemetry report, as :attr:`~fogline.protocol.ReleaseMetrics.monitoring`.

Compatibility both ways: the field is optional (an older agent sends none,
a newer controller reads None), and every body ignores keys it does not
know (an older controller drops the whole field and keeps the rest).
Gauges are sent as read; counters as what happened in the period, so a
child that restarts does not count its alarms twice.

>>> m = Monitoring(drift=[DriftReading(stage="drift", detector="adwin", score=0.4, alarms=1)])
>>> m.alarms, m.worst_drift
(1, 0.4)
>>> Monitoring.model_validate({"drift": [], "future": 1}).is_empty
True
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DriftReading(_Body):
    """One drift stage of a pipeline: its latest score, whether its alarm is up, alarms raised."""

    stage: str
    detector: str = ""
    score: float | None = None
    alarm: bool = False  # the alarm gauge when the agent read it
    alarms: int = Field(default=0, ge=0)  # alarms raised in the period


class LiveAccuracy(_Body):
    """Accuracy (or mean absolute error) from late labels, over a window of items of one model."""

    model_version: str = ""
    window: str = ""  # the window's size in items, as the pipeline names it
    metric: str = "accuracy"  # accuracy or mae
    value: float
    labelled: int = Field(default=0, ge=0)  # labelled items inside the window


class AccuracyEstimate(_Body):
    """Accuracy estimated without labels (calibrated confidence): never a measurement."""

    model_version: str = ""
    window: str = ""  # the window's size in items, as the pipeline names it
    value: float


class Monitoring(_Body):
    """A release's monitoring series over one reporting period (see the module)."""

    drift: list[DriftReading] = Field(default_factory=list)
    live: list[LiveAccuracy] = Field(default_factory=list)
    estimates: list[AccuracyEstimate] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)  # received in the period, by outcome
    captures: dict[str, int] = Field(default_factory=dict)  # in the period, by outcome
    #: Items each model variant served in the period, by variant (``model.variants``).
    variants: dict[str, int] = Field(default_factory=dict)
    #: The variant running when the agent read it, and switches between variants in the period.
    variant: str | None = None
    switches: int = Field(default=0, ge=0)

    @property
    def alarms(self) -> int:
        """Drift alarms raised in the period, over every stage."""
        return sum(reading.alarms for reading in self.drift)

    @property
    def worst_drift(self) -> float | None:
        """The highest drift score of any stage, or None without one."""
        scores = [r.score for r in self.drift if r.score is not None]
        return max(scores) if scores else None

    @property
    def is_empty(self) -> bool:
        return not (
            self.drift
            or self.live
            or self.estimates
            or self.labels
            or self.captures
            or self.variants
            or self.variant
        )
