"""``offload``: ask a bigger remote model about the items the local one is unsure of.

A post-processing step that sends an item's model input (``send: input``,
the default) or its raw input as the source gave it (``send: raw``) to a
remote model over the Open Inference Protocol (``fogline serve``, Triton,
KServe; :class:`fogline.oip.RemoteEngine`) when one of its conditions holds:

* ``when: "score < 0.6"``: a condition over the result fields the steps
  before it wrote;
* ``sample: 0.05``: this fraction of all items, whatever the condition says
  (to keep measuring the local model against the remote one);
* ``when_saturated: N``: the local batcher holds at least ``N`` items.

The steps listed before it are run again on the remote outputs, so the
remote answer replaces the local fields (``mode: replace``) or is added under
``key`` (``mode: join``). Every result gets ``offloaded`` (true or false),
``offload_reason`` (why a wanted offload did not happen: ``timeout``,
``refused``, ``error``, ``late``, ``over_budget``, ``busy``, ``circuit_open``;
null otherwise), ``offload_model`` and ``offload_version`` (the remote model's, when
it answered).

Bounded: an item waits for its answer until ``timeout_ms`` after its
capture, then goes on with its local result; one that arrives with less than
a millisecond of that left is not sent at all (``late``). Counting from the
capture, not from the call, bounds what a silent remote costs the items queued
behind a waiting one: timeout_ms in all, not timeout_ms each. ``max_per_second`` is a budget (a token bucket with a
second's worth of burst); ``max_in_flight`` caps the calls running at once
(an item that finds them all taken waits for a slot until its deadline, then
is counted ``busy``; a call that passed its deadline keeps its slot until its
own deadline on the connection ends it). After ``circuit.failures`` consecutive failures the
circuit opens: no item is sent for ``circuit.open_s`` seconds, then one item
probes the remote (the others stay local, ``circuit_open``, while it runs); an
answer closes the circuit again, a failed probe opens it for twice as long (up
to ``circuit.max_open_s``). Calls already running when it opened do not count.

The remote model's signature is read from the server when the pipeline is
checked: a remote whose inputs or outputs do not fit the local model's is
refused then. A remote that cannot be reached at check time is not an error
(the pipeline runs offline-first, with every wanted offload counted
``refused`` until it is back); its signature is checked on first contact.

Concurrency: the collector thread calls the step item by item and waits for
each wanted answer, so results keep their order; the calls run on a small
pool of ``max_in_flight`` threads, which is what lets the step walk away from
a call at its deadline. The metrics (``fogline_offload_total{outcome}``, a
latency histogram) are written by the collector thread only.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from fogline.errors import (
    BadAnswer,
    ConfigError,
    FoglineError,
    Refused,
    SignatureMismatch,
    TimedOut,
    Unreachable,
)
from fogline.metrics import OFFLOAD, OFFLOAD_SECONDS, Histogram
from fogline.model import Signature
from fogline.oip import Answer, ModelUrl, RemoteEngine, signature_problem
from fogline.pipeline._base import PostprocessSpec, Spec, Stage
from fogline.pipeline._item import Item
from fogline.pipeline._rules import Condition
from fogline.pipeline.stages._common import PositiveInt

log = logging.getLogger("fogline.pipeline")

#: Why a wanted offload did not happen, in the order the summary shows them.
REASONS = ("timeout", "refused", "error", "late", "over_budget", "busy", "circuit_open")
#: An item with less than this left of its deadline is not sent (``late``).
_LEAST_S = 0.001
#: Every outcome counted: ``offloaded``, ``local`` (not wanted), and the reasons.
OUTCOMES = ("offloaded", "local", *REASONS)
#: The result fields the step writes.
FIELDS = ("offloaded", "offload_reason", "offload_model", "offload_version")
#: How long ``fogline check`` waits for the remote model's metadata.
CHECK_TIMEOUT_S = 3.0


class CircuitSpec(Spec):
    """When to stop trying: ``failures`` in a row open it for ``open_s`` (doubling to ``max_open_s``)."""

    failures: PositiveInt = 5
    open_s: float = Field(default=1.0, gt=0)
    max_open_s: float = Field(default=30.0, gt=0)


class OffloadSpec(PostprocessSpec):
    """Send the items a condition picks to ``url``; its answer replaces or joins the local one.

    >>> spec = OffloadSpec(type="offload", url="http://127.0.0.1:8000/v2/models/teacher",
    ...                    when="score < 0.6", timeout_ms=150)
    >>> spec.mode, spec.max_in_flight, spec.circuit.failures
    ('replace', 2, 5)
    >>> from pydantic import ValidationError
    >>> try:
    ...     OffloadSpec(type="offload", url="http://127.0.0.1:8000/teacher", sample=0.1)
    ... except ValidationError as exc:
    ...     print(exc.errors()[0]["msg"].split("URL: ")[1][:41])
    the path '/teacher' does not name a model
    """

    type: Literal["offload"]
    url: str
    when: str | None = None
    sample: float = Field(default=0.0, ge=0, le=1)
    when_saturated: PositiveInt | None = None
    send: Literal["input", "raw"] = "input"
    mode: Literal["replace", "join"] = "replace"
    key: str = Field(default="remote", min_length=1)
    timeout_ms: float = Field(default=200.0, gt=0, le=600_000)
    max_in_flight: PositiveInt = 2
    max_per_second: float | None = Field(default=None, gt=0)
    circuit: CircuitSpec = CircuitSpec()
    seed: int = 0

    @field_validator("url")
    @classmethod
    def _oip(cls, value: str) -> str:
        try:
            return str(ModelUrl.parse(value))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("when")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Condition(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _something_to_send(self) -> OffloadSpec:
        if self.when is None and not self.sample and self.when_saturated is None:
            raise ValueError(
                "nothing would be offloaded: give `when` (a condition), `sample` (a fraction) "
                "or `when_saturated` (a batcher queue depth)"
            )
        if self.circuit.max_open_s < self.circuit.open_s:
            raise ValueError("circuit.max_open_s must be at least circuit.open_s")
        return self

    # --- checked at load time ----------------------------------------------------------------

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        if not produced:
            raise ConfigError(
                "offload needs an earlier step: it runs the steps before it again on the remote "
                "outputs; put it after the step that reads the model outputs (e.g. classify)"
            )
        if self.when is not None:
            try:
                Condition(self.when).check(produced)
            except ConfigError as exc:
                raise ConfigError(f"when: {exc}") from exc
        clash = sorted(produced & set(FIELDS))
        if clash:
            raise ConfigError(
                f"an earlier step already writes {', '.join(clash)}: one offload step"
            )
        if self.mode == "join" and self.key in produced:
            raise ConfigError(
                f"key: result[{self.key!r}] is already written by an earlier step; "
                "give the remote answer its own `key`"
            )
        self._check_remote(outputs)
        added = set(FIELDS)
        if self.mode == "join":
            added |= {self.key} | {f"{self.key}.{name}" for name in produced if "." not in name}
        return produced | added

    def _check_remote(self, local: Signature) -> None:
        engine = RemoteEngine(self.url, timeout_s=max(CHECK_TIMEOUT_S, self.timeout_ms / 1000))
        try:
            remote = engine.signature
        except (Unreachable, TimedOut) as exc:
            log.warning(
                "offload: cannot check the remote model now (%s); checked on first contact", exc
            )
            return
        except (Refused, BadAnswer) as exc:
            raise ConfigError(
                f"url: {self.url} does not answer as an Open Inference Protocol model: {exc}"
            ) from exc
        finally:
            engine.close()
        problem = _problem(self.send, local, remote)
        if problem is not None:
            raise ConfigError(f"url: {self.url} cannot stand in for the local model: {problem}")

    def build(self, outputs: Signature) -> Stage:
        return _Offload(self, outputs)


def _problem(send: str, local: Signature, remote: Signature) -> str | None:
    """The signature mismatch that refuses ``remote``; with ``send: raw`` only outputs count."""
    if send == "raw":
        if len(remote.inputs) != 1:
            return f"it takes {len(remote.inputs)} inputs; `send: raw` sends one"
        local = Signature(remote.inputs, local.outputs)
    return signature_problem(local, remote)


def build_post(specs: Sequence[PostprocessSpec], outputs: Signature) -> list[Stage]:
    """The runtime post-processing steps; each offload step gets its own copies of the steps
    before it, to run on the remote outputs (state such as ``smooth`` is not shared)."""
    stages = []
    for index, spec in enumerate(specs):
        stage = spec.build(outputs)
        if isinstance(stage, _Offload):
            stage.earlier = [earlier.build(outputs) for earlier in specs[:index]]
        stages.append(stage)
    return stages


# --- runtime -------------------------------------------------------------------------------------


class _Circuit:
    """Closed → (``failures`` in a row) open → (after the back-off) one probe → closed or open.

    Only the collector thread calls it. An opening is counted once: the calls
    already running when it opened may fail too, but they neither count nor
    lengthen the back-off; only a failed probe doubles it (up to ``max_open_s``).

    >>> circuit = _Circuit(CircuitSpec(failures=2, open_s=1, max_open_s=4))
    >>> circuit.failed(0.0); circuit.failed(0.0); circuit.failed(0.1)  # the third was in flight
    >>> circuit.opened, circuit.allows(0.5), circuit.allows(1.0)
    (1, False, True)
    >>> circuit.take_probe(1.0), circuit.allows(1.0)  # one probe; the others stay local
    (True, False)
    >>> circuit.failed(1.2, probe=True); circuit.open_until, circuit.opened
    (3.2, 1)
    >>> circuit.take_probe(3.2); circuit.succeeded(); circuit.allows(3.3), circuit.back_off
    True
    (True, 1.0)
    """

    def __init__(self, spec: CircuitSpec) -> None:
        self.spec = spec
        self.failures = 0
        self.open_until = 0.0
        self.back_off = spec.open_s
        self.opened = 0  # times it opened (from closed)
        self.probing = False  # the one probe is in flight

    @property
    def state(self) -> str:
        if self.failures < self.spec.failures:
            return "closed"
        return "open" if time.monotonic() < self.open_until else "probing"

    def allows(self, now: float) -> bool:
        """Closed: yes; open: no; back-off over: yes for one probe at a time."""
        if self.failures < self.spec.failures:
            return True
        return now >= self.open_until and not self.probing

    def take_probe(self, now: float) -> bool:
        """Called for an item about to be sent: True if it is the probe (it holds the circuit)."""
        if self.failures < self.spec.failures or now < self.open_until:
            return False
        self.probing = True
        return True

    def succeeded(self) -> None:
        if self.failures >= self.spec.failures:
            log.info("offload: the remote answers again; circuit closed")
        self.failures = 0
        self.back_off = self.spec.open_s
        self.probing = False

    def failed(self, now: float, probe: bool = False) -> None:
        if probe:  # the remote still fails: back off longer
            self.probing = False
            self.back_off = min(self.back_off * 2, self.spec.max_open_s)
            self.open_until = now + self.back_off
            log.warning(
                "offload: the probe failed; circuit open, next try in %.3g s", self.back_off
            )
            return
        if self.failures >= self.spec.failures:  # open already: a call sent before it opened
            return
        self.failures += 1
        if self.failures < self.spec.failures:
            return
        self.open_until = now + self.back_off
        self.opened += 1
        log.warning(
            "offload: %d failures in a row; circuit open, next try in %.3g s",
            self.failures,
            self.back_off,
        )


class _Bucket:
    """A token bucket: ``rate`` per second with a second's worth (at least one) of burst."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class OffloadReading:
    """What an offload step did so far: outcomes counted, call latency, the circuit's state."""

    url: str
    outcomes: Mapping[str, int]
    circuit: str
    opened: int
    in_flight: int
    latency: Histogram
    model: str
    version: str

    def describe(self) -> str:
        """``142 offloaded · 3 timeout · 855 local · circuit closed · to digits-teacher v1``."""
        parts = [f"{self.outcomes.get(o, 0):,} {o}" for o in OUTCOMES if self.outcomes.get(o)]
        seen = self.latency.count
        mean = f" · mean call {1e3 * self.latency.total / seen:.2f} ms" if seen else ""
        circuit = f"circuit {self.circuit}" + (f" (opened {self.opened}x)" if self.opened else "")
        remote = f"{self.model} v{self.version}" if self.model else self.url
        return f"{' · '.join(parts) or 'nothing yet'} · {circuit}{mean} · to {remote}"


