"""Late labels: a pipeline's ``labels:`` section, joined to stored results by item id.

Ground truth often comes long after the model answered (a technician's
verdict, a delivery scan). A ``labels:`` section names where it comes from
(:mod:`~fogline.pipeline._label_sources`) and how to compare it; the
:class:`LabelJoiner` joins each label to the stored result of the same item
id, however late within ``retention_s``, and keeps live accuracy (or mean
absolute error) per model version over sliding ``windows``, plus an estimate
from calibrated confidence for the results no label reaches (CBPE).

Every label ends in exactly one outcome, counted in ``fogline_labels_total``
and logged when it is not ``joined``:

- ``joined``: compared with its result and stored in the ``labels`` table;
- ``unknown``: no result with that id came within ``retention_s`` (or before
  the run ended, or it was pushed out of the ``max_held`` labels waiting);
- ``expired``: its result is older than ``retention_s``;
- ``invalid``: no id, no label, or a label of the wrong type;
- ``duplicate``: the item's result already has this label joined;
- ``dropped``: the source lost it unread (an MQTT client's full queue; counted
  per message, which may have held several labels).

Concurrency: label sources each read on their own thread into one bounded
queue; one join thread does every store lookup and write, so the collector
never waits on labels. The store writer hands each stored batch to the join
thread with a non-blocking put (a label waiting for a result dropped there is
still found by the join thread's periodic store lookup).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from fogline.errors import ConfigError, FoglineError, StoreError
from fogline.metrics import ACCURACY_ESTIMATE, LABELS, LIVE_ACCURACY, LIVE_LABELLED
from fogline.monitor import AccuracyEstimator, AccuracyWindows, WindowFigure
from fogline.pipeline._base import Spec
from fogline.pipeline._label_sources import (
    BadLabel,
    CsvLabelsSpec,
    DelayedLabelsSpec,
    Fields,
    HttpLabels,
    HttpLabelsSpec,
    Incoming,
    LabelMessage,
    LabelSource,
    LostLabels,
    MqttLabelsSpec,
    StdinLabelsSpec,
)
from fogline.store import Record, Result, ResultStore, StoredLabel

log = logging.getLogger("fogline.pipeline.labels")

#: Every outcome a label can have, in the order summaries show them.
LABEL_OUTCOMES = ("joined", "unknown", "expired", "invalid", "duplicate", "dropped")
_LOG_FIRST = 20
_RETRY_S = 1.0  # how often labels waiting for their result look in the store
_GATHER_S = 0.25  # how long the join thread gathers labels into one store transaction
_GATHER_MAX = 4096

if TYPE_CHECKING:
    LabelSourceUnion = MqttLabelsSpec
else:
    LabelSourceUnion = Annotated[
        Union[MqttLabelsSpec, CsvLabelsSpec, StdinLabelsSpec, HttpLabelsSpec, DelayedLabelsSpec],  # noqa: UP007
        Field(discriminator="type"),
    ]


class EstimateSpec(Spec):
    """The accuracy estimate without labels: ``score`` is the result's confidence field;
    the calibration is fitted on the first ``reference`` joined labels, in ``bins`` bins."""

    score: str = "score"
    reference: int = Field(default=200, ge=2)
    bins: int = Field(default=10, ge=1, le=1000)


class LabelsSpec(Spec):
    """The ``labels:`` section: where labels come from and how they are compared.

    ``compare`` is the result field a label is compared with: ``label`` for a
    classifier (equal as text: ``7`` and ``"7"`` match), a numeric field for a
    ``regression`` (absolute error). ``retention_s`` is how late a label may
    be (after its result) and how long one may wait for its result;
    ``max_held`` caps the labels waiting. ``wait_s``: after the data sources
    end, keep taking labels this long (or until every label source has ended).
    ``estimate: false`` turns off the estimate (on by default for a classifier).
    """

    source: LabelSourceUnion
    id_field: str = Field(default="id", min_length=1)
    label_field: str = Field(default="label", min_length=1)
    compare: str = Field(default="label", min_length=1)
    task: Literal["classification", "regression"] = "classification"
    windows: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [100, 1000], min_length=1
    )
    retention_s: float = Field(default=86_400.0, gt=0)
    max_held: int = Field(default=10_000, ge=1)
    wait_s: float = Field(default=0.0, ge=0)
    estimate: EstimateSpec | Literal[False] | None = None

    @model_validator(mode="after")
    def _estimate_for_classifiers(self) -> LabelsSpec:
        if self.estimate and self.task != "classification":
            raise ValueError(
                "estimate: the estimate from confidence applies to a classification task"
            )
        return self

    @property
    def fields(self) -> Fields:
        return Fields(self.id_field, self.label_field)

    def estimate_spec(self, produced: frozenset[str]) -> EstimateSpec | None:
        """The estimate to make: the one written, else the default when results have ``score``."""
        if self.estimate is False or self.task != "classification":
            return None
        if self.estimate is None:
            return EstimateSpec() if "score" in produced else None
        return self.estimate

    def check(self, produced: frozenset[str]) -> None:
        """:class:`ConfigError` (with the key) unless results have the fields this compares."""
        if self.compare not in produced:
            raise ConfigError(
                f"compare: results have no field {self.compare!r} to compare labels with "
                f"(they have: {', '.join(sorted(produced))})"
            )
        if self.estimate and self.estimate.score not in produced:
            raise ConfigError(
                f"estimate.score: results have no field {self.estimate.score!r} "
                "(the classify step writes `score`)"
            )
        if isinstance(self.source, CsvLabelsSpec):
            try:
                self.source.check(self.fields)
            except ConfigError as exc:
                raise ConfigError(f"source: {exc}") from exc


def label_problem(task: str, label: Any) -> str | None:
    """Why ``label`` cannot label a ``task`` result, or None when it can.

    >>> label_problem("classification", {"cls": 1}), label_problem("regression", "2.5")
    ('a class label is a string or an integer, got dict', None)
    >>> label_problem("regression", "warm")
    "a regression label is a number, got 'warm'"
    """
    if task == "classification":
        if isinstance(label, str) or (isinstance(label, int) and not isinstance(label, bool)):
            return None
        return f"a class label is a string or an integer, got {type(label).__name__}"
    return None if _number(label) is not None else f"a regression label is a number, got {label!r}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class LabelJoin:
    """What a label hook receives: the item, its label, the stored result, and how it did.

    ``correct`` for a classifier, ``error`` for a regressor; ``record`` is the
    result as stored (``record.result.outputs``, ``model_version``...).
    """

    item_id: str
    label: Any
    record: Record
    correct: bool | None
    error: float | None


#: A callback the join thread calls for every joined label (an online learner's ``learn_one``).
LabelHook = Callable[[LabelJoin], None]


@dataclass(frozen=True)
class LabelBoard:
    """A consistent read of the labels: outcomes so far, live figures, estimates."""

    outcomes: dict[str, int] = field(default_factory=dict)
    live: list[WindowFigure] = field(default_factory=list)
    estimate: list[WindowFigure] = field(default_factory=list)
    held: int = 0

    def describe(self) -> list[str]:
        """Summary lines: the outcomes, then each live figure, then each estimate (marked).

        >>> board = LabelBoard({"joined": 90, "invalid": 2}, [WindowFigure("1", 100, "accuracy", 0.9, 90)])
        >>> for line in board.describe():
        ...     print(line)
        labels: 90 joined, 2 invalid
        live accuracy 90.00% over the last 90 of 100 (v1)
        """
        counted = ", ".join(f"{n:,} {o}" for o, n in self.outcomes.items() if n)
        waiting = f" · {self.held:,} waiting for their result" if self.held else ""
        lines = [f"labels: {counted or 'none received'}{waiting}"]
        lines += [f"live {figure.describe()}" for figure in self.live]
        lines += [figure.describe() for figure in self.estimate]
        return lines


@dataclass
class _Held:
    label: LabelMessage
    since: float  # monotonic


class LabelJoiner:
    """Runs the label sources and joins what they read to stored results; see the module doc."""

    def __init__(
        self,
        spec: LabelsSpec,
        store: ResultStore,
        *,
        produced: frozenset[str] = frozenset(),
        hooks: Sequence[LabelHook] = (),
    ) -> None:
        self.spec = spec
        self.store = store
        self.hooks = hooks  # the caller's list: hooks added before the first label still run
        self.source: LabelSource = spec.source.build(spec.fields)
        if isinstance(self.source, HttpLabels):
            self.source.problem = lambda label: label_problem(spec.task, label)
        metric: Literal["accuracy", "mae"] = "mae" if spec.task == "regression" else "accuracy"
        self._live = AccuracyWindows(spec.windows, metric=metric)
        estimate = spec.estimate_spec(produced)
        self._score = None if estimate is None else estimate.score
        self._estimator = (
            None
            if estimate is None
            else AccuracyEstimator(
                reference=estimate.reference, windows=spec.windows, bins=estimate.bins
            )
        )
        self._outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._incoming: queue.Queue[Incoming] = queue.Queue(maxsize=4096)
        self._stored: queue.Queue[list[Record]] = queue.Queue(maxsize=1024)
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._stop_source = threading.Event()
        self._stop_join = threading.Event()
        self._source_done = threading.Event()
        self._logged = 0
        self._reader = threading.Thread(
            target=self._read, name="fogline-labels-source", daemon=True
        )
        self._joiner = threading.Thread(target=self._join_loop, name="fogline-labels", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._reader.start()
        self._joiner.start()

    @property
    def ready(self) -> threading.Event:
        """Set once the source listens (the HTTP endpoint is up, the MQTT subscription confirmed)."""
        return self.source.ready

    def finish(self, wait_s: float, stop: threading.Event) -> None:
        """After the data: keep joining up to ``wait_s`` (or until the source ends, or ``stop``),
        then stop the source, join what is left, and count labels still waiting as unknown."""
        end = time.monotonic() + wait_s
        while not self._source_done.is_set() and not stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                break
            self._source_done.wait(min(left, 0.1))
        self._stop_source.set()
        self._reader.join()
        self._stop_join.set()
        self._joiner.join()

    # --- from the store writer --------------------------------------------------------------

    def stored(self, ids: Sequence[int], results: Sequence[Result]) -> None:
        """Results just stored (called by the store writer; never blocks it)."""
        # When full, held labels still find these results by the periodic store lookup.
        with contextlib.suppress(queue.Full):
            self._stored.put_nowait([Record(i, r) for i, r in zip(ids, results, strict=True)])

    # --- reading ----------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            for entry in self.source.read(self._stop_source):
                # A join thread that ended (it should not) takes nothing: never wait on it.
                while not self._stop_join.is_set() and self._joiner.is_alive():
                    try:
                        self._incoming.put(entry, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except FoglineError as exc:
            log.error("labels: the source stopped: %s", exc)
        except Exception as exc:  # a source's own bug must not go unseen
            log.exception("labels: the source stopped unexpectedly: %s", exc)
        finally:
            self.source.ready.set()
            self._source_done.set()

    # --- joining ----------------------------------------------------------------------------

    def _join_loop(self) -> None:
        try:
            self._join_until_done()
        except Exception as exc:  # never silent: the labels after this go uncounted
            log.exception("labels: the join thread stopped unexpectedly: %s", exc)

    def _join_until_done(self) -> None:
        next_retry = time.monotonic() + _RETRY_S
        while True:
            finishing = self._stop_join.is_set() and self._source_done.is_set()
            self._guarded(self._take_stored, None)
            batch = self._take_labels(block=not finishing)
            if batch:
                self._guarded(self._join, batch)
            if time.monotonic() >= next_retry:
                next_retry = time.monotonic() + _RETRY_S
                self._guarded(self._retry_held, False)
            if finishing and not batch and self._incoming.empty() and self._stored.empty():
                break
        self._guarded(self._retry_held, True)

    def _guarded(self, call: Callable[[Any], None], arg: Any) -> None:
        try:
            call(arg)
        except StoreError as exc:  # the store's trouble: log it, keep the thread alive
            log.error("labels: %s", exc)
        except Exception as exc:  # a bug here must not end the joining unseen
            log.exception("labels: joining failed: %s", exc)

    def _take_labels(self, block: bool) -> list[Incoming]:
        """The labels waiting, gathered for up to ``_GATHER_S`` after the first: one store
        transaction (one fsync the result writer waits behind) per gathering, not per request."""
        batch: list[Incoming] = []
        try:
            batch.append(self._incoming.get(timeout=0.05) if block else self._incoming.get_nowait())
        except queue.Empty:
            return batch
        until = time.monotonic() + (_GATHER_S if block else 0.0)
        while len(batch) < _GATHER_MAX:
            try:
                batch.append(self._incoming.get_nowait())
            except queue.Empty:
                left = until - time.monotonic()
                if left <= 0:
                    break
                try:
                    batch.append(self._incoming.get(timeout=min(left, 0.02)))
                except queue.Empty:
                    continue
        return batch

    def _take_stored(self, _: object = None) -> None:
        while True:
            try:
                records = self._stored.get_nowait()
            except queue.Empty:
                return
            with self._lock:
                if self._estimator is not None and self._score is not None:
                    for record in records:
                        score = _number(record.result.outputs.get(self._score))
                        if score is not None:
                            self._estimator.observe(record.result.model_version, score)
            # One batch may store an item id more than once (a looped data set, ids that
            # repeat): a held label joins the newest result of its id, and is taken once.
            newest: dict[str, Record] = {}
            for record in records:
                item_id = record.result.item_id
                if (
                    item_id is not None
                    and item_id in self._held
                    and (item_id not in newest or record.id > newest[item_id].id)
                ):
                    newest[item_id] = record
            if newest:
                self._settle([(self._held.pop(i).label, r) for i, r in newest.items()])

    def _join(self, batch: Sequence[Incoming]) -> None:
        good: dict[str, LabelMessage] = {}
        for entry in batch:
            if isinstance(entry, LostLabels):
                self._count("dropped", entry.position, entry.reason, entry.count)
            elif isinstance(entry, BadLabel):
                self._count("invalid", entry.position, entry.reason)
            elif (problem := label_problem(self.spec.task, entry.label)) is not None:
                self._count("invalid", entry.position, f"item {entry.item_id!r}: {problem}")
            elif entry.item_id in good:
                self._count(
                    "duplicate",
                    entry.position,
                    f"item {entry.item_id!r} labelled twice (the first label is kept)",
                )
            else:
                good[entry.item_id] = entry
        if not good:
            return
        found = self.store.results_by_item(good)
        pairs = [(label, found[i]) for i, label in good.items() if i in found]
        for item_id, label in good.items():
            if item_id in found:
                continue
            if item_id in self._held:
                self._count(
                    "duplicate", label.position, f"item {item_id!r} already has a label waiting"
                )
            else:
                self._hold(label)
        self._settle(pairs)

    def _settle(self, pairs: Sequence[tuple[LabelMessage, Record]]) -> None:
        """Compare each label with its result; store the joined ones in one transaction."""
        if not pairs:
            return
        earlier = self.store.labels_of(label.item_id for label, _ in pairs)
        rows: list[StoredLabel] = []
        joins: list[LabelJoin] = []
        for label, record in pairs:
            before = earlier.get(label.item_id)
            if before is not None and before.result_id == record.id:
                self._count(
                    "duplicate", label.position, f"item {label.item_id!r} is already labelled"
                )
                continue
            late = label.received_at - record.result.captured_at
            if late > self.spec.retention_s:
                self._count(
                    "expired",
                    label.position,
                    f"item {label.item_id!r}: its result is {late:,.0f} s old "
                    f"(retention_s {self.spec.retention_s:g})",
                )
                continue
            join = self._compare(label, record)
            if join is None:
                continue
            rows.append(
                StoredLabel(
                    label.item_id,
                    label.label,
                    label.received_at,
                    record.id,
                    record.result.model_version,
                    join.correct,
                    join.error,
                )
            )
            joins.append(join)
        self.store.put_labels(rows)
        with self._lock:
            for join in joins:
                version = join.record.result.model_version
                outcome = join.correct if join.correct is not None else join.error
                self._live.add(version, 0.0 if outcome is None else outcome)
                if (
                    self._estimator is not None
                    and self._score is not None
                    and join.correct is not None
                ):
                    score = _number(join.record.result.outputs.get(self._score))
                    if score is not None:
                        self._estimator.learn(score, join.correct)
            self._outcomes["joined"] += len(joins)
        for join in joins:
            for hook in self.hooks:
                try:
                    hook(join)
                except Exception as exc:  # a hook's failure is the hook's: log it, go on
                    log.warning("labels: a label hook failed on %s: %s", join.item_id, exc)

    def _compare(self, label: LabelMessage, record: Record) -> LabelJoin | None:
        value = record.result.outputs.get(self.spec.compare)
        if self.spec.task == "classification":
            if value is None:
                self._count(
                    "invalid",
                    label.position,
                    f"item {label.item_id!r}: its result has no {self.spec.compare!r}",
                )
                return None
            return LabelJoin(
                label.item_id, label.label, record, str(value) == str(label.label), None
            )
        predicted, truth = _number(value), _number(label.label)
        if predicted is None or truth is None:
            self._count(
                "invalid",
                label.position,
                f"item {label.item_id!r}: its result's {self.spec.compare!r} is {value!r}, not a number",
            )
            return None
        return LabelJoin(label.item_id, label.label, record, None, abs(predicted - truth))

    def _hold(self, label: LabelMessage) -> None:
        """Keep a label whose result is not stored yet; the oldest goes when ``max_held`` are."""
        self._held[label.item_id] = _Held(label, time.monotonic())
        while len(self._held) > self.spec.max_held:
            _, oldest = self._held.popitem(last=False)
            self._count(
                "unknown",
                oldest.label.position,
                f"item {oldest.label.item_id!r}: no result yet and {self.spec.max_held} labels waiting",
            )

    def _retry_held(self, final: bool) -> None:
        """Look for the results of waiting labels in the store; give up on the too-old ones."""
        if not self._held:
            return
        found = self.store.results_by_item(list(self._held))
        self._settle([(self._held.pop(i).label, record) for i, record in found.items()])
        now = time.monotonic()
        for item_id in list(self._held):
            held = self._held[item_id]
            if final or now - held.since > self.spec.retention_s:
                del self._held[item_id]
                why = (
                    "the run ended"
                    if final
                    else f"none within retention_s {self.spec.retention_s:g}"
                )
                self._count(
                    "unknown", held.label.position, f"no result for item {item_id!r} ({why})"
                )

    def _count(self, outcome: str, position: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._outcomes[outcome] += n
        self._logged += 1
        if self._logged <= _LOG_FIRST or self._logged % 1000 == 0:
            more = f" ({self._logged} so far)" if self._logged > _LOG_FIRST else ""
            log.warning("labels: %s %s: %s%s", outcome, position, reason, more)

    # --- reading the figures ------------------------------------------------------------------

    def board(self) -> LabelBoard:
        with self._lock:
            return LabelBoard(
                {o: self._outcomes.get(o, 0) for o in LABEL_OUTCOMES},
                self._live.figures(),
                [] if self._estimator is None else self._estimator.figures(),
                len(self._held),
            )


def label_families(board: LabelBoard, pipeline: str) -> Iterator[Any]:
    """The Prometheus families of a :class:`LabelBoard` (names from :mod:`fogline.metrics`)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    outcomes = CounterMetricFamily(
        LABELS, "Labels received, by outcome.", labels=["pipeline", "outcome"]
    )
    for outcome in LABEL_OUTCOMES:
        outcomes.add_metric([pipeline, outcome], board.outcomes.get(outcome, 0))
    yield outcomes
    tags = ["pipeline", "model_version", "window", "metric"]
    live = GaugeMetricFamily(
        LIVE_ACCURACY, "Live accuracy (or MAE) from joined late labels.", labels=tags
    )
    labelled = GaugeMetricFamily(
        LIVE_LABELLED, "Labelled items inside the live accuracy window.", labels=tags
    )
    for figure in board.live:
        key = [pipeline, figure.model_version, str(figure.window), figure.metric]
        live.add_metric(key, figure.value)
        labelled.add_metric(key, figure.count)
    yield live
    yield labelled
    estimate = GaugeMetricFamily(
        ACCURACY_ESTIMATE,
        "Accuracy estimated without labels from calibrated confidence (an estimate, CBPE).",
        labels=["pipeline", "model_version", "window"],
    )
    for figure in board.estimate:
        estimate.add_metric([pipeline, figure.model_version, str(figure.window)], figure.value)
    yield estimate


def check_labels(
    spec: LabelsSpec, produced: frozenset[str], stdin_source: bool, store: bool
) -> None:
    """The ``labels:`` checks that need the rest of the plan; errors name ``labels.<key>``."""
    if not store:
        raise ConfigError("labels: late labels are joined to stored results; remove `store: false`")
    if stdin_source and isinstance(spec.source, StdinLabelsSpec):
        raise ConfigError(
            "labels.source: stdin already feeds a data source; take labels another way"
        )
    try:
        spec.check(produced)
    except ConfigError as exc:
        raise ConfigError(f"labels.{exc}") from exc
