"""The agent's telemetry: read what each release measured, queue one report a period, send it.

Every ``period`` seconds the agent builds a :class:`~fogline.protocol.Telemetry`
body (per-release :class:`~fogline.protocol.ReleaseMetrics`, the versions that run, CPU
and memory of the agent and its children) and queues it in the outbox of its
:class:`~fogline.store.ResultStore` as a plain message (topic
``{prefix}/devices/{device_id}/telemetry``, payload the body's JSON): it is
durable in SQLite before anything is sent, and the outbox keeps it while the
broker is away, across agent restarts too. An :class:`~fogline.store.OutboxSender`
delivers the outbox over the agent's one MQTT session: the payload is the
Telemetry body itself, with the idempotency key as the MQTT 5 user property
``idempotency-key``, so the controller dedupes redeliveries.

Metrics of a child process come from its Prometheus endpoint, read by the
release's kind (:meth:`~fogline.fleet.agent.kinds.ReleaseKind.scrape`).
Counters are turned into per-period deltas (a restarted child starts again
from zero, which is taken as such) and latency percentiles are read from the
histogram buckets of the period, interpolated within a bucket as
Prometheus' ``histogram_quantile`` does. A child that exports the energy
counter (:data:`fogline.metrics.ENERGY_JOULES`) gives the period's joules
and joules per item, labelled measured or estimated as the child's meter is. A pipeline that monitors its model
also exports drift, late-label accuracy and capture series, read by
:mod:`fogline.fleet.agent._monitoring` into each report's ``monitoring``.

Concurrency: :meth:`TelemetryReporter.run` and the sender's ``run`` each
run on one thread of the agent; the store serialises their writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from fogline.fleet.agent._monitoring import MonitorScrape, monitoring_between
from fogline.fleet.agent._session import AgentSession
from fogline.protocol import AuditCheckpoint, ReleaseMetrics, Telemetry
from fogline.store import OutboxMessage, ResultStore
from fogline.transport.mqtt import MqttMessage, Topic, json_payload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scrape:
    """The cumulative numbers of one scrape: items, errors, drops, latency buckets, monitoring."""

    items: float = 0.0
    errors: float = 0.0
    drops: float = 0.0
    buckets: tuple[tuple[float, float], ...] = ()  # (upper bound in seconds, cumulative count)
    #: A pipeline's drift, label, live-accuracy and capture series (None: it exports none).
    monitor: MonitorScrape | None = None
    #: Joules the child counted since it started (None: it exports no energy counter).
    joules: float | None = None
    #: How they were obtained: ``measured (RAPL package-0)``, ``estimated (CPU time x ...)``.
    energy: str | None = None
    energy_measured: bool | None = None


def quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper bound, count)`` buckets, or None when empty.

    Linear within the bucket that holds it, as Prometheus' ``histogram_quantile``;
    in the last (``+Inf``) bucket it is the highest finite bound.

    >>> round(quantile(0.5, [(0.1, 0), (0.2, 10), (float("inf"), 10)]), 6)
    0.15
    """
    rows = sorted(buckets)
    if not rows or rows[-1][1] <= 0:
        return None
    rank = q * rows[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in rows:
        if count >= rank:
            if bound == float("inf"):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def metrics_between(before: Scrape | None, after: Scrape, seconds: float) -> ReleaseMetrics:
    """What happened between two scrapes of one child (``before`` None: since it started).

    A counter that went down means the child restarted: its new value is the delta.
    """

    def delta(now: float, then: float) -> float:
        return now if now < then else now - then

    base = before or Scrape()
    items = delta(after.items, base.items)
    earlier = dict(base.buckets)
    restarted = after.items < base.items
    buckets = [
        (bound, count if restarted else delta(count, earlier.get(bound, 0.0)))
        for bound, count in after.buckets
    ]
    p50 = quantile(0.5, buckets)
    p99 = quantile(0.99, buckets)
    monitoring = monitoring_between(None if restarted else base.monitor, after.monitor)
    joules = None
    if after.joules is not None:
        joules = delta(after.joules, 0.0 if restarted or base.joules is None else base.joules)
    return ReleaseMetrics(
        items=int(items),
        items_per_second=items / seconds if seconds > 0 else 0.0,
        p50_ms=None if p50 is None else p50 * 1000.0,
        p99_ms=None if p99 is None else p99 * 1000.0,
        errors=int(delta(after.errors, base.errors)),
        drops=int(delta(after.drops, base.drops)),
        drift=None if monitoring is None else monitoring.worst_drift,
        monitoring=monitoring,
        joules=joules,
        joules_per_item=joules / items if joules is not None and items > 0 else None,
        energy=after.energy,
        energy_measured=after.energy_measured,
    )


@dataclass
class ProcessTree:
    """CPU percent and resident memory of this process and the given children."""

    _processes: dict[int, psutil.Process] = field(default_factory=dict)

    def sample(self, pids: Iterable[int]) -> tuple[float, float]:
        """``(cpu_percent, memory_mb)`` since the previous sample (CPU is 0 on the first)."""
        wanted = {os.getpid(), *pids}
        for pid in list(self._processes):
            if pid not in wanted:
                del self._processes[pid]
        cpu = memory = 0.0
        for pid in wanted:
            try:
                process = self._processes.get(pid)
                if process is None:
                    process = self._processes[pid] = psutil.Process(pid)
                cpu += process.cpu_percent(None)
                memory += process.memory_info().rss / (1 << 20)
            except psutil.Error:
                self._processes.pop(pid, None)
        return cpu, memory


class TelemetryTransport:
    """The :class:`~fogline.store.OutboxTransport` to this device's telemetry topic.

    Each message's payload goes as it is, with the idempotency key as the
    user property ``idempotency-key``, over the agent's own session:
    ``send_many`` returns once the broker acknowledged every one. Every
    message goes to this session's telemetry topic, whatever topic it was
    queued with: the agent's outbox holds telemetry only, and a report an
    older agent queued (before plain messages) carries the store's default
    topic, not the telemetry one.
    """

    def __init__(self, session: AgentSession, *, timeout: float = 10.0) -> None:
        self.session = session
        self.topic = Topic(session.topics.telemetry)
        self.timeout = timeout

    def send(self, message: OutboxMessage) -> None:
        self.send_many([message])

    def send_many(self, messages: Sequence[OutboxMessage]) -> None:
        self.session.publish_and_wait(
            [
                MqttMessage(
                    self.topic,
                    message.payload,
                    1,
                    user_properties=(("idempotency-key", message.key),),
                )
                for message in messages
            ],
            self.timeout,
        )


class TelemetryReporter:
    """Every ``period`` seconds, queue one :class:`Telemetry` body in the store's outbox.

    ``collect()`` returns the versions that run and the metrics per release.
    Each report is a plain outbox message on ``topic`` (the device's
    telemetry topic) whose payload is the :class:`Telemetry` body as JSON.
    The sequence number goes on from the store's count of queued messages, so
    it keeps growing across agent restarts. ``checkpoint()``, when given,
    signs the device's audit log at its head; the report carries it.
    """

    def __init__(
        self,
        store: ResultStore,
        device_id: str,
        collect: Callable[[], tuple[Mapping[str, str], Mapping[str, ReleaseMetrics]]],
        *,
        topic: str,
        period: float = 10.0,
        pids: Callable[[], Iterable[int]] = tuple,
        checkpoint: Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self.store = store
        self.device_id = device_id
        self.topic = topic
        self.period = period
        self._collect = collect
        self._pids = pids
        self._checkpoint = checkpoint
        self._tree = ProcessTree()
        self._tree.sample(())  # CPU percent is measured from here on

    def report_once(self) -> Telemetry:
        """Build one report and store it (durable when this returns)."""
        versions, metrics = self._collect()
        cpu, memory = self._tree.sample(self._pids())
        now = time.time()
        body = Telemetry(
            device_id=self.device_id,
            time=now,
            sequence=self.store.stats().produced,  # only this thread adds: no race
            versions=dict(versions),
            metrics=dict(metrics),
            cpu_percent=cpu,
            memory_mb=memory,
            period=self.period,
            audit=self._audit(),
        )
        self.store.queue([(self.topic, json_payload(body.model_dump(mode="json")))])
        return body

    def _audit(self) -> AuditCheckpoint | None:
        """The audit log signed at its head, for the controller to keep; None when it cannot be."""
        if self._checkpoint is None:
            return None
        try:
            point = self._checkpoint()
            return None if point is None else AuditCheckpoint.model_validate(dict(point))
        except Exception:  # a damaged log must not end telemetry; verify says what is wrong
            log.exception("audit checkpoint for telemetry failed")
            return None

    def run(self, stop: threading.Event) -> None:
        """Report every ``period`` seconds until ``stop`` is set; a failing report is logged."""
        while not stop.wait(self.period):
            try:
                self.report_once()
                with contextlib.suppress(Exception):
                    self.store.apply_retention()
            except Exception:  # a full disk must not end telemetry for good
                log.exception("telemetry report failed")
