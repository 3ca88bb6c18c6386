"""``drift``: is what the model sees (or says) still like its reference?

A post-processing step that feeds one number or vector per item to a
:mod:`fogline.monitor` drift detector and writes
``result[key] = {"score", "alarm", "detector"}`` (``key`` defaults to
``drift``), so rules, sink ``when:``s and ``store.sync`` can say
``drift.alarm``. What it watches (``on``):

* ``input``: the model's input for the item (``item.data`` after
  preprocessing), flattened: 64 features for the digits model;
* a model output by name (``logits``);
* a result field an earlier step wrote (``score``).

The reference is the first ``items`` items after ``warmup`` (``reference:
{items: 500}``), or a data set: an ``.npz`` with the model input's array (or
one named after ``on``), or any data ``fogline.data.load_dataset`` reads, such
as the calibration data ``fogline optimize`` takes.

Cost is bounded: values are copied into a buffer and the detector runs once
every ``every`` items on the whole buffer (vectorized), so an item costs one
copy; the result carries the latest verdict. ``features: N`` watches an
evenly spaced subsample of a long input. ``budget: 0.005`` caps the step's
share of the wall-clock time at 0.5 %: above it, only every 2nd, 4th, ... (at
most 64th) item is fed to the detector, so a saturated pipeline keeps its
pace. It is off by default: the step cannot tell a saturated pipeline from a
paced one on a busy machine, and a paced one should watch every item. An alarm is an event: one WARNING
log line when it is raised, and the pipeline's ``fogline_drift_*`` metrics.
Each source has its own detector (two cameras never mix); the metrics show a
step's worst source.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import numpy as np
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from fogline.data import load_dataset
from fogline.errors import ConfigError, FoglineError, ItemError
from fogline.model import Signature
from fogline.monitor import DETECTORS, Detector, make_detector
from fogline.pipeline._base import PostprocessSpec, Spec, Stage
from fogline.pipeline._item import Item
from fogline.pipeline.stages._common import PositiveInt, per_item

log = logging.getLogger("fogline.pipeline")

#: The shortest span (seconds) over which a step's share of the time is judged.
_PACE_S = 0.2
#: At most every this many items is fed to the detector when over budget.
_MAX_STRIDE = 64
#: The keys of ``result[key]``; rules may read them as ``drift.alarm``.
FIELDS = ("score", "alarm", "detector")
_DECIMALS = 6


class DriftEvents(Protocol):
    """What a drift step reports to (the pipeline's metrics): one call per test."""

    def drift(self, stage: str, detector: str, score: float, alarm: bool, raised: bool) -> None: ...


class ReferenceItems(Spec):
    """``reference: {items: N}``: the first ``N`` items (after ``warmup``) are the reference."""

    items: PositiveInt = 500


def _data_spec(value: Any, info: ValidationInfo) -> Any:
    """A reference data set: a file (resolved beside the pipeline file) or ``module:function``."""
    if not isinstance(value, str | Path):
        return value
    path = Path(value).expanduser()
    base = (info.context or {}).get("base")
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    if path.exists():
        return str(path)
    if ":" in str(value):
        return str(value)
    raise ValueError(f"no such reference file: {path} (or name data as module:function)")


class DriftSpec(PostprocessSpec):
    """Watch ``on`` with ``detector`` against ``reference``; writes ``result[key]``.

    >>> from fogline.model import TensorSpec
    >>> sig = Signature((TensorSpec("x", "float32", ("batch", 2)),), ())
    >>> spec = DriftSpec(
    ...     type="drift", detector="ks", reference={"items": 50}, every=10, budget=None
    ... )
    >>> stage = spec.build(sig)
    >>> rng = np.random.default_rng(0)
    >>> items = [Item("s", i, 0.0, rng.normal(size=2)) for i in range(400)]
    >>> items += [Item("s", i, 0.0, rng.normal(3.0, size=2)) for i in range(400, 500)]
    >>> verdicts = [stage(item).result["drift"] for item in items]
    >>> [i for i, v in enumerate(verdicts) if v["alarm"]][:1], verdicts[-1]["detector"]
    ([489], 'ks')
    """

    type: Literal["drift"]
    on: str = Field(default="input", min_length=1)
    detector: str = "adwin"
    reference: ReferenceItems | Annotated[str, BeforeValidator(_data_spec)] = ReferenceItems()
    warmup: int = Field(default=0, ge=0)
    key: str = Field(default="drift", min_length=1)
    every: PositiveInt = 32
    budget: float | None = Field(default=None, gt=0, le=1)
    features: PositiveInt | None = None
    params: dict[str, float | int] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true (as GitHub Actions files know).
        if isinstance(data, dict) and True in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("detector")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DETECTORS:
            names = list(DETECTORS)
            raise ValueError(
                f"no drift detector {value!r}; choose {', '.join(names[:-1])} or {names[-1]}"
            )
        return value

    # --- checked at load time ----------------------------------------------------------------

    def _watched(self, signature: Signature, produced: frozenset[str]) -> tuple[str, int | None]:
        """What ``on`` names (``input``, ``output`` or ``field``) and its values per item."""
        if self.on == "input":
            return "input", _size(per_item(signature.inputs[0])) if signature.inputs else None
        for spec in signature.outputs:
            if spec.name == self.on:
                return "output", _size(per_item(spec))
        if self.on in produced:
            return "field", 1
        choices = ["input", *signature.output_names, *sorted(k for k in produced if "." not in k)]
        raise ConfigError(
            f"on: {self.on!r} is neither the model input, a model output nor a result field "
            f"an earlier step writes; choose one of {', '.join(choices)}"
        )

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        kind, size = self._watched(outputs, produced)
        if self.key in produced:
            raise ConfigError(
                f"key: result[{self.key!r}] is already written by an earlier step; "
                "give this drift step its own `key`"
            )
        reference = self._reference(outputs, kind, size)
        least = DETECTORS[self.detector].min_reference
        items = len(reference) if reference is not None else self.reference.items  # type: ignore[union-attr]
        if items < least:
            raise ConfigError(
                f"reference: {self.detector} needs at least {least} items, got {items}"
            )
        watched = _subsample(size, self.features)[1] if size else None
        self._detector(reference, watched)
        return produced | {self.key} | {f"{self.key}.{f}" for f in FIELDS}

    def _reference(self, signature: Signature, kind: str, size: int | None) -> np.ndarray | None:
        """The reference file's values as ``(n, size)``, checked; ``None`` for ``{items: N}``."""
        if not isinstance(self.reference, str):
            return None
        try:
            if kind == "input":
                name = signature.inputs[0].name
                data = load_dataset(self.reference, signature).array(name)
            else:
                name = self.on
                data = _npz_array(self.reference, name)
        except FoglineError as exc:
            raise ConfigError(f"reference: {exc}") from exc
        values = data.reshape(len(data), -1).astype(np.float64)
        if size is not None and values.shape[1] != size:
            raise ConfigError(
                f"reference: {self.reference} has {values.shape[1]} values per item in "
                f"{name!r}, but {self.on!r} has {size}"
            )
        if not np.isfinite(values).all():
            raise ConfigError(f"reference: {self.reference} holds NaN or infinity in {name!r}")
        return values

    def _detector(self, reference: np.ndarray | None, features: int | None) -> Detector:
        """The detector on ``reference``, or on a stand-in that only checks the parameters."""
        if reference is None:
            stand_in = np.random.default_rng(0).normal(size=(64, features or 1))
            reference = stand_in
        elif features is not None and features != reference.shape[1]:
            reference = reference[:, _subsample(reference.shape[1], self.features)[0]]
        try:
            return make_detector(self.detector, reference, reference.shape[1], **self.params)
        except FoglineError as exc:
            raise ConfigError(f"params: {exc}") from exc

    def build(self, outputs: Signature) -> Stage:
        kind, size = self._watched(outputs, frozenset({self.on}))
        reference = self._reference(outputs, kind, size)
        pick = None if size is None else _subsample(size, self.features)[0]
        if reference is not None and pick is not None:
            reference = reference[:, pick]
        self._detector(reference, None)  # checks it, and imports River now, not mid-stream
        return _Drift(self, kind, reference, pick)


def _size(dims: tuple[int | None, ...]) -> int | None:
    return math.prod(d for d in dims if d is not None) if None not in dims else None


def _subsample(size: int | None, features: int | None) -> tuple[slice, int | None]:
    """Every ``step``-th value so that at most ``features`` are kept, and how many that is."""
    if size is None or features is None or features >= size:
        return slice(None), size
    step = -(-size // features)
    return slice(None, None, step), len(range(0, size, step))


def _npz_array(spec: str, name: str) -> np.ndarray:
    from fogline.errors import DataError

    try:
        with np.load(spec, allow_pickle=False) as npz:
            if name not in npz.files:
                raise DataError(f"{spec} has no array {name!r}; it has {', '.join(npz.files)}")
            return np.asarray(npz[name])
    except (OSError, ValueError) as exc:
        raise DataError(f"{spec}: not a readable .npz file with {name!r}: {exc}") from exc


@dataclass(slots=True)
class _Watch:
    """One source's detector, the values waiting for its next test, and the latest verdict."""

    warmup: int
    verdict: dict[str, Any]
    detector: Detector | None = None
    reference: list[np.ndarray] = field(default_factory=list)
    buffer: np.ndarray | None = None
    filled: int = 0


class _Drift:
    """The runtime step: buffer values, test every ``every`` items, share the latest verdict."""

    def __init__(
        self, spec: DriftSpec, kind: str, reference: np.ndarray | None, pick: slice | None
    ) -> None:
        self.spec, self.kind, self.key, self.on = spec, kind, spec.key, spec.on
        self.every = spec.every
        self.reference = reference
        self.events: DriftEvents | None = None
        self._wanted = getattr(spec.reference, "items", 0)
        self._size_known = pick is not None
        self._pick = pick or slice(None)
        self._watches: dict[str, _Watch] = {}
        self._latest: dict[str, tuple[float, bool]] = {}
        self.skipped = 0
        #: Feed the detector every ``stride``-th item; raised while the step is over budget.
        self.stride = 1
        #: Only a step with a ``budget`` times itself (two clock reads per item fed).
        self._paced = spec.budget is not None
        self._skip = 0
        self._spent = 0.0
        self._clock = time.perf_counter()

    def bind_metrics(self, events: DriftEvents) -> None:
        """Report each test to ``events`` (the runner passes its metrics)."""
        self.events = events

    def _value(self, item: Item) -> Any:
        if self.kind == "input":
            value = item.data
        elif self.kind == "output":
            try:
                value = item.outputs[self.on]
            except KeyError:
                raise ItemError(
                    f"drift: the item has no model output {self.on!r}", item.position
                ) from None
        else:
            value = item.result.get(self.on)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ItemError(
                    f"drift: result[{self.on!r}] is {value!r}, not a number", item.position
                )
            return float(value)
        if not isinstance(value, np.ndarray):
            raise ItemError(
                f"drift: {self.on} is a {type(value).__name__}, not an array", item.position
            )
        return value.reshape(-1)[self._pick]

    def _watch(self, source: str) -> _Watch:
        verdict = {"score": 0.0, "alarm": False, "detector": self.spec.detector}
        watch = self._watches[source] = _Watch(self.spec.warmup, verdict)
        if self.reference is not None:
            watch.detector = self._build(self.reference, source)
            if not watch.warmup:
                watch.buffer = np.empty((self.every, watch.detector.features))
        return watch

    def _build(self, reference: np.ndarray, where: str) -> Detector:
        try:
            return make_detector(
                self.spec.detector, reference, reference.shape[1], **self.spec.params
            )
        except FoglineError as exc:  # checked at load time; a learned reference may still fail
            raise ItemError(f"drift: cannot build the detector: {exc}", where) from exc

    def _fast(self, item: Item) -> Any:
        """The value, without the checks: :meth:`_value` explains when this fails."""
        if self.kind == "input":
            return item.data.reshape(-1)[self._pick]
        if self.kind == "output":
            return item.outputs[self.on].reshape(-1)[self._pick]
        return item.result[self.on]

    def __call__(self, item: Item) -> Item:
        watch = self._watches.get(item.source)
        if watch is None:
            watch = self._watch(item.source)
        buffer = watch.buffer
        if buffer is None:  # warming up, learning the reference
            self._start(watch, item)
        elif self._skip:  # over budget: this item only carries the latest verdict
            self._skip -= 1
        else:
            self._skip = self.stride - 1
            started = time.perf_counter() if self._paced else 0.0
            try:
                buffer[watch.filled] = self._fast(item)
            except (AttributeError, KeyError, TypeError, ValueError):
                value = self._value(item)  # raises ItemError naming what is wrong
                raise ItemError(
                    f"drift: {self.on} has {np.size(value)} value(s), "
                    f"the reference {buffer.shape[1]}",
                    item.position,
                ) from None
            watch.filled += 1
            if watch.filled == self.every:
                watch.filled = 0
                assert watch.detector is not None
                self._test(watch, watch.detector, buffer, item)
                if self._paced:
                    self._spent += time.perf_counter() - started
                    self._pace()
            elif self._paced:
                self._spent += time.perf_counter() - started
        item.result[self.key] = watch.verdict
        return item

    def _pace(self) -> None:
        """Keep the step's share of the wall-clock time under ``budget`` by feeding fewer items.

        The share is judged every fifth of a second, on wall-clock time, so it
        counts what this step costs the collector thread, waits for the GIL
        included. Above ``budget`` the stride grows at once to the power of two
        that brings the share under it (up to 64); under a quarter of it, it
        halves.
        """
        budget = self.spec.budget
        now = time.perf_counter()
        elapsed = now - self._clock
        if budget is None or elapsed < _PACE_S:
            return
        share = self._spent / elapsed
        stride = self.stride
        if share > budget and stride < _MAX_STRIDE:
            stride = min(_MAX_STRIDE, stride << max(1, math.ceil(math.log2(share / budget))))
        elif share < budget / 4 and stride > 1:
            stride //= 2
        if stride != self.stride:
            log.debug(
                "drift %s: %.1f %% of the time; now every %d item(s)", self.key, 100 * share, stride
            )
            self.stride = stride
        self._spent, self._clock = 0.0, now

    def _start(self, watch: _Watch, item: Item) -> None:
        if watch.warmup:
            watch.warmup -= 1
        elif watch.detector is None:
            self._learn(watch, item)
        if watch.detector is not None and not watch.warmup:
            watch.buffer = np.empty((self.every, watch.detector.features))

    def _learn(self, watch: _Watch, item: Item) -> None:
        value = self._value(item)
        if not self._size_known and self.kind != "field":  # the first item says the size
            self._size_known = True
            self._pick, _ = _subsample(int(np.size(value)), self.spec.features)
            value = self._value(item)
        values = np.array(value, dtype=np.float64, ndmin=1)
        if not np.isfinite(values).all():  # left out of the reference, as out of a test
            self.skipped += 1
            log.warning(
                "drift %s: %s holds NaN or infinity; not part of the reference (%d so far)",
                self.key,
                item.position,
                self.skipped,
            )
            return
        watch.reference.append(values)
        if len(watch.reference) >= self._wanted:
            try:
                reference = np.stack(watch.reference)
            except ValueError:
                watch.reference.clear()
                raise ItemError(
                    "drift: the reference items differ in size", item.position
                ) from None
            watch.reference.clear()
            watch.detector = self._build(reference, item.position)

    def _test(self, watch: _Watch, detector: Detector, buffer: np.ndarray, item: Item) -> None:
        finite = np.isfinite(buffer).all(axis=1)
        batch = buffer if finite.all() else buffer[finite]
        if len(batch) < len(buffer):
            self.skipped += len(buffer) - len(batch)
            log.warning(
                "drift %s: %d item(s) of %s before %s hold NaN or infinity; not tested (%d so far)",
                self.key,
                len(buffer) - len(batch),
                item.source,
                item.position,
                self.skipped,
            )
            if not len(batch):
                return
        state = detector.update(batch)
        score = round(state.score, _DECIMALS)
        watch.verdict = {"score": score, "alarm": state.alarm, "detector": self.spec.detector}
        raised = state.raised is not None
        if raised:
            log.warning(
                "drift %s: alarm on %s (%s): score %.4g at %s",
                self.key,
                self.on,
                self.spec.detector,
                state.score,
                item.position,
            )
        if self.events is not None:  # the step's figure: its worst source
            self._latest[item.source] = (score, state.alarm)
            worst = max(s for s, _ in self._latest.values())
            alarm = any(a for _, a in self._latest.values())
            self.events.drift(self.key, self.spec.detector, worst, alarm, raised)
