"""Model variants switched by load: the ``model.variants`` and ``model.policy`` keys, and the switcher.

``variants:`` lists folders or files of one model (what ``fogline optimize``
writes: FP32, INT8, pruned, a distilled student), best first, cheapest last.
All are loaded at the start (memory for every one of them, so a switch costs
no load) and warmed with one item each when the run starts, behind one :class:`~fogline.model.VariantEngine`, which the shared
micro-batcher runs: a switch takes effect between two batches and never
drops an item.

``policy:`` says when to step down to the next cheaper variant and when to
step back up. Its signals, each with its limit:

* ``slo_p99_ms``: the p99 of the items' latency from arrival to the model's
  answer, over the last ``window_s`` seconds;
* ``max_queue``: the items waiting in the batcher;
* ``max_cpu_percent``, ``max_temperature_c`` and ``min_battery_percent``:
  read with psutil where the device has the sensor, else from ``sensors:``
  (a file a user's script writes, or an MQTT topic; one number, or JSON
  ``{"value": n}``).

Hysteresis, so it does not flap: one step down once some signal has been
past its limit for ``down_after_s``; one step up once every signal has been
inside its limit by ``margin`` (``limit x margin``; a battery above
``limit ÷ margin``) for ``up_after_s``, and the items arriving (per second,
over the last ``window_s``) fit the better variant's measured capacity
(``workers`` over its compute seconds per item: the lowest moving average
of its batches so far, what it can do on a device not busy with other work)
x ``margin``: a load between the two variants' capacities keeps the cheaper
one rather than stepping up into an overload every ``up_after_s``. A step up
that is undone within the wait that allowed it doubles that wait (up to
8 x ``up_after_s``); one that holds resets it. After a switch the latency window
starts afresh and so do both timers. A signal with no reading (no items yet,
a sensor file not written yet, a malformed value, logged) neither trips nor
blocks a step.

Concurrency: :class:`VariantSwitcher` evaluates on its own thread every
``interval_s``; the collector thread hands it each item's latency
(:meth:`VariantSwitcher.answered`), under a lock held for an append.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.functional_validators import AfterValidator

from fogline.errors import ConfigError, FoglineError
from fogline.metrics import VARIANT_ACTIVE, VARIANT_ITEMS, VARIANT_SWITCHES
from fogline.model import VARIANT_OUTPUT, ModelReader, OpenedModel, VariantEngine, open_model
from fogline.pipeline._base import Spec, _resolve, existing
from fogline.transport.mqtt import BrokerUrl, MqttSubscriber, TopicFilterField

log = logging.getLogger("fogline.pipeline")

#: The sensors a policy may read, and the limit key each is compared with.
SENSORS = {
    "cpu": "max_cpu_percent",
    "temperature": "max_temperature_c",
    "battery": "min_battery_percent",
}


def _entry(value: Any) -> Any:
    return {"path": value} if isinstance(value, str | Path) else value


class VariantSpec(Spec):
    """One variant: ``path`` (a model file or a folder with a manifest) and a ``name``.

    The name (default: the folder's or file's name without suffix) is what
    logs, metrics and the results' model version (``1+int8``) call it.
    """

    path: Annotated[Path, existing("model file or folder")]
    name: str | None = Field(default=None, min_length=1, pattern=r"^[A-Za-z0-9._-]+$")

    @property
    def label(self) -> str:
        return self.name or self.path.stem


def _sensor_file(value: Path, info: ValidationInfo) -> Path:
    path = _resolve(value, info)
    if not path.parent.is_dir():
        raise ValueError(
            f"no folder {path.parent} for the sensor file (the file itself may appear later)"
        )
    return path


class SensorSpec(Spec):
    """Where a reading comes from when psutil cannot read it: ``file`` or ``url`` + ``topic``."""

    file: Annotated[Path, AfterValidator(_sensor_file)] | None = None
    url: BrokerUrl | None = None
    topic: TopicFilterField | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SensorSpec:
        if (self.file is None) == (self.url is None):
            raise ValueError(
                "give `file` (a file holding the reading) or `url` and `topic` (an MQTT topic)"
            )
        if (self.url is None) != (self.topic is None):
            raise ValueError("an MQTT sensor needs both `url` and `topic`")
        return self


class PolicySpec(Spec):
    """When to step down to a cheaper variant and back up (see the module)."""

    slo_p99_ms: float | None = Field(default=None, gt=0)
    max_queue: int | None = Field(default=None, ge=1)
    max_cpu_percent: float | None = Field(default=None, gt=0, le=100)
    max_temperature_c: float | None = None
    min_battery_percent: float | None = Field(default=None, gt=0, lt=100)
    sensors: dict[str, SensorSpec] = Field(default_factory=dict)
    window_s: float = Field(default=5.0, gt=0)
    down_after_s: float = Field(default=2.0, ge=0)
    up_after_s: float = Field(default=10.0, ge=0)
    margin: float = Field(default=0.7, gt=0, lt=1)
    interval_s: float = Field(default=0.25, gt=0)

    @field_validator("sensors", mode="before")
    @classmethod
    def _known_sensors(cls, value: Any) -> Any:
        for name in value if isinstance(value, dict) else ():
            if name not in SENSORS:
                raise ValueError(
                    f"unknown sensor {name!r}; sensors are {', '.join(SENSORS)} "
                    "(latency and queue depth are measured, not read)"
                )
        return value

    @model_validator(mode="after")
    def _has_limits(self) -> PolicySpec:
        limits = ("slo_p99_ms", "max_queue", *SENSORS.values())
        if all(getattr(self, key) is None for key in limits):
            raise ValueError(f"a policy needs at least one limit: {', '.join(limits)}")
        for name in self.sensors:
            if getattr(self, SENSORS[name]) is None:
                raise ValueError(
                    f"sensors.{name}: no `{SENSORS[name]}` to compare its reading with"
                )
        return self


#: ``variants:`` entries: a path, or ``{path, name}``.
VariantEntry = Annotated[VariantSpec, BeforeValidator(_entry)]


# --- check time --------------------------------------------------------------------------------


def open_variants(
    variants: list[VariantSpec],
    *,
    backend: str,
    threads: int | None,
    providers: tuple[str, ...] | None = None,
    read: ModelReader | None = None,
) -> OpenedModel:
    """Load every variant (each one's errors under ``model.variants[i]``) behind one engine.

    The result's name, version, file and manifest are the first (best) variant's.
    """
    opened: list[OpenedModel] = []
    try:
        for index, variant in enumerate(variants):
            try:
                opened.append(
                    open_model(
                        variant.path,
                        backend=backend,
                        threads=threads,
                        providers=providers,
                        read=read,
                    )
                )
            except FoglineError as exc:
                raise ConfigError(f"model.variants[{index}].path: {exc}") from exc
        named = [(v.label, o.engine) for v, o in zip(variants, opened, strict=True)]
        try:
            engine = VariantEngine(named)
        except ConfigError as exc:
            raise ConfigError(f"model.variants: {exc}") from exc
    except BaseException:
        for one in opened:
            one.engine.close()
        raise
    first = opened[0]
    return OpenedModel(engine, first.name, first.version, first.file, first.manifest)


def check_policy(policy: PolicySpec) -> None:
    """Refuse a policy whose psutil sensor this device cannot read (say what to use instead)."""
    import psutil

    for name, key in SENSORS.items():
        if getattr(policy, key) is None or name in policy.sensors:
            continue
        if _psutil_reading(psutil, name) is None:
            raise ConfigError(
                f"model.policy.{key}: psutil cannot read the {name} on this device; give "
                f"`sensors: {{{name}: {{file: PATH}}}}` (a file your script writes the reading "
                f"to) or `sensors: {{{name}: {{url: mqtt://HOST, topic: TOPIC}}}}`"
            )


def _psutil_reading(psutil: Any, name: str) -> float | None:
    if name == "cpu":
        return float(psutil.cpu_percent(None))
    if name == "temperature":
        read = getattr(psutil, "sensors_temperatures", None)
        groups = read() if read is not None else {}
        values = [t.current for entries in groups.values() for t in entries if t.current]
        return max(values) if values else None
    battery = getattr(psutil, "sensors_battery", lambda: None)()
    return None if battery is None else float(battery.percent)


# --- run time ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Switch:
    """One switch: when (epoch seconds), from which variant to which, why, the figure that tripped it."""

    at: float
    before: str
    after: str
    why: str
    signal: str
    value: float | None

    def describe(self) -> str:
        return f"{self.before} → {self.after}: {self.why}"


@dataclass(frozen=True)
class VariantBoard:
    """What the live table, the summary and Prometheus show about the variants."""

    names: tuple[str, ...]
    active: str
    served: Mapping[str, int]
    switches: tuple[Switch, ...] = field(default=())

    def describe(self) -> str:
        """``variant int8 · served: fp32 1,204, int8 3,310 · 2 switches``"""
        served = ", ".join(f"{n} {self.served.get(n, 0):,}" for n in self.names)
        count = len(self.switches)
        return (
            f"variant {self.active} · served: {served} · {count} switch{'es' if count != 1 else ''}"
        )


class _Reader:
    """One sensor's latest reading: psutil, a file, or the last message on an MQTT topic."""

    def __init__(self, name: str, spec: SensorSpec | None) -> None:
        self.name = name
        self.spec = spec
        self._subscriber: MqttSubscriber | None = None
        self._last: float | None = None
        self._complained: str | None = None

    def read(self) -> float | None:
        spec = self.spec
        if spec is None:
            import psutil

            return _psutil_reading(psutil, self.name)
        if spec.file is not None:
            try:
                text = spec.file.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None  # not written yet: documented as no reading
            except (OSError, UnicodeDecodeError) as exc:
                self._complain(f"cannot read {spec.file}: {exc}")
                return None
            return self._parse(text.encode(), str(spec.file))
        if self._subscriber is None:  # connects on the first read, in the background
            assert spec.url is not None and spec.topic is not None
            self._subscriber = MqttSubscriber(spec.url, spec.topic, qos=0, maxsize=16)
        while (message := self._subscriber.get(timeout=0)) is not None:
            value = self._parse(message.payload, f"mqtt {message.topic}")
            if value is not None:
                self._last = value
        return self._last

    def _parse(self, payload: bytes, where: str) -> float | None:
        try:
            body = json.loads(payload)
            value = body.get("value") if isinstance(body, dict) else body
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expected a number or {{'value': n}}, got {payload[:40]!r}")
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(f"not a finite number: {number}")
        except ValueError as exc:
            self._complain(f"{where}: ignored a malformed {self.name} reading: {exc}")
            return None
        self._complained = None
        return number

    def _complain(self, message: str) -> None:
        if message != self._complained:  # once per distinct problem, not every tick
            log.warning("variant policy: %s", message)
            self._complained = message

    def close(self) -> None:
        if self._subscriber is not None:
            self._subscriber.close()


@dataclass(frozen=True)
class _Signal:
    name: str  # p99, queue, cpu, temperature, battery
    limit: float
    unit: str
    low_is_bad: bool = False

    def over(self, value: float) -> bool:
        return value < self.limit if self.low_is_bad else value > self.limit

    def calm(self, value: float, margin: float) -> bool:
        return value >= self.limit / margin if self.low_is_bad else value < self.limit * margin

    def text(self, value: float) -> str:
        sign = "<" if self.low_is_bad else ">"
        return f"{self.name} {value:,.4g}{self.unit} {sign} {self.limit:,.4g}{self.unit}"


class VariantSwitcher:
    """Watch the policy's signals and step the :class:`~fogline.model.VariantEngine` down and up.

    ``depth`` reads the batcher's queue; ``clock`` is :func:`time.monotonic`
    (tests give their own and call :meth:`tick`).

    >>> from fogline.examples import digits_model_path
    >>> from fogline.model import load_engine
    >>> engine = VariantEngine([("a", load_engine(digits_model_path())),
    ...                         ("b", load_engine(digits_model_path()))])
    >>> now = [0.0]
    >>> switcher = VariantSwitcher(PolicySpec(max_queue=10, down_after_s=1, up_after_s=5),
    ...                            engine, versions=("1+a", "1+b"), clock=lambda: now[0])
    >>> queue = [50]
    >>> switcher.depth = lambda: queue[0]
    >>> switcher.tick(), engine.active      # over its limit, but not for 1 s yet
    (None, 'a')
    >>> now[0] = 1.0; switcher.tick().describe()
    'a → b: queue 50 > 10 for 1 s'
    >>> queue[0] = 0; now[0] = 2.0; switcher.tick(); now[0] = 7.0; switcher.tick().describe()
    'b → a: every signal inside its limit x 0.7 for 5 s (queue 0 < 7)'
    """

    def __init__(
        self,
        policy: PolicySpec,
        engine: VariantEngine,
        *,
        versions: tuple[str, ...],
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.engine = engine
        self.versions = versions
        self.depth: Callable[[], int] | None = None
        self.workers = workers
        self._since_switch = clock()
        self._up_wait = policy.up_after_s  # doubled while steps up are soon undone
        self._last_up: float | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._latencies: deque[tuple[float, float]] = deque()
        self._over_since: float | None = None
        self._calm_since: float | None = None
        self._switches: list[Switch] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._signals = _signals(policy)
        self._readers = {
            name: _Reader(name, policy.sensors.get(name))
            for name in SENSORS
            if getattr(policy, SENSORS[name]) is not None
        }

    # --- the collector's side -------------------------------------------------------------

    def answered(self, outputs: dict[str, Any], latency: float) -> str:
        """Take the variant tag out of one item's ``outputs``; note its latency; its version."""
        tag = outputs.pop(VARIANT_OUTPUT, None)
        with self._lock:
            self._latencies.append((self._clock(), latency))
        return self.versions[0 if tag is None else int(tag)]

    # --- evaluation -----------------------------------------------------------------------

    def readings(self) -> dict[str, float | None]:
        """Each signal's reading now (None: no reading)."""
        values: dict[str, float | None] = {}
        for signal in self._signals:
            if signal.name == "p99":
                values["p99"] = self._p99()
            elif signal.name == "queue":
                values["queue"] = None if self.depth is None else float(self.depth())
            else:
                values[signal.name] = self._readers[signal.name].read()
        return values

    def _recent(self) -> list[float]:
        since = self._clock() - self.policy.window_s
        with self._lock:
            while self._latencies and self._latencies[0][0] < since:
                self._latencies.popleft()
            return [seconds for _, seconds in self._latencies]

    def _p99(self) -> float | None:
        recent = self._recent()
        if len(recent) < 10:  # too few to call a p99
            return None
        return float(np.percentile(recent, 99)) * 1000.0

    def _rate(self) -> float:
        """Items answered per second over the window (since the last switch, if later)."""
        span = min(self.policy.window_s, self._clock() - self._since_switch)
        return len(self._recent()) / span if span > 0 else 0.0

    def _fits(self, index: int) -> tuple[bool, str]:
        """Whether the load now fits variant ``index``'s measured capacity x margin, and how."""
        # Its best, not its latest: a variant measured during a stall would otherwise look
        # slow for ever and never get its turn back; if the device is still busy, the
        # step up is undone after down_after_s and tried again only after up_after_s.
        cost = self.engine.cost(index, best=True)
        if cost is None or cost <= 0:
            return True, ""
        capacity = self.workers / cost
        rate = self._rate()
        bound = capacity * self.policy.margin
        name = self.engine.names[index]
        if rate < bound:
            return True, f"load {rate:,.0f}/s < {name}'s {capacity:,.0f}/s x {self.policy.margin:g}"
        return False, ""

    def tick(self) -> Switch | None:
        """Read the signals once and switch if the policy says so; the switch made, if any."""
        now = self._clock()
        policy, values = self.policy, self.readings()
        over = [
            (s, v) for s in self._signals if (v := values.get(s.name)) is not None and s.over(v)
        ]
        if over:
            self._calm_since = None
            if self._over_since is None:
                self._over_since = now
            index = self.engine.index
            if now - self._over_since >= policy.down_after_s and index + 1 < len(self.versions):
                signal, value = over[0]
                why = f"{signal.text(value)} for {policy.down_after_s:g} s"
                # A step up undone within the wait that allowed it: wait twice as long next
                # time (at most 8 x up_after_s); one that held resets the wait.
                undone = self._last_up is not None and now - self._last_up < self._up_wait
                longest = 8 * policy.up_after_s
                self._up_wait = min(2 * self._up_wait, longest) if undone else policy.up_after_s
                self._last_up = None
                return self._switch(index + 1, why, signal.name, value)
            return None
        self._over_since = None
        calm = all(
            s.calm(v, policy.margin) for s in self._signals if (v := values.get(s.name)) is not None
        )
        if not calm:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        index = self.engine.index
        if index > 0 and now - self._calm_since >= self._up_wait:
            fits, load = self._fits(index - 1)
            if not fits:  # calm here, but the better variant would be overloaded again
                return None
            shown = ", ".join(
                [
                    _calm_text(s, v, policy.margin)
                    for s in self._signals
                    if (v := values.get(s.name)) is not None
                ]
                + ([load] if load else [])
            )
            why = f"every signal inside its limit x {policy.margin:g} for {self._up_wait:g} s"
            self._last_up = now
            return self._switch(index - 1, f"{why} ({shown or 'no readings'})", "calm", None)
        return None

    def _switch(self, index: int, why: str, signal: str, value: float | None) -> Switch:
        before = self.engine.names[self.engine.use(index)]
        switch = Switch(time.time(), before, self.engine.names[index], why, signal, value)
        with self._lock:
            self._switches.append(switch)
            self._latencies.clear()  # the new variant is judged on its own items
        self._over_since = self._calm_since = None
        self._since_switch = self._clock()
        log.info("variant %s", switch.describe())
        return switch

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, depth: Callable[[], int]) -> None:
        """Warm every variant, then evaluate every ``interval_s`` on a thread of its own."""
        try:
            self.engine.warm()
        except Exception as exc:  # a model that refuses zeros only misses its warm-up
            log.warning("variant policy: could not warm the variants: %s", exc)
        self.depth = depth
        self._thread = threading.Thread(target=self._run, name="fogline-variants", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.policy.interval_s):
            try:
                self.tick()
            except Exception:  # a sensor's bug must not end switching for good
                log.exception("variant policy: evaluation failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for reader in self._readers.values():
            reader.close()

    @property
    def switches(self) -> tuple[Switch, ...]:
        with self._lock:
            return tuple(self._switches)

    def board(self) -> VariantBoard:
        return VariantBoard(
            self.engine.names, self.engine.active, self.engine.served(), self.switches
        )


def _calm_text(signal: _Signal, value: float, margin: float) -> str:
    bound = signal.limit / margin if signal.low_is_bad else signal.limit * margin
    sign = "≥" if signal.low_is_bad else "<"
    return f"{signal.name} {value:,.4g}{signal.unit} {sign} {bound:,.4g}{signal.unit}"


def _signals(policy: PolicySpec) -> list[_Signal]:
    signals = []
    if policy.slo_p99_ms is not None:
        signals.append(_Signal("p99", policy.slo_p99_ms, " ms"))
    if policy.max_queue is not None:
        signals.append(_Signal("queue", policy.max_queue, ""))
    if policy.max_cpu_percent is not None:
        signals.append(_Signal("cpu", policy.max_cpu_percent, "%"))
    if policy.max_temperature_c is not None:
        signals.append(_Signal("temperature", policy.max_temperature_c, " °C"))
    if policy.min_battery_percent is not None:
        signals.append(_Signal("battery", policy.min_battery_percent, "%", low_is_bad=True))
    return signals


def variant_switcher(
    opened: OpenedModel, policy: PolicySpec | None, workers: int = 1
) -> VariantSwitcher | None:
    """The switcher for a plan's model: None unless it runs variants.

    Results record the variant that answered as the version's build metadata,
    ``{version}+{variant}`` (semver: ``1+int8`` orders as ``1``), so per-version
    figures (``fogline accuracy``, live accuracy) come out per variant.
    """
    engine = opened.engine
    if not isinstance(engine, VariantEngine) or policy is None:
        return None
    versions = tuple(f"{opened.version}+{name}" for name in engine.names)
    return VariantSwitcher(policy, engine, versions=versions, workers=workers)


def variant_families(board: VariantBoard, pipeline: str) -> Iterator[Any]:
    """Prometheus families: the active variant, items per variant, switches."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    active = GaugeMetricFamily(
        VARIANT_ACTIVE,
        "1 for the variant that runs now, 0 for the others.",
        labels=["pipeline", "variant"],
    )
    items = CounterMetricFamily(
        VARIANT_ITEMS, "Items each model variant computed.", labels=["pipeline", "variant"]
    )
    for name in board.names:
        active.add_metric([pipeline, name], float(name == board.active))
        items.add_metric([pipeline, name], board.served.get(name, 0))
    switches = CounterMetricFamily(
        VARIANT_SWITCHES, "Switches between model variants.", labels=["pipeline"]
    )
    switches.add_metric([pipeline], len(board.switches))
    yield from (active, items, switches)


__all__ = [
    "SENSORS",
    "PolicySpec",
    "SensorSpec",
    "Switch",
    "VariantBoard",
    "VariantEntry",
    "VariantSpec",
    "VariantSwitcher",
    "check_policy",
    "open_variants",
    "variant_families",
    "variant_switcher",
]
