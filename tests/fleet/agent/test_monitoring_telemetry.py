"""The agent reads a pipeline's monitoring series into its telemetry, compatibly with older peers.

The Prometheus text is written here by ``prometheus_client`` under the names
and labels of :mod:`fogline.metrics` (what a pipeline's drift, labels and
capture stages export); the pipeline kind reads it, and two scrapes become
one period's :class:`~fogline.protocol.Monitoring`: gauges as read, counters
as deltas (a restarted child starts again from zero). The telemetry body
stays readable by an agent or controller that predates monitoring, and the
other way round.
"""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict

from fogline.fleet.agent._telemetry import metrics_between
from fogline.fleet.agent.kinds import kind_for
from fogline.metrics import (
    ACCURACY_ESTIMATE,
    CAPTURES,
    DRIFT_ALARM,
    DRIFT_ALARMS,
    DRIFT_SCORE,
    LABELS,
    LIVE_ACCURACY,
    LIVE_LABELLED,
    PIPELINE_ITEMS,
)
from fogline.protocol import Monitoring, ReleaseMetrics, Telemetry


class Exporter:
    """The series a monitoring pipeline exports, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        drift = ["pipeline", "stage", "detector"]
        window = ["pipeline", "model_version", "window", "metric"]
        self.items = Counter(PIPELINE_ITEMS, "items", ["pipeline", "source", "outcome"], registry=r)
        self.score = Gauge(DRIFT_SCORE, "score", drift, registry=r)
        self.alarm = Gauge(DRIFT_ALARM, "alarm", drift, registry=r)
        self.alarms = Counter(DRIFT_ALARMS, "alarms", drift, registry=r)
        self.labels = Counter(LABELS, "labels", ["pipeline", "outcome"], registry=r)
        self.live = Gauge(LIVE_ACCURACY, "live", window, registry=r)
        self.labelled = Gauge(LIVE_LABELLED, "labelled", window, registry=r)
        self.estimate = Gauge(
            ACCURACY_ESTIMATE,
            "estimate",
            ["pipeline", "model_version", "window", "metric"],
            registry=r,
        )
        self.captures = Counter(CAPTURES, "captures", ["pipeline", "outcome"], registry=r)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_a_pipeline_scrape_reads_drift_labels_live_accuracy_estimate_and_captures() -> None:
    # Prepare
    child = Exporter()
    child.items.labels("digits", "cam", "processed").inc(100)
    child.score.labels("digits", "drift", "adwin").set(0.12)
    child.score.labels("digits", "score-drift", "ks").set(0.03)
    child.alarms.labels("digits", "drift", "adwin").inc(1)
    child.labels.labels("digits", "joined").inc(40)
    child.labels.labels("digits", "unknown").inc(2)
    child.live.labels("digits", "1.0.0", "500", "accuracy").set(0.95)
    child.labelled.labels("digits", "1.0.0", "500", "accuracy").set(40)
    child.captures.labels("digits", "stored").inc(3)
    first = kind_for("pipeline").scrape(child.text())
    # one period later: a new alarm, more labels, a lower figure, captures capped
    child.items.labels("digits", "cam", "processed").inc(100)
    child.score.labels("digits", "drift", "adwin").set(0.61)
    child.alarm.labels("digits", "drift", "adwin").set(1)
    child.alarms.labels("digits", "drift", "adwin").inc(1)
    child.labels.labels("digits", "joined").inc(60)
    child.live.labels("digits", "1.0.0", "500", "accuracy").set(0.71)
    child.labelled.labels("digits", "1.0.0", "500", "accuracy").set(100)
    child.estimate.labels("digits", "1.0.0", "100", "accuracy").set(0.82)
    child.estimate.labels("digits", "1.0.0", "1000", "accuracy").set(0.8)
    child.captures.labels("digits", "stored").inc(2)
    child.captures.labels("digits", "capped").inc(5)
    second = kind_for("pipeline").scrape(child.text())

    # Execute
    since_start = metrics_between(None, first, 10.0)
    period = metrics_between(first, second, 10.0)

    # Assert
    assert since_start.monitoring is not None and since_start.monitoring.alarms == 1
    m = period.monitoring
    assert m is not None and period.items == 100
    drift = {r.stage: r for r in m.drift}
    assert (drift["drift"].detector, drift["drift"].score) == ("adwin", 0.61)
    assert (drift["drift"].alarm, drift["drift"].alarms) == (True, 1)
    assert (drift["score-drift"].alarm, drift["score-drift"].alarms) == (False, 0)
    assert period.drift == 0.61  # the worst stage, also for controllers that read only this
    assert [(x.model_version, x.window, x.metric, x.value, x.labelled) for x in m.live] == [
        ("1.0.0", "500", "accuracy", 0.71, 100)
    ]
    assert [(e.model_version, e.window, e.value) for e in m.estimates] == [
        ("1.0.0", "100", 0.82), ("1.0.0", "1000", 0.8),
    ]  # fmt: skip
    assert m.labels == {"joined": 60, "unknown": 0}
    assert m.captures == {"capped": 5, "stored": 2}


def test_a_restarted_child_counts_its_alarms_from_zero_and_a_plain_pipeline_sends_none() -> None:
    old, new = Exporter(), Exporter()
    old.items.labels("p", "s", "processed").inc(50)
    old.alarms.labels("p", "drift", "ks").inc(4)
    new.items.labels("p", "s", "processed").inc(5)  # restarted: its counters begin again
    new.alarms.labels("p", "drift", "ks").inc(1)
    plain = Exporter()
    plain.items.labels("p", "s", "processed").inc(5)

    kind = kind_for("pipeline")
    restarted = metrics_between(kind.scrape(old.text()), kind.scrape(new.text()), 1.0)
    nothing = metrics_between(None, kind.scrape(plain.text()), 1.0)

    assert restarted.monitoring is not None and restarted.monitoring.alarms == 1
    assert nothing.monitoring is None and nothing.drift is None


class OldReleaseMetrics(BaseModel):
    """``ReleaseMetrics`` as fogline sent it before monitoring (what an old peer validates)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    items: int = 0
    items_per_second: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    drops: int = 0
    accuracy: float | None = None
    drift: float | None = None


