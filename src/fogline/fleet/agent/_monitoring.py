"""Reading a pipeline's monitoring series from its Prometheus text, and the period between two reads.

A pipeline that monitors its model exports drift (score and alarm gauges,
an alarm counter per ``stage``), late labels (a counter by ``outcome``),
live accuracy and the labelled items behind it (gauges by ``model_version``,
``window``, ``metric``), an accuracy estimate (a gauge) and captures (a
counter by ``outcome``) under the names of :mod:`fogline.metrics`.
:func:`read_monitoring` keeps the cumulative numbers of one scrape
(:class:`MonitorScrape`); :func:`monitoring_between` turns two of them into
the :class:`~fogline.protocol.Monitoring` of one telemetry report: gauges as
last read, counters as what happened in between (a counter that went down
means the child restarted, and its new value is the delta, as for items).

>>> text = '''# TYPE fogline_drift_alarms counter
... fogline_drift_alarms_total{pipeline="p",stage="drift",detector="adwin"} 2
... # TYPE fogline_drift_score gauge
... fogline_drift_score{pipeline="p",stage="drift",detector="adwin"} 0.25
... '''
>>> before = read_monitoring(text)
>>> after = read_monitoring(text.replace("} 2", "} 3"))
>>> monitoring_between(before, after).drift[0].alarms
1
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from fogline.metrics import (
    ACCURACY_ESTIMATE,
    CAPTURES,
    DRIFT_ALARM,
    DRIFT_ALARMS,
    DRIFT_SCORE,
    LABELS,
    LIVE_ACCURACY,
    LIVE_LABELLED,
    VARIANT_ACTIVE,
    VARIANT_ITEMS,
    VARIANT_SWITCHES,
)
from fogline.protocol import AccuracyEstimate, DriftReading, LiveAccuracy, Monitoring

#: (stage, detector) of a drift stage; (model_version, window, metric) of a live figure.
DriftKey = tuple[str, str]
LiveKey = tuple[str, str, str]


@dataclass(frozen=True)
class MonitorScrape:
    """The monitoring series of one scrape, as read (counters cumulative)."""

    scores: Mapping[DriftKey, float] = field(default_factory=dict)
    alarm: Mapping[DriftKey, bool] = field(default_factory=dict)
    alarms: Mapping[DriftKey, float] = field(default_factory=dict)
    live: Mapping[LiveKey, float] = field(default_factory=dict)
    labelled: Mapping[LiveKey, float] = field(default_factory=dict)
    estimates: Mapping[tuple[str, str], float] = field(default_factory=dict)  # (version, window)
    labels: Mapping[str, float] = field(default_factory=dict)  # by outcome
    captures: Mapping[str, float] = field(default_factory=dict)  # by outcome
    served: Mapping[str, float] = field(default_factory=dict)  # items by model variant
    active: str | None = None  # the model variant running now
    switches: float = 0.0


def read_monitoring(text: str) -> MonitorScrape | None:
    """The monitoring series in a child's Prometheus ``text``; None when it exports none.

    >>> read_monitoring('fogline_pipeline_items_total{outcome="processed"} 3') is None
    True
    """
    scores: dict[DriftKey, float] = {}
    alarm: dict[DriftKey, bool] = {}
    alarms: dict[DriftKey, float] = {}
    live: dict[LiveKey, float] = {}
    labelled: dict[LiveKey, float] = {}
    estimates: dict[tuple[str, str], float] = {}
    labels: dict[str, float] = {}
    captures: dict[str, float] = {}
    served: dict[str, float] = {}
    active: str | None = None
    switches = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # by sample name: family names vary with the writer
            name, tags, value = sample.name, sample.labels, float(sample.value)
            if value != value:  # NaN: a gauge with nothing to say yet
                continue
            drift = (tags.get("stage", ""), tags.get("detector", ""))
            window = (tags.get("model_version", ""), tags.get("window", ""), tags.get("metric", ""))
            outcome = tags.get("outcome", "")
            if name == DRIFT_SCORE:
                scores[drift] = value
            elif name == DRIFT_ALARM:
                alarm[drift] = value > 0
            elif name == f"{DRIFT_ALARMS}_total":
                alarms[drift] = alarms.get(drift, 0.0) + value
            elif name == LIVE_ACCURACY:
                live[window] = value
            elif name == LIVE_LABELLED:
                labelled[window] = value
            elif name == ACCURACY_ESTIMATE:
                estimates[(tags.get("model_version", ""), tags.get("window", ""))] = value
            elif name == f"{LABELS}_total":
                labels[outcome] = labels.get(outcome, 0.0) + value
            elif name == f"{CAPTURES}_total":
                captures[outcome] = captures.get(outcome, 0.0) + value
            elif name == f"{VARIANT_ITEMS}_total":
                served[tags.get("variant", "")] = value
            elif name == VARIANT_ACTIVE:
                active = tags.get("variant", "") if value > 0 else active
            elif name == f"{VARIANT_SWITCHES}_total":
                switches += value
            else:
                continue
            found = True
    if not found:
        return None
    return MonitorScrape(
        scores, alarm, alarms, live, labelled, estimates, labels, captures, served, active, switches
    )


def _delta(now: float, then: float) -> int:
    return int(now if now < then else now - then)


def monitoring_between(
    before: MonitorScrape | None, after: MonitorScrape | None
) -> Monitoring | None:
    """The :class:`~fogline.protocol.Monitoring` of the period between two scrapes of one child.

    ``before`` None means since the child started; ``after`` None (no series
    exported) gives None, so a release that does not monitor sends nothing.
    """
    if after is None:
        return None
    base = before or MonitorScrape()
    stages = sorted({*after.scores, *after.alarm, *after.alarms})
    drift = [
        DriftReading(
            stage=stage,
            detector=detector,
            score=after.scores.get((stage, detector)),
            alarm=after.alarm.get((stage, detector), False),
            alarms=_delta(
                after.alarms.get((stage, detector), 0.0), base.alarms.get((stage, detector), 0.0)
            ),
        )
        for stage, detector in stages
    ]
    live = [
        LiveAccuracy(
            model_version=version,
            window=window,
            metric=metric or "accuracy",
            value=value,
            labelled=int(after.labelled.get((version, window, metric), 0.0)),
        )
        for (version, window, metric), value in sorted(after.live.items())
    ]
    estimates = [
        AccuracyEstimate(model_version=version, window=window, value=value)
        for (version, window), value in sorted(after.estimates.items())
    ]
    return Monitoring(
        drift=drift,
        live=live,
        estimates=estimates,
        labels={k: _delta(v, base.labels.get(k, 0.0)) for k, v in sorted(after.labels.items())},
        captures={
            k: _delta(v, base.captures.get(k, 0.0)) for k, v in sorted(after.captures.items())
        },
        variants={k: _delta(v, base.served.get(k, 0.0)) for k, v in after.served.items()},
        variant=after.active,
        switches=_delta(after.switches, base.switches),
    )