class _Offload:
    """The runtime step (see the module docstring)."""

    def __init__(self, spec: OffloadSpec, outputs: Signature) -> None:
        self.spec = spec
        self.local = outputs
        self.timeout_s = spec.timeout_ms / 1000
        self.engine = RemoteEngine(spec.url, timeout_s=self.timeout_s)
        self.earlier: list[Stage] = []
        self.condition = Condition(spec.when) if spec.when is not None else None
        self.circuit = _Circuit(spec.circuit)
        self.bucket = _Bucket(spec.max_per_second) if spec.max_per_second else None
        self.random = random.Random(spec.seed)
        self.depth: Callable[[], int] | None = None
        self.outcomes: Counter[str] = Counter()
        self.latency = Histogram()
        self.model = ""
        self.version = ""
        self._pool = ThreadPoolExecutor(spec.max_in_flight, thread_name_prefix="fogline-offload")
        self._slots = threading.Condition()
        self._in_flight = 0
        self._checked = False
        self._input = outputs.inputs[0].name if outputs.inputs else ""
        #: How many items the runner may hold while this step's calls run.
        self.offload_window = 8 * spec.max_in_flight

    # --- wiring ---------------------------------------------------------------------------

    def bind_metrics(self, metrics: Any) -> None:
        """Report to the pipeline's ``metrics``, and read its batcher's queue depth."""
        name = "offload" if self.spec.mode == "replace" else f"offload:{self.spec.key}"
        metrics.watch(name, self.reading, offload_families)
        depth = getattr(metrics, "queue_depth", None)
        if callable(depth):
            self.depth = lambda: int(depth("batcher") or 0)

    def reading(self) -> OffloadReading:
        return OffloadReading(
            self.spec.url,
            dict(self.outcomes),
            self.circuit.state,
            self.circuit.opened,
            self._in_flight,
            self.latency,
            self.model,
            self.version,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.engine.close()

    # --- per item -------------------------------------------------------------------------

    def _wanted(self, item: Item) -> bool:
        if self.spec.sample and self.random.random() < self.spec.sample:
            return True
        if self.condition is not None and self.condition(item.result):
            return True
        return (
            self.spec.when_saturated is not None
            and self.depth is not None
            and self.depth() >= self.spec.when_saturated
        )

    def __call__(self, item: Item) -> Item:
        """The item with the remote answer merged in, or with its local one and the reason."""
        started = self.start(item)
        return started.resolve_item() if isinstance(started, Deferred) else started

    def start(self, item: Item) -> Item | Deferred:
        """Send the item if it is wanted and allowed; a :class:`Deferred` while the call runs.

        The runner resolves deferred items in order, so several calls overlap
        (up to ``max_in_flight``) while results keep the source's order.
        """
        if not self._wanted(item):
            return self._finish(item, "local")
        now = time.monotonic()
        # The deadline counts from the item's capture, so a stalled remote delays the items
        # queued behind one item by at most timeout_ms in all, not timeout_ms each.
        deadline = min(item.t0, now) + self.timeout_s
        if deadline - now < _LEAST_S:
            return self._finish(item, "late")
        if not self.circuit.allows(now):
            return self._finish(item, "circuit_open")
        if self.bucket is not None and not self.bucket.take(now):
            return self._finish(item, "over_budget")
        with self._slots:  # all slots taken: wait for one, until the item's deadline at most
            while self._in_flight >= self.spec.max_in_flight:
                left = deadline - time.monotonic()
                if left < _LEAST_S:
                    return self._finish(item, "busy")
                self._slots.wait(left)
            self._in_flight += 1
        feeds = self._feeds(item)
        if feeds is None:
            self._release(None)
            return self._finish(item, "error")
        probe = self.circuit.take_probe(now)
        future = self._pool.submit(self._call, feeds)
        future.add_done_callback(self._release)
        return Deferred(self, item, future, now, deadline, probe)

    def settle(
        self,
        item: Item,
        future: Future[Answer],
        started: float,
        deadline: float,
        probe: bool = False,
    ) -> Item:
        """Wait for the answer until ``deadline`` at most; merge it, or count why not.

        ``probe``: this call is the circuit's probe (its failure backs off longer).
        """
        try:
            answer = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return self._failed(item, "timeout", started, None, probe)
        except Unreachable as exc:
            return self._failed(item, "refused", started, exc, probe)
        except TimedOut as exc:
            return self._failed(item, "timeout", started, exc, probe)
        except FoglineError as exc:
            return self._failed(item, "error", started, exc, probe)
        except Exception as exc:  # a bug in a client library must not stop the stream
            return self._failed(item, "error", started, exc, probe)
        self.latency.observe(time.monotonic() - started)
        try:
            merged = self._merge(item, answer)
        except FoglineError as exc:
            return self._failed(item, "error", started, exc, probe, timed=False)
        self.circuit.succeeded()
        return merged

    def _feeds(self, item: Item) -> dict[str, np.ndarray] | None:
        data = item.meta.get("raw") if self.spec.send == "raw" else item.data
        if data is None:
            log.warning("offload: %s has no raw input to send", item.position)
            return None
        name = self._input if self.spec.send == "input" else ""
        return {name: np.expand_dims(np.asarray(data), 0)}

    def _call(self, feeds: dict[str, np.ndarray]) -> Answer:
        engine = self.engine
        if not self._checked:  # first contact: the remote must fit, as `fogline check` says
            remote = engine.signature
            problem = _problem(self.spec.send, self.local, remote)
            if problem is not None:
                raise SignatureMismatch(
                    f"{engine.url} cannot stand in for the local model: {problem}"
                )
            self._checked = True
        if "" in feeds:
            feeds = {engine.signature.inputs[0].name: feeds[""]}
        return engine.infer(feeds)

    def _release(self, _: Future[Answer] | None) -> None:
        with self._slots:
            self._in_flight -= 1
            self._slots.notify()

    def _merge(self, item: Item, answer: Answer) -> Item:
        outputs = {name: value[0] for name, value in answer.outputs.items()}
        shadow = Item(
            item.source, item.sequence, item.captured_at, item.data, dict(item.meta), outputs
        )
        current: Item | None = shadow
        for stage in self.earlier:
            assert current is not None
            current = stage(current)
            if current is None:
                raise BadAnswer(
                    f"offload: a step before it held back the remote answer for {item.position}"
                )
        assert current is not None
        if self.spec.mode == "replace":
            item.result.update(current.result)
            item.meta["answered_by"] = (answer.model, answer.version)  # the result's model
        else:
            item.result[self.spec.key] = current.result
        self.model, self.version = answer.model, answer.version
        return self._finish(item, "offloaded", answer.model, answer.version)

    def _failed(
        self,
        item: Item,
        reason: str,
        started: float,
        exc: BaseException | None,
        probe: bool,
        timed: bool = True,
    ) -> Item:
        now = time.monotonic()
        if timed:
            self.latency.observe(now - started)
        self.circuit.failed(now, probe)
        if self.outcomes[reason] < 3 or self.outcomes[reason] % 1000 == 0:  # a few, then rarely
            log.warning(
                "offload: %s not offloaded (%s): %s", item.position, reason, exc or "deadline"
            )
        return self._finish(item, reason)

    def _finish(
        self, item: Item, outcome: str, model: str | None = None, version: str | None = None
    ) -> Item:
        self.outcomes[outcome] += 1
        offloaded = outcome == "offloaded"
        item.result["offloaded"] = offloaded
        item.result["offload_reason"] = None if offloaded or outcome == "local" else outcome
        item.result["offload_model"] = model
        item.result["offload_version"] = version
        return item


class Deferred:
    """An item whose remote answer is on its way, and the steps still to run after it.

    ``ready()`` says that :meth:`resolve` would not wait; :meth:`resolve`
    waits until the item's deadline at most, merges the answer (or counts why
    not), then runs ``rest``: the post-processing steps listed after the
    offload step. The runner's collector resolves them in arrival order.
    """

    __slots__ = ("deadline", "future", "item", "probe", "rest", "started", "step")

    def __init__(
        self,
        step: _Offload,
        item: Item,
        future: Future[Answer],
        started: float,
        deadline: float,
        probe: bool = False,
    ) -> None:
        self.step, self.item, self.future = step, item, future
        self.started, self.deadline, self.probe = started, deadline, probe
        self.rest: Sequence[Stage] = ()

    def ready(self) -> bool:
        return self.future.done() or time.monotonic() >= self.deadline

    def resolve_item(self) -> Item:
        """The item with the offload step done (``rest`` not run)."""
        return self.step.settle(self.item, self.future, self.started, self.deadline, self.probe)

    def resolve(self) -> Item | None:
        """The item after the offload step and ``rest``; None if a later step held it back."""
        current: Item | None = self.resolve_item()
        for stage in self.rest:
            if current is None:
                return None
            current = stage(current)
        return current


def offload_families(reading: OffloadReading, pipeline: str) -> Iterator[Any]:
    """The Prometheus families of one offload step's reading (``Metrics.watch`` calls this)."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    labels = ["pipeline", "remote", "outcome"]
    counter = CounterMetricFamily(
        OFFLOAD,
        "Items an offload step considered, by outcome (offloaded, local, or why not).",
        labels=labels,
    )
    for outcome in OUTCOMES:
        counter.add_metric([pipeline, reading.url, outcome], reading.outcomes.get(outcome, 0))
    yield counter
    latency = HistogramMetricFamily(
        OFFLOAD_SECONDS,
        "Time an item waited for the remote model (answered or not).",
        labels=["pipeline", "remote"],
    )
    latency.add_metric([pipeline, reading.url], reading.latency.cumulative(), reading.latency.total)
    yield latency