class OldTelemetry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    device_id: str
    time: float
    sequence: int
    versions: dict[str, str] = {}
    metrics: dict[str, OldReleaseMetrics] = {}
    cpu_percent: float | None = None
    memory_mb: float | None = None
    period: float | None = None


def test_old_and_new_peers_read_each_others_telemetry() -> None:
    child = Exporter()
    child.items.labels("p", "s", "processed").inc(10)
    child.score.labels("p", "drift", "adwin").set(0.4)
    child.alarms.labels("p", "drift", "adwin").inc(1)
    measured = metrics_between(None, kind_for("pipeline").scrape(child.text()), 1.0)
    new = Telemetry(
        device_id="cam-1", time=1.0, sequence=1, versions={"p": "1.0"}, metrics={"p": measured}
    )

    by_old_controller = OldTelemetry.model_validate_json(new.model_dump_json())
    old_body = OldTelemetry(device_id="cam-1", time=1.0, sequence=2, metrics={"p": {"items": 3}})
    by_new_controller = Telemetry.model_validate_json(old_body.model_dump_json())

    assert by_old_controller.metrics["p"].items == 10
    assert by_old_controller.metrics["p"].drift == 0.4
    assert "monitoring" in json.loads(new.model_dump_json())["metrics"]["p"]
    assert by_new_controller.metrics["p"] == ReleaseMetrics(items=3)
    assert by_new_controller.metrics["p"].monitoring is None
    future = {"drift": [{"stage": "d", "score": 1.0, "new-key": 1}], "new-section": {}}
    assert Monitoring.model_validate(future).drift[0].score == 1.0  # newer agents: keys ignored


def test_a_pipeline_with_variants_reports_items_per_variant_the_active_one_and_switches() -> None:
    # Prepare: the series exactly as a running pipeline exports them (its metrics' collector).
    from fogline.pipeline import Metrics, Switch, VariantBoard
    from fogline.pipeline._variants import variant_families

    board = [VariantBoard(("fp32", "int8"), "fp32", {"fp32": 900, "int8": 0})]
    metrics = Metrics()
    metrics.count("line", "processed", 900)
    metrics.watch("variants", lambda: board[0], variant_families)
    registry = CollectorRegistry()
    registry.register(metrics.prometheus_collector("digits"))
    kind = kind_for("pipeline")
    first = kind.scrape(generate_latest(registry).decode())
    down = Switch(0.0, "fp32", "int8", "queue 60 > 48 for 1 s", "queue", 60.0)
    board[0] = VariantBoard(("fp32", "int8"), "int8", {"fp32": 1000, "int8": 400}, (down,))
    second = kind.scrape(generate_latest(registry).decode())

    # Execute
    period = metrics_between(first, second, 10.0)

    # Assert: the period's items per variant, the one running now, the switch in the period.
    m = period.monitoring
    assert m is not None and not m.is_empty
    assert (m.variants, m.variant, m.switches) == ({"fp32": 100, "int8": 400}, "int8", 1)
