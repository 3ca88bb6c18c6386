"""Where a stored result goes next, and the egress gate before each way off the device.

The store writer hands every batch of results to one :class:`Delivery`:

* a cluster node's source (an ``mqtt`` source with ``share:``) is told its
  items are settled, with their outputs for its ``done`` messages: those are
  published on the group's MQTT topics, so they leave the device and get the
  gated outputs when the policy covers ``mqtt``;
* each chosen sink gets the result through its :class:`SinkWorker`: the whole
  result for a sink that writes on the device (``jsonl``, ``stdout``), the
  gated one for a sink that leaves it (``mqtt``, ``http``, ``zmq``, ``shell``).

The gate (:class:`~fogline.pipeline._egress.Egress`) runs at most once per
result, whichever ways out it takes. The outbox is gated by its encoder
(:meth:`Delivery.outbox_gate`), and an offload step's raw input by
:meth:`Delivery.raw_input`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fogline.pipeline._base import Sink
from fogline.pipeline._egress import LEAVING_SINKS, Egress, record_policy
from fogline.pipeline._metrics import Metrics
from fogline.store import Result

log = logging.getLogger("fogline.pipeline")

DONE = object()  # end-of-stream marker on the pipeline's internal queues
LOG_FIRST = 20  # failures logged in full before only every 1000th

#: What a cluster node's source is told: item ids, their outcome, their outputs (or None).
Settler = Callable[[list[str], str, Any], None]


class SinkWorker:
    """One sink behind its own bounded queue and thread; failures are counted, never raised."""

    def __init__(
        self, name: str, sink: Sink, size: int, policy: str, metrics: Metrics, leaves: bool = False
    ) -> None:
        self.name, self.sink, self.policy, self.metrics = name, sink, policy, metrics
        #: Whether what it takes leaves the device: it is given results through the egress gate.
        self.leaves = leaves
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=size)
        self.thread = threading.Thread(target=self._work, name=f"fogline-sink-{name}", daemon=True)
        self._failures = 0

    def offer(self, result: Result) -> None:
        if self.policy == "block":
            self.queue.put(result)
            return
        while True:
            try:
                self.queue.put_nowait(result)
                return
            except queue.Full:
                if self.policy == "drop-newest":
                    self.metrics.sink(self.name, "dropped")
                    return
                try:
                    self.queue.get_nowait()
                    self.metrics.sink(self.name, "dropped")
                except queue.Empty:
                    pass

    def _work(self) -> None:
        done = False
        while not done:
            batch, done = take_batch(self.queue, 256)
            if batch:
                self._write(batch)

    def _write(self, batch: list[Result]) -> None:
        try:
            self.sink.write(batch)
        except Exception as exc:  # a sink's failure is the sink's: count it, log it, go on
            self.metrics.sink(self.name, "failed", len(batch))
            self._failures += 1
            if self._failures <= LOG_FIRST or self._failures % 1000 == 0:
                log.warning("sink %s: %d result(s) not written: %s", self.name, len(batch), exc)
        else:
            self.metrics.sink(self.name, "written", len(batch))

    def close(self) -> None:
        if self.thread.ident is not None:  # started
            self.queue.put(DONE)
            self.thread.join()
        close = getattr(self.sink, "close", None)
        if callable(close):
            close()


class Delivery:
    """The ways out of one pipeline run, and the gate each result passes before one leaves."""

    def __init__(self, egress: Egress | None, pipeline: str) -> None:
        self.egress = egress
        self.pipeline = pipeline
        #: Sources that want to know when their items are settled (cluster nodes), by name.
        self.settlers: dict[str, Settler] = {}

    # --- set up ---------------------------------------------------------------------------

    def record(self, store_path: Path) -> None:
        """Keep the effective policy beside the store (a change is audited)."""
        record_policy(self.egress, store_path, self.pipeline)

    def outbox_gate(self) -> Egress | None:
        """The gate the outbox encoder applies, when the policy covers the outbox."""
        egress = self.egress
        return egress if egress is not None and egress.covers("outbox") else None

    def leaves(self, sink_type: str) -> bool:
        """Whether a sink of ``sink_type`` leaves the device and the policy covers it."""
        egress = self.egress
        return egress is not None and sink_type in LEAVING_SINKS and egress.covers(sink_type)

    def bind(self, sources: Iterable[tuple[str, Any]]) -> None:
        """Note the sources (name, built source) that hand out credits: cluster nodes."""
        self.settlers = {
            name: hook
            for name, source in sources
            if callable(hook := getattr(source, "settled", None))
        }

    def raw_input(self, data: Any) -> Any:
        """An item's raw input as an offload step may send it: faces blurred when redacted."""
        return data if self.egress is None else self.egress.redact(data)

    # --- results --------------------------------------------------------------------------

    def settle(self, source: str, ids: Sequence[Any], outcome: str, results: Any = None) -> None:
        """Tell ``source`` (a cluster node) that items ``ids`` are settled, if it wants to know."""
        hook = self.settlers.get(source)
        if hook is not None and ids:
            hook([str(i) for i in ids if i is not None], outcome, results)

    def deliver(
        self, batch: Sequence[tuple[Result, Sequence[str]]], workers: Mapping[str, SinkWorker]
    ) -> None:
        """Settle stored results with their cluster node, then offer each to its chosen sinks."""
        egress = self.egress
        gated: dict[int, Result] = {}  # the gate, once per result, for every way out

        def gate(index: int, result: Result) -> Result:
            assert egress is not None
            if index not in gated:
                gated[index] = egress.result(result)
            return gated[index]

        done_leaves = egress is not None and egress.covers("mqtt")  # done goes over MQTT
        for source in dict.fromkeys(result.source for result, _ in batch):
            if source not in self.settlers:
                continue
            mine = [(i, r) for i, (r, _) in enumerate(batch) if r.source == source]
            outputs = [(gate(i, r) if done_leaves else r).outputs for i, r in mine]
            self.settle(source, [r.item_id for _, r in mine], "processed", outputs)
        for index, (result, chosen) in enumerate(batch):
            for name in chosen:
                worker = workers[name]
                worker.offer(gate(index, result) if worker.leaves and egress else result)


def take_batch(source: queue.Queue[Any], limit: int) -> tuple[list[Any], bool]:
    """Wait for one entry, then take what else is waiting, up to ``limit``; True at the end marker."""
    batch: list[Any] = []
    entry = source.get()
    while entry is not DONE:
        batch.append(entry)
        if len(batch) >= limit:
            return batch, False
        try:
            entry = source.get_nowait()
        except queue.Empty:
            return batch, False
    return batch, True


__all__ = ["DONE", "Delivery", "SinkWorker", "take_batch"]
