"""Hard examples: a pipeline's ``capture:`` section keeps the items its model is unsure of.

::

    capture:
      when: "score < 0.6"        # or "entropy > 1.2", "drift.alarm", "not confident", a rule's name
      per_minute: 10             # caps, each optional: at most this many captures in any
      per_hour: 200              #   sliding minute / hour / day
      per_day: 2000
      max_bytes: 50MB            # what the store's captures may take together

``when`` is a condition in the rules' language, on the same fields rules see
(the result's fields, ``source``, ``model``, the rules' names as booleans),
plus ``entropy``: the entropy in nats of the ``classify`` stage's class
probabilities (``ln(classes)`` when the model cannot tell them apart), computed
only when the condition names it. A capture keeps the model's input for the
item (its ``data`` after preprocessing: what the model saw) and the model's
answer (the result), in the results store, where the store's retention
applies to it too.

An item that meets ``when`` is stored unless a cap is reached; then it is
counted ``capped`` and dropped. A full ``max_bytes`` refuses new captures
rather than evicting old ones: captures are waiting for labels and export,
and under a lasting drift an oldest-first eviction would churn the set with
near-duplicates of the newest failure and throw away the earlier examples
whose labels may be on their way. The store's ``retention`` (``max_age_s``)
is what frees room, on the same schedule as results.

Concurrency: :meth:`Capturer.consider` runs on the collector thread (the
decision and the ``.npy`` bytes, a few microseconds for an accepted item);
the store writer thread writes the accepted captures after each batch of
results (:meth:`Capturer.write`), so the collector never waits on SQLite.
Counts and bytes are shared between the two under one lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from pydantic import ByteSize, Field
from pydantic.functional_validators import AfterValidator

from fogline.errors import ConfigError, ItemError, StoreError
from fogline.model import Signature
from fogline.pipeline._base import Spec
from fogline.pipeline._item import Item
from fogline.pipeline._metrics import Metrics
from fogline.pipeline._rules import Condition
from fogline.pipeline.stages._classify import ClassifySpec
from fogline.pipeline.stages._common import pick_output
from fogline.store import Capture, ResultStore

if TYPE_CHECKING:
    from fogline.pipeline._spec import PipelineSpec

log = logging.getLogger("fogline.pipeline")

#: The field ``capture.when`` may name where a ``classify`` stage ran.
ENTROPY = "entropy"
#: The caps' windows, in seconds.
_WINDOWS = {"per_minute": 60.0, "per_hour": 3600.0, "per_day": 86400.0}
_LOG_FIRST = 20


def _parses(value: str) -> str:
    try:
        Condition(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return value


class CaptureSpec(Spec):
    """``capture: {when: "score < 0.6", per_minute: 10, per_day: 1000, max_bytes: 50MB}``

    >>> spec = CaptureSpec(when="not confident", per_minute=5, max_bytes="1MiB")
    >>> spec.max_bytes, spec.per_day
    (1048576, None)
    """

    when: Annotated[str, AfterValidator(_parses)]
    per_minute: int | None = Field(default=None, ge=1)
    per_hour: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)
    max_bytes: ByteSize | None = Field(default=None, ge=1)


def check_capture(spec: PipelineSpec, signature: Signature, fields: frozenset[str]) -> None:
    """Raise :class:`ConfigError` (naming ``capture...``) unless the section fits the pipeline.

    ``fields`` are what rules and sinks may use; ``entropy`` is added where a
    ``classify`` stage runs.
    """
    capture = spec.capture
    if capture is None:
        return
    if spec.store is False:
        raise ConfigError("capture: captures are kept in the store; remove `store: false`")
    condition = Condition(capture.when)
    known = fields
    if _classify(spec) is not None:
        known = known | {ENTROPY}
    elif ENTROPY in condition.names and ENTROPY not in fields:
        raise ConfigError(
            f"capture.when: {capture.when!r} uses entropy, the entropy of a classify stage's "
            "class probabilities, but this pipeline has no `classify` post-processing step"
        )
    try:
        condition.check(known)
    except ConfigError as exc:
        raise ConfigError(f"capture.when: {exc}") from exc


def _classify(spec: PipelineSpec) -> ClassifySpec | None:
    """The first ``classify`` step: the class scores ``entropy`` is computed from."""
    for step in spec.postprocess:
        if isinstance(step, ClassifySpec):
            return step
    return None


def entropy(scores: np.ndarray, softmax: bool) -> float:
    """The entropy (nats) of class ``scores``: logits when ``softmax``, else probabilities.

    >>> round(entropy(np.zeros(10), softmax=True), 4), round(math.log(10), 4)
    (2.3026, 2.3026)
    >>> entropy(np.array([0.0, 1.0, 0.0]), softmax=False)
    0.0
    >>> big = np.random.default_rng(0).normal(size=100)
    >>> abs(entropy(big, True) - entropy(np.exp(big), False)) < 1e-9
    True
    """
    flat = np.asarray(scores).reshape(-1)
    if flat.size <= _SMALL:  # python floats: a few microseconds, where numpy's calls cost ~25
        values = flat.tolist()
        if softmax:  # p = w / Z with w = exp(v - peak): H = ln Z - sum(w * (v - peak)) / Z
            peak = max(values)
            shifted = [v - peak for v in values]
            weights = [math.exp(v) for v in shifted]
            total = sum(weights)
            spread = sum(w * v for w, v in zip(weights, shifted, strict=True))
            if not math.isfinite(spread):  # NaN or inf among the scores
                raise ValueError("the class scores are not finite")
            return max(0.0, math.log(total) - float(spread) / total)
        weights = [v if v > 0 else 0.0 for v in values]
        total = sum(weights)
        if not total > 0 or not math.isfinite(total):
            raise ValueError("the class scores do not make a distribution")
        return -sum(w / total * math.log(w / total) for w in weights if w > 0) + 0.0
    array = flat.astype(np.float64)
    array = np.exp(array - array.max()) if softmax else np.clip(array, 0.0, None)
    total = float(array.sum())
    if not total > 0 or not math.isfinite(total):
        raise ValueError("the class scores do not make a distribution")
    p = array[array > 0] / total
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: no "-0.0" for a certain answer


#: Up to this many classes, python floats beat numpy's per-call overhead.
_SMALL = 64


@dataclass
class _Window:
    """At most ``limit`` captures in any ``seconds``: the times of the ones inside it."""

    name: str
    seconds: float
    limit: int
    times: deque[float]

    def full(self, now: float) -> bool:
        while self.times and self.times[0] <= now - self.seconds:
            self.times.popleft()
        return len(self.times) >= self.limit


class Capturer:
    """Decides which items to capture, within the caps, and writes them to the store.

    ``model`` is the model's name and version, as results record them.
    Built by the runner from a checked plan; ``consider`` on the collector
    thread, ``write`` and ``after_retention`` on the store writer thread.
    """

    def __init__(
        self,
        spec: CaptureSpec,
        pipeline: PipelineSpec,
        signature: Signature,
        input_name: str,
        model: tuple[str, str],
        metrics: Metrics,
    ) -> None:
        self.spec = spec
        self.model, self.model_version = model
        self.condition = Condition(spec.when)
        self.input_name = input_name
        self.metrics = metrics
        self._entropy: tuple[str, bool] | None = None
        classify = _classify(pipeline)
        if classify is not None and ENTROPY in self.condition.names:
            output = pick_output(signature, classify.output, "classify").name
            self._entropy = (output, classify.softmax)
        self._windows = [
            _Window(name, seconds, limit, deque())
            for name, seconds in _WINDOWS.items()
            if (limit := getattr(spec, name)) is not None
        ]
        self._max_bytes = None if spec.max_bytes is None else int(spec.max_bytes)
        self._lock = threading.Lock()
        self._stored_bytes = 0  # in the store
        self._pending_bytes = 0  # accepted, not written yet
        self._failures = 0
        for outcome in ("stored", "capped"):
            metrics.capture(outcome, 0)  # the series exist from the start

    def start(self, store: ResultStore) -> None:
        """Carry the caps over from earlier runs: the store's captures and their times."""
        now_wall, now = time.time(), time.monotonic()
        if self._windows:
            longest = max(w.seconds for w in self._windows)
            for at in store.capture_times(now_wall - longest):
                for window in self._windows:
                    if at > now_wall - window.seconds:
                        window.times.append(now - (now_wall - at))
        if self._max_bytes is not None:
            self._stored_bytes = store.capture_bytes()

    # --- collector thread -------------------------------------------------------------------

    def consider(self, item: Item, fields: dict[str, Any]) -> Capture | None:
        """The capture of ``item`` when it meets ``when`` and no cap is reached, else None."""
        try:
            if self._entropy is not None:
                name, softmax = self._entropy
                try:
                    fields[ENTROPY] = entropy(item.outputs[name], softmax)
                except (KeyError, ValueError) as exc:
                    raise ItemError(f"capture: no entropy for this item ({exc})") from exc
            if not self.condition(fields):
                return None
        except ItemError as exc:
            self._failed(1, f"{item.position}: {exc}")
            return None
        now = time.monotonic()
        with self._lock:
            if any(window.full(now) for window in self._windows):
                self.metrics.capture("capped")
                return None
        try:
            capture = Capture.of(
                np.asarray(item.data),
                item_id=str(item.meta.get("id") or f"{item.source}#{item.sequence}"),
                source=item.source,
                captured_at=item.captured_at,
                model=self.model,
                model_version=self.model_version,
                reason=self.spec.when,
                input_name=self.input_name,
                answer=item.result,
                position=item.position,
            )
        except ValueError as exc:
            self._failed(1, f"{item.position}: {exc}")
            return None
        with self._lock:
            size = capture.bytes
            if (
                self._max_bytes is not None
                and self._stored_bytes + self._pending_bytes + size > self._max_bytes
            ):
                self.metrics.capture("capped")
                return None
            self._pending_bytes += size
            for window in self._windows:
                window.times.append(now)
        return capture

    # --- store writer thread ----------------------------------------------------------------

    def write(self, store: ResultStore, captures: Sequence[Capture]) -> None:
        """Store the accepted ``captures`` (one transaction); count them stored or failed."""
        if not captures:
            return
        try:
            store.add_captures(captures)
        except StoreError as exc:
            self.lost(captures, str(exc))
            return
        size = sum(c.bytes for c in captures)
        with self._lock:
            self._pending_bytes -= size
            self._stored_bytes += size
        self.metrics.capture("stored", len(captures))

    def lost(self, captures: Sequence[Capture], why: str) -> None:
        """Accepted ``captures`` that could not be stored: count them failed, free their bytes."""
        if not captures:
            return
        with self._lock:
            self._pending_bytes -= sum(c.bytes for c in captures)
        self._failed(len(captures), f"{len(captures)} capture(s) not stored: {why}")

    def after_retention(self, store: ResultStore) -> None:
        """Retention may have removed captures: count the bytes the store holds afresh."""
        if self._max_bytes is None:
            return
        try:
            held = store.capture_bytes()
        except StoreError as exc:
            log.warning("capture: cannot count the store's captures: %s", exc)
            return
        with self._lock:
            self._stored_bytes = held

    def _failed(self, n: int, why: str) -> None:
        self.metrics.capture("failed", n)
        self._failures += 1
        if self._failures <= _LOG_FIRST or self._failures % 1000 == 0:
            log.warning("capture: %s", why)
