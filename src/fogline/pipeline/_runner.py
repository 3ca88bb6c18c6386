"""Runs a checked :class:`~fogline.pipeline.Plan`: sources → batcher → post-processing → store → sinks.

Concurrency: threads, one per role, because the waiting is on compute (the
engine releases the GIL) and on local I/O::

    source threads (one each)      read, pace, preprocess, submit to its batcher lane
        │  MicroBatcher            the shared micro-batcher (bounded, per-source lanes)
    collector                      outputs in order → post-processing → rules
        │  bounded queue
    store writer                   one SQLite transaction per group of results; then "processed"
        │  one bounded queue per sink (block / drop-oldest / drop-newest)
    sink workers (one each)        MQTT, webhook, JSON lines, stdout, shell
    outbox sender                  delivers the store's outbox when the network is there
                                   (and, with ``outbox.defer``, when the policy allows)

Every queue is bounded. A result counts as processed only once it is durable
in the store (or, with ``store: false``, once handed to the sinks). A stop
request (SIGINT/SIGTERM, ``duration``, ``max_items``) stops the sources only;
everything already read is finished, stored and handed on before
:meth:`Pipeline.run` returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from fogline.errors import (
    DeadlineExceeded,
    Dropped,
    FoglineError,
    ItemError,
    NotRunning,
    SignatureMismatch,
    StoreError,
)
from fogline.model import BatchPolicy, Lane, MicroBatcher
from fogline.pipeline._base import Source, Stage
from fogline.pipeline._capture import Capturer
from fogline.pipeline._deferred import CarbonSubscription, DeferralGate, carbon_broker
from fogline.pipeline._delivery import DONE as _DONE
from fogline.pipeline._delivery import LOG_FIRST as _LOG_FIRST
from fogline.pipeline._delivery import Delivery, SinkWorker, take_batch
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._labels import LabelHook, LabelJoiner, label_families
from fogline.pipeline._metrics import Metrics, Snapshot, Tally
from fogline.pipeline._online import label_learner
from fogline.pipeline._rules import Condition
from fogline.pipeline._spec import Plan
from fogline.pipeline._variants import variant_families, variant_switcher
from fogline.pipeline.sinks import outbox_encoder
from fogline.pipeline.sources import cluster_key
from fogline.pipeline.stages import Deferred, build_post
from fogline.power import Deferral, Verdict
from fogline.store import Capture, OutboxSender, Result, ResultStore, Retention

log = logging.getLogger("fogline.pipeline")

_WAKE = object()  # an offload call finished: the collector looks at its oldest item again


@dataclass(frozen=True)
class _Target:
    """A sink worker and which results it receives."""

    name: str
    when: Condition | None
    only_rules: frozenset[str]  # non-empty: only results that matched one of these rules


class Pipeline:
    """One run of a plan. Not reusable: build a new one to run again.

    ``run`` blocks until the sources are exhausted, ``duration`` seconds
    pass, ``max_items`` items have been read, or :meth:`stop` is called
    (from a signal handler, another thread); then it drains and returns the
    final :class:`~fogline.pipeline.Snapshot`.

    With a ``labels:`` section, :attr:`labels` joins late labels to the stored
    results (on its own threads) and, once the sources end, keeps taking them
    for ``labels.wait_s`` seconds; each hook in :attr:`label_hooks` is called
    with a :class:`~fogline.pipeline.LabelJoin` for every joined label (on the
    join thread; an online learner's ``learn_one`` goes there).
    """

    def __init__(
        self, plan: Plan, *, metrics: Metrics | None = None, label_hooks: Sequence[LabelHook] = ()
    ) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.metrics = metrics or Metrics()
        #: Called with each joined late label; append before :meth:`run`.
        self.label_hooks: list[LabelHook] = list(label_hooks)
        self._learner = label_learner(plan)  # an online classifier/regressor learns late labels
        if self._learner is not None:
            self.label_hooks.append(self._learner)
        self.labels: LabelJoiner | None = None
        self._stop_sources = threading.Event()
        self._stop_all = threading.Event()  # stop(): also ends waiting for late labels
        self._claim_lock = threading.Lock()
        self._claimed = 0
        self._max_items: int | None = None
        self._logged: Counter[str] = Counter()
        model = self.spec.model
        self._input = plan.input.name
        self._deadline = None if model.deadline_ms is None else model.deadline_ms / 1000.0
        self._keep_raw = any(getattr(step, "send", None) == "raw" for step in self.spec.postprocess)
        #: The ways out (sinks, outbox, a cluster node's done) and the egress gate before each.
        self._delivery = Delivery(plan.egress, self.spec.name)
        self._inflight: queue.Queue[Any] = queue.Queue(
            maxsize=4 * (model.queue_size + model.max_batch)
        )
        self._stored: queue.Queue[Any] = queue.Queue(maxsize=1024)
        self.store: ResultStore | None = None
        #: A short random id for this run: items whose data carries no id are named
        #: ``{run_id}-{source}-{sequence}``, so ids stay unique across restarts.
        self.run_id = secrets.token_hex(4)
        # Hard examples: the collector decides, the store writer keeps them.
        self._capture: Capturer | None = None
        if self.spec.capture is not None:
            self._capture = Capturer(
                self.spec.capture,
                self.spec,
                plan.model.engine.signature,
                self._input,
                (plan.model.name, plan.model.version),
                self.metrics,
            )
        # Model variants: the switcher steps between them; results record which one answered.
        self._switcher = variant_switcher(plan.model, model.policy, model.workers)
        if self._switcher is not None:
            self.metrics.watch("variants", self._switcher.board, variant_families)
        self._started = False
        #: Seconds the outbox may keep delivering after the sources have stopped.
        self.drain_outbox_s = 5.0
        #: The outbox's sender under its deferral policy (``outbox.defer``), once started.
        self._deferred: DeferralGate | None = None
        self._carbon: CarbonSubscription | None = None

    # --- control --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop reading the sources; what was read is still finished and stored. Thread-safe."""
        self._stop_sources.set()
        self._stop_all.set()

    def run(self, *, duration: float | None = None, max_items: int | None = None) -> Snapshot:
        if self._started:
            raise FoglineError("this pipeline has already run; build a new Pipeline to run again")
        self._started = True
        self._max_items = max_items
        with contextlib.ExitStack() as undo:  # a failure while setting up closes what is open
            return self._run(undo, duration)

    def _run(self, undo: contextlib.ExitStack, duration: float | None) -> Snapshot:
        spec, metrics = self.spec, self.metrics
        store_spec = spec.store
        if store_spec is not False:
            retention = Retention(
                max_age_s=store_spec.retention.max_age_s,
                max_rows=store_spec.retention.max_rows,
                max_bytes=store_spec.retention.max_bytes,
            )
            outbox = spec.outbox
            self.store = ResultStore(
                store_spec.path,
                outbox_limit=outbox.limit if outbox else 100_000,
                outbox_policy=outbox.policy if outbox else "drop-oldest",
                retention=retention,
                # The pipeline decides each sync result's outbox topic and payload; what leaves
                # through the outbox passes the egress gate before it is serialised.
                encode=outbox_encoder(
                    outbox.transport if outbox else None, self._delivery.outbox_gate()
                ),
                key_of=cluster_key(spec),
                key=self.plan.store_key,  # store.encrypt: SQLCipher with the device key
            )
            if self._capture is not None:
                self._capture.start(self.store)
            if spec.labels is not None:
                self.labels = LabelJoiner(
                    spec.labels, self.store, produced=self.plan.produced, hooks=self.label_hooks
                )
                metrics.watch("labels", self.labels.board, label_families)
                self.labels.start()
        if self.store is not None:  # which policy governed these results; a change is audited
            self._delivery.record(self.store.path)
        workers = []
        for name, sink_spec in zip(spec.sink_names(), spec.sinks, strict=True):
            leaves = self._delivery.leaves(sink_spec.type)
            built = sink_spec.build()
            workers.append(
                SinkWorker(name, built, sink_spec.queue, sink_spec.policy, metrics, leaves)
            )
            undo.callback(workers[-1].close)
        targets = self._targets()
        sender_stop = threading.Event()
        sender_thread, transport = self._start_outbox(sender_stop)
        undo.callback(self._stop_outbox, sender_stop, sender_thread, transport)
        model = spec.model
        policy = BatchPolicy(
            max_batch=model.max_batch,
            max_wait_s=model.max_wait_ms / 1000.0,
            queue_size=max(model.queue_size, sum(self._lane_size(s) for s in spec.sources)),
            workers=model.workers,
        )
        batcher = MicroBatcher(self.plan.model.engine, policy).start()
        undo.callback(batcher.close, drain=False)
        metrics.watch_queue("batcher", lambda: batcher.stats.queued)
        if self._switcher is not None:
            self._switcher.start(lambda: batcher.stats.queued)
            undo.callback(self._switcher.stop)
        metrics.watch_queue("results", self._inflight.qsize)
        metrics.watch_queue("store", self._stored.qsize)
        for worker in workers:
            metrics.watch_queue(f"sink:{worker.name}", worker.queue.qsize)
            worker.thread.start()
        post = build_post(spec.postprocess, self.plan.model.engine.signature)
        for stage in post:  # steps that report events (drift) reach the metrics through this
            if callable(close := getattr(stage, "close", None)):
                undo.callback(close)
            if callable(bind := getattr(stage, "bind_metrics", None)):
                bind(metrics)
        collector = threading.Thread(
            target=self._collect, args=(post, targets), name="fogline-collector", daemon=True
        )
        writer = threading.Thread(
            target=self._write, args=(workers, targets), name="fogline-store", daemon=True
        )
        sources = []
        for name, source_spec in self._named_sources():
            sources.append(source_spec.build(name))
            if callable(close := getattr(sources[-1], "close", None)):
                undo.callback(close)
        # A source that hands out credits (a cluster node) learns when each item is settled.
        self._delivery.bind(zip(self.spec.source_names(), sources, strict=True))
        for source in sources:  # a cluster node announces which pipeline it runs
            if callable(named := getattr(source, "name_pipeline", None)):
                named(spec.name)
        feeders = [
            threading.Thread(
                target=self._feed,
                args=(name, source, source_spec, batcher),
                name=f"fogline-source-{name}",
                daemon=True,
            )
            for (name, source_spec), source in zip(self._named_sources(), sources, strict=True)
        ]
        undo.pop_all()  # set up: the finally below closes everything, in its order
        metrics.restart_clock()
        collector.start()
        writer.start()
        for feeder in feeders:
            feeder.start()
        end = None if duration is None else time.monotonic() + duration
        try:
            for feeder in feeders:
                while feeder.is_alive():
                    left = None if end is None else end - time.monotonic()
                    if left is not None and left <= 0:
                        self.stop()
                        left = None
                    feeder.join(0.1 if left is None else min(left, 0.1))
        finally:
            self._stop_sources.set()
            for feeder in feeders:
                feeder.join()
            batcher.close(drain=True)
            self._inflight.put(_DONE)
            collector.join()
            for stage in post:  # steps that hold connections (offload) let them go
                if callable(close := getattr(stage, "close", None)):
                    close()
            writer.join()
            if self._switcher is not None:
                self._switcher.stop()
            for source in sources:  # after the last result is stored: a node says done, leaves
                if callable(close := getattr(source, "close", None)):
                    close()
            metrics.stop_clock()
            if self.labels is not None:
                wait = spec.labels.wait_s if spec.labels is not None else 0.0
                self.labels.finish(wait, self._stop_all)
            for worker in workers:
                worker.close()
            self._stop_outbox(sender_stop, sender_thread, transport)
        return metrics.snapshot()

    def _named_sources(self) -> list[tuple[str, Any]]:
        return list(zip(self.spec.source_names(), self.spec.sources, strict=True))

    def _settle(self, source: str, ids: Sequence[Any], outcome: str) -> None:
        """Tell ``source`` (a cluster node) that items ``ids`` are settled, if it wants to know."""
        self._delivery.settle(source, ids, outcome)

    def close(self) -> None:
        """Close the store (the engine belongs to the plan's caller)."""
        if self.store is not None:
            self.store.close()

    # --- sources → batcher ----------------------------------------------------------------

    def _claim(self) -> bool:
        if self._max_items is None:
            return True
        with self._claim_lock:
            if self._claimed >= self._max_items:
                self._stop_sources.set()
                return False
            self._claimed += 1
            return True

    def _feed(self, name: str, source: Source, spec: Any, batcher: MicroBatcher) -> None:
        metrics = self.metrics.tally()
        chain: list[Stage] = [step.build() for step in self.spec.preprocess]
        lane = Lane(name, self._lane_size(spec), spec.policy)
        interval = 1.0 / spec.rate if spec.rate else 0.0
        limit = spec.max_items
        produced = 0
        next_at = time.monotonic()
        try:
            for entry in source.read(self._stop_sources):
                if isinstance(entry, Corrupt):
                    metrics.count(name, "corrupt")
                    self._log_item(name, entry.position, entry.reason)
                    continue
                if (limit is not None and produced >= limit) or not self._claim():
                    break
                if interval:
                    # A schedule, not a sleep per item: a late item is followed by quicker
                    # ones, catching up at most 0.1 s so a stall does not become a burst.
                    now = time.monotonic()
                    next_at = max(next_at + interval, now - 0.1)
                    delay = next_at - now
                    if delay > 0 and self._stop_sources.wait(delay):
                        break
                    entry.t0 = time.monotonic()  # it enters the pipeline now, after pacing
                produced += 1
                metrics.count(name, "produced")
                if "id" not in entry.meta:
                    entry.meta["id"] = f"{self.run_id}-{name}-{entry.sequence}"
                self._submit(name, entry, chain, batcher, lane, metrics)
        except FoglineError as exc:
            metrics.count(name, "source_failed")
            log.error("source %s stopped: %s", name, exc)
        except Exception as exc:  # a source's own bug must not take the pipeline down silently
            metrics.count(name, "source_failed")
            log.exception("source %s stopped unexpectedly: %s", name, exc)

    def _lane_size(self, spec: Any) -> int:
        """The source's share of the batcher queue: ``queue``, else by its policy.

        A replay (``block``) may queue 64 items; a live source gets half a batch,
        so in overload its items wait at most about one batch time.
        """
        if spec.queue is not None:
            return int(spec.queue)
        if spec.policy == "block":
            return 64
        return max(1, self.spec.model.max_batch // 2)

    def _submit(
        self,
        name: str,
        item: Item,
        chain: Sequence[Stage],
        batcher: MicroBatcher,
        lane: Lane,
        metrics: Tally,
    ) -> None:
        started = time.monotonic()
        current = item
        if self._keep_raw:  # an offload step sends the input as the source gave it
            item.meta["raw"] = self._delivery.raw_input(item.data)
        try:
            for stage in chain:
                step = stage(current)
                if step is None:
                    metrics.count(name, "held")
                    self._settle(name, [item.meta["id"]], "processed")  # part of a later item
                    return
                current = step
        except ItemError as exc:
            metrics.count(name, "errors")
            self._log_item(name, item.position, str(exc))
            self._settle(name, [item.meta["id"]], "failed")
            return
        submitted = time.monotonic()
        metrics.observe("preprocess", submitted - started)
        deadline = None if self._deadline is None else current.t0 + self._deadline
        try:
            future = batcher.submit({self._input: current.data}, deadline=deadline, lane=lane)
        except SignatureMismatch as exc:
            metrics.count(name, "errors")
            self._log_item(name, current.position, str(exc))
            self._settle(name, [item.meta["id"]], "failed")
            return
        except NotRunning:
            metrics.count(name, "failed")
            self._settle(name, [item.meta["id"]], "failed")
            return
        self._inflight.put((current, future, submitted))

    # --- batcher → post-processing → store --------------------------------------------------

    def _collect(self, post: Sequence[Stage], targets: Sequence[_Target]) -> None:
        metrics = self.metrics.tally()
        rules = self.plan.rules
        store_spec = self.spec.store
        sync: bool | Condition = False
        if store_spec is not False:
            sync = (
                Condition(store_spec.sync) if isinstance(store_spec.sync, str) else store_spec.sync
            )
        raw = not post
        everyone = [t.name for t in targets]
        needs_fields = (
            bool(rules)
            or isinstance(sync, Condition)
            or any(t.when is not None or t.only_rules for t in targets)
            or self._capture is not None
        )
        self._collector_tally = metrics
        self._collect_setup = (sync, everyone, targets, needs_fields)
        # Items whose offload answer is on its way wait here, in arrival order, with those
        # behind them; the oldest is finished when it is ready, when the window is full, or
        # at its deadline. Without an offload step the window is 0: at once.
        window = max((int(getattr(stage, "offload_window", 0)) for stage in post), default=0)
        # While the head's call runs, new items are still taken (and their calls started);
        # a finished call wakes the collector (_WAKE), the head's deadline ends the wait.
        pending: deque[tuple[Item, Item | Deferred | None, str, float]] = deque()
        while True:
            wait = None  # nothing pending: wait for the next item
            if pending:
                head = pending[0][1]
                wait = (
                    max(0.0, head.deadline - time.monotonic()) if isinstance(head, Deferred) else 0
                )
            try:
                entry = self._inflight.get(timeout=wait)
            except queue.Empty:  # the head's deadline passed: it goes on without its answer
                self._emit(*pending.popleft())
                entry = _WAKE
            if entry is _DONE:
                break
            if entry is not _WAKE and not self._take(entry, post, raw, pending, metrics):
                continue
            while pending and (
                len(pending) > window
                or not isinstance(head := pending[0][1], Deferred)
                or head.ready()
            ):
                self._emit(*pending.popleft())
        while pending:
            self._emit(*pending.popleft())
        self._stored.put(_DONE)

    def _wake(self, _: Any) -> None:
        """A call finished: wake the collector, unless its queue is full (it is awake then)."""
        with contextlib.suppress(queue.Full):
            self._inflight.put_nowait(_WAKE)

    def _take(
        self,
        entry: tuple[Item, Future[dict[str, Any]], float],
        post: Sequence[Stage],
        raw: bool,
        pending: deque[tuple[Item, Item | Deferred | None, str, float]],
        metrics: Tally,
    ) -> bool:
        """Post-process one inferred item into ``pending``; False if it was settled as failed."""
        opened = self.plan.model
        item, future, submitted = entry
        outcome = _settle(future)
        if isinstance(outcome, str):
            metrics.count(item.source, outcome)
            self._settle(item.source, [item.meta.get("id")], "failed")
            return False
        now = time.monotonic()
        metrics.observe("inference", now - submitted)
        switcher = self._switcher  # takes out which variant answered, notes the latency
        version = opened.version if switcher is None else switcher.answered(outcome, now - item.t0)
        item.outputs = outcome
        if self._learner is not None:
            self._learner.seen(item)
        try:
            started = self._post(item, post, raw)
        except ItemError as exc:
            metrics.count(item.source, "errors")
            self._log_item(item.source, item.position, str(exc))
            self._settle(item.source, [item.meta.get("id")], "failed")
            return False
        pending.append((item, started, version, now))
        if isinstance(started, Deferred):
            started.future.add_done_callback(self._wake)
        return True

    def _emit(self, item: Item, started: Item | Deferred | None, version: str, now: float) -> None:
        """Finish one item's post-processing (rules, sinks, capture) and hand it to the store."""
        metrics = self._collector_tally
        opened = self.plan.model
        rules = self.plan.rules
        sync, everyone, targets, needs_fields = self._collect_setup
        try:
            done = started.resolve() if isinstance(started, Deferred) else started
            if done is None:
                metrics.count(item.source, "held")
                self._settle(item.source, [item.meta.get("id")], "processed")
                return
            model = opened.name
            if "answered_by" in done.meta:  # an offload step replaced the answer: its model's
                model, version = done.meta["answered_by"]
            capture: Capture | None = None
            if not needs_fields:
                keep, chosen = sync, everyone
            else:
                fields = {
                    **done.result,
                    "source": done.source,
                    "sequence": done.sequence,
                    "position": done.position,
                    "captured_at": done.captured_at,
                    "model": model,
                    "truth": done.meta.get("label"),
                }
                if rules:
                    matched = [rule.name for rule in rules if rule.when(fields)]
                    done.result["rules"] = matched
                    fields["rules"] = matched
                    fields.update({rule.name: rule.name in matched for rule in rules})
                keep = sync(fields) if isinstance(sync, Condition) else sync
                chosen = [t.name for t in targets if _wants(t, fields)]
                if self._capture is not None:
                    capture = self._capture.consider(done, fields)
        except ItemError as exc:
            metrics.count(item.source, "errors")
            self._log_item(item.source, item.position, str(exc))
            self._settle(item.source, [item.meta.get("id")], "failed")
            return
        label = item.meta.get("label")
        if label is not None and "label" in done.result:
            metrics.label(str(done.result["label"]) == str(label))
        result = Result(
            done.source,
            done.sequence,
            done.captured_at,
            model,
            version,
            done.result,
            sync=bool(keep),
            position=done.position,
            item_id=done.meta.get("id"),
        )
        metrics.observe("postprocess", time.monotonic() - now)
        self._stored.put((result, done.t0, chosen, capture))

    @staticmethod
    def _post(item: Item, post: Sequence[Stage], raw: bool) -> Item | Deferred | None:
        if raw:
            item.result = {name: value.tolist() for name, value in item.outputs.items()}
            return item
        current = item
        for index, stage in enumerate(post):
            start = getattr(stage, "start", None)  # an offload step: its call may still run
            step = start(current) if start is not None else stage(current)
            if isinstance(step, Deferred):
                step.rest = post[index + 1 :]
                return step
            if step is None:
                return None
            current = step
        return current

    def _write(self, workers: Sequence[SinkWorker], targets: Sequence[_Target]) -> None:
        by_name = {worker.name: worker for worker in workers}
        store, metrics = self.store, self.metrics.tally()
        retention_every = 10.0
        next_retention = time.monotonic() + retention_every
        done = False
        while not done:
            batch: list[tuple[Result, float, list[str], Capture | None]]
            batch, done = take_batch(self._stored, 512)
            if not batch:
                continue
            if store is not None:
                started = time.monotonic()
                try:
                    ids = store.add([result for result, *_ in batch])
                except StoreError as exc:
                    for result, *_ in batch:
                        metrics.count(result.source, "failed")
                        self._settle(result.source, [result.item_id], "failed")
                    log.error("store: %d result(s) could not be stored: %s", len(batch), exc)
                    if self._capture is not None:
                        self._capture.lost([c for *_, c in batch if c is not None], str(exc))
                    continue
                if self._capture is not None:  # after the results: each links to its result's id
                    captures = [
                        dataclasses.replace(c, result_id=i)
                        for i, (*_, c) in zip(ids, batch, strict=True)
                        if c is not None
                    ]
                    self._capture.write(store, captures)
                stored_at = time.monotonic()
                metrics.observe("store", stored_at - started)
                if self.labels is not None:
                    self.labels.stored(ids, [result for result, *_ in batch])
                if stored_at >= next_retention:
                    next_retention = stored_at + retention_every
                    _retain(store)
                    if self._capture is not None:
                        self._capture.after_retention(store)
            stored_at = time.monotonic()
            for source, n in Counter(result.source for result, *_ in batch).items():
                metrics.count(source, "processed", n)
            for _, t0, *_ in batch:
                metrics.observe("end_to_end", stored_at - t0)
            # Durable now (or, without a store, handed on): a cluster node says done, sinks get it.
            self._delivery.deliver([(result, chosen) for result, _, chosen, _ in batch], by_name)

    def _targets(self) -> list[_Target]:
        routed: dict[str, set[str]] = {}
        for rule in self.plan.rules:
            for name in rule.then:
                routed.setdefault(name, set()).add(rule.name)
        return [
            _Target(
                name, None if s.when is None else Condition(s.when), frozenset(routed.get(name, ()))
            )
            for name, s in zip(self.spec.sink_names(), self.spec.sinks, strict=True)
        ]

    # --- outbox ---------------------------------------------------------------------------

    @property
    def outbox_verdict(self) -> Verdict | None:
        """The deferral policy's last word on the outbox (``outbox.defer``), None without one."""
        return None if self._deferred is None else self._deferred.verdict

    def _start_outbox(self, stop: threading.Event) -> tuple[threading.Thread | None, Any]:
        outbox = self.spec.outbox
        if outbox is None or self.store is None:
            return None, None
        transport = outbox.transport.build()
        store = self.store
        sender = OutboxSender(
            store,
            transport,
            backoff_initial=outbox.retry_initial_s,
            backoff_max=outbox.retry_max_s,
            poll_interval=0.2,
        )
        self.sender = sender
        self.metrics.watch_queue("outbox", lambda: self.store.stats().pending if self.store else 0)
        if outbox.defer is not None:  # non-urgent results: sent only when the policy allows
            deferral = Deferral(outbox.defer)
            transport_url = getattr(outbox.transport, "url", None)
            url = carbon_broker(
                outbox.defer, transport_url if outbox.transport.type == "mqtt" else None
            )
            if url is not None and deferral.feed is not None and outbox.defer.carbon is not None:
                assert outbox.defer.carbon.topic is not None
                self._carbon = CarbonSubscription(url, outbox.defer.carbon.topic, deferral.feed)
            pending = lambda: store.stats().pending  # noqa: E731
            sender.gate = self._deferred = DeferralGate(
                deferral, pending=pending, clock=sender.clock
            )
        run = sender.run
        thread = threading.Thread(target=run, args=(stop,), name="fogline-outbox", daemon=True)
        thread.start()
        return thread, transport

    def _stop_outbox(
        self, stop: threading.Event, thread: threading.Thread | None, transport: Any
    ) -> None:
        if thread is None:
            return
        stop.set()
        thread.join()
        # Deliver what the last results queued, while the transport keeps accepting (and,
        # for non-urgent results, while the policy allows; what waits stays for the next run).
        if self._deferred is not None:
            self._deferred.check(force=True)  # the policy now, not as of check_every_s ago
        deliver = self.sender.deliver_once
        give_up = time.monotonic() + self.drain_outbox_s
        try:
            while time.monotonic() < give_up and deliver() > 0:
                pass
        except FoglineError as exc:
            log.warning("outbox: %s; the rest stays queued for the next run", exc)
        if self._carbon is not None:
            self._carbon.close()
            self._carbon = None
        close = getattr(transport, "close", None)
        if callable(close):
            close()

    # --- logging --------------------------------------------------------------------------

    def _log_item(self, source: str, position: str, reason: str) -> None:
        self._logged[source] += 1
        n = self._logged[source]
        if n <= _LOG_FIRST or n % 1000 == 0:
            more = f" ({n} so far)" if n > _LOG_FIRST else ""
            log.warning("%s: skipped %s: %s%s", source, position, reason, more)


def _settle(future: Future[dict[str, Any]]) -> dict[str, Any] | str:
    """The item's outputs, or the outcome it is counted under."""
    try:
        return future.result()
    except Dropped:
        return "dropped"
    except DeadlineExceeded:
        return "expired"
    except Exception as exc:  # the engine failed on this item's batch
        log.error("inference failed: %s", exc)
        return "failed"


def _wants(target: _Target, fields: dict[str, Any]) -> bool:
    if target.only_rules and not target.only_rules.intersection(fields.get("rules", ())):
        return False
    return target.when is None or target.when(fields)


def _retain(store: ResultStore) -> None:
    try:
        store.apply_retention()
    except StoreError as exc:
        log.warning("store retention: %s", exc)


__all__ = ["Pipeline"]
