"""The models a server holds: loading, versions, hot swap, and inference through the batcher.

Concurrency: asyncio for the server's side (requests, polling the
repository), threads for the compute (each loaded version has its engine and,
with dynamic batching, its :class:`~fogline.model.MicroBatcher`; engines
release the GIL). A version is loaded, checked against its configuration and
warmed up (:mod:`fogline.serve._warmup`) on a worker thread before it is
published; publishing is one assignment, so a request sees the old set of
versions or the new one, never a half-loaded model. A version that goes away is closed only after the
requests already inside it have finished.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fogline.errors import (
    ConfigError,
    FoglineError,
    ModelNotFound,
    ModelNotReady,
    NotRunning,
    SignatureMismatch,
)
from fogline.model import (
    BatchPolicy,
    Engine,
    EngineOptions,
    MicroBatcher,
    ModelReader,
    load_engine,
)
from fogline.oip import FROM_NAME, numpy_dtype
from fogline.serve._config import ModelConfig
from fogline.serve._metrics import RequestStats
from fogline.serve._warmup import warm_up

log = logging.getLogger("fogline.serve")

Control = Literal["none", "poll", "explicit"]
CONTROLS: tuple[Control, ...] = ("none", "poll", "explicit")
#: How many items may wait per version when the config sets no max_queue_size.
DEFAULT_QUEUE_SIZE = 1024


@dataclass
class VersionState:
    """What the repository index reports for one model version."""

    name: str
    version: int
    state: Literal["LOADING", "READY", "UNAVAILABLE", "UNLOADING"]
    reason: str = ""


@dataclass(eq=False)
class LoadedVersion:
    """One version in service: its engine, batcher, config and the requests inside it."""

    name: str
    version: int
    config: ModelConfig
    engine: Engine
    batcher: MicroBatcher | None
    semaphore: asyncio.Semaphore
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    stats: dict[str, float] = field(default_factory=dict)

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one request; with a batcher its rows join other requests' batches."""
        if self.batcher is None:
            async with self.semaphore:
                return await asyncio.to_thread(self.engine.run, dict(inputs))
        rows = len(next(iter(inputs.values())))
        if rows == 1:  # the usual request: no gather, no stacking of the outputs
            row = await self.batcher.infer({name: array[0] for name, array in inputs.items()})
            return {name: value[np.newaxis] for name, value in row.items()}
        parts = await asyncio.gather(
            *(
                self.batcher.infer({name: array[row] for name, array in inputs.items()})
                for row in range(rows)
            )
        )
        return {name: np.stack([part[name] for part in parts]) for name in parts[0]}

    async def close(self) -> None:
        """Wait for the requests inside, then release the batcher and the engine."""
        while self.in_flight:
            self.idle.clear()
            await self.idle.wait()
        if self.batcher is not None:
            await asyncio.to_thread(self.batcher.close)
        self.engine.close()


class ModelManager:
    """The loaded models of one repository, with their versions and states.

    ``control`` is Triton's model control mode: ``none`` loads every model at
    start, ``poll`` also re-reads the repository every ``poll_interval``
    seconds and loads what changed, ``explicit`` loads only ``startup`` and
    what the repository API asks for.
    """

    def __init__(
        self,
        repository: Any,
        *,
        control: Control = "none",
        poll_interval: float = 5.0,
        startup: Iterable[str] = (),
        threads: int | None = None,
        spin: bool = False,
        timeout_s: float | None = None,
        read: ModelReader | None = None,
        providers: tuple[str, ...] | None = None,
    ) -> None:
        if control not in CONTROLS:
            raise ConfigError(f"model control mode must be one of {', '.join(CONTROLS)}")
        self.repository = repository
        self.control: Control = control
        self.poll_interval = poll_interval
        self.startup = tuple(startup)
        self.threads = threads
        # ONNX Runtime's idle threads spin by default; in a server they would take the
        # cores that the event loop and the other models need (measured: about half the
        # throughput on 2 busy cores), so they sleep unless asked otherwise.
        self.spin = spin
        #: ONNX Runtime's execution providers for every model (None: the best the build offers).
        self.providers = providers
        if read is None:  # sealed models open with the device key from the environment
            from fogline.security import SealedFiles

            read = SealedFiles()
        self.read = read
        self.timeout_s = timeout_s
        self._models: dict[str, dict[int, LoadedVersion]] = {}
        self._states: dict[tuple[str, int], VersionState] = {}
        self._failures: dict[str, str] = {}
        self._fingerprints: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._poller: asyncio.Task[None] | None = None
        self.live = False
        self.stats = RequestStats()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        names = self.repository.model_names() if self.control != "explicit" else self.startup
        for name in names:
            try:
                await self.load(name)
            except FoglineError as exc:  # one bad model must not keep the others down
                log.error("model %s: %s", name, exc)
        self.live = True
        if self.control == "poll":
            self._poller = asyncio.create_task(self._poll())

    async def close(self) -> None:
        self.live = False
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        for name in list(self._models):
            await self.unload(name)

    @property
    def ready(self) -> bool:
        """Live, and every model that should be loaded has a ready version."""
        return self.live and not self._failures

    # --- loading --------------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def load(self, name: str) -> None:
        """Load (or reload) ``name``: new versions are warmed up before they take traffic.

        A version that fails to load or warm up never takes traffic; the
        versions already serving keep serving. Versions the policy no longer
        selects are retired after their requests finish.
        """
        async with self._lock(name):
            if name not in self.repository.model_names():
                raise ModelNotFound(f"no model named {name!r} in the repository")
            try:
                config = self.repository.config(name)
                wanted = self.repository.versions(name)
            except FoglineError as exc:
                self._failures[name] = str(exc)
                raise
            current = dict(self._models.get(name, {}))
            fingerprint = self.repository.fingerprint(name)
            changed = self._fingerprints.get(name) != fingerprint
            fresh: dict[int, LoadedVersion] = {}
            errors = []
            for version, path in sorted(wanted.items()):
                if version in current and not (
                    changed and self._is_new_file(current[version], path)
                ):
                    fresh[version] = current[version]
                    continue
                self._states[(name, version)] = VersionState(name, version, "LOADING")
                try:
                    fresh[version] = await asyncio.to_thread(
                        self._load_version, name, version, path, config
                    )
                except Exception as exc:  # keep serving what works; report the rest
                    reason = str(exc) if isinstance(exc, FoglineError) else repr(exc)
                    self._states[(name, version)] = VersionState(
                        name, version, "UNAVAILABLE", reason
                    )
                    errors.append(f"version {version}: {reason}")
                    log.error("model %s version %d failed to load: %s", name, version, reason)
                    if version in current:
                        fresh[version] = current[version]
                    continue
                self._states[(name, version)] = VersionState(name, version, "READY")
            if errors:
                # What was meant to replace the serving versions did not load: keep them.
                fresh = {**{v: c for v, c in current.items() if v not in fresh}, **fresh}
            self._models[name] = fresh  # the swap: one assignment
            self._fingerprints[name] = fingerprint
            if fresh and not errors:
                self._failures.pop(name, None)
            elif errors:
                self._failures[name] = "; ".join(errors)
            for version, loaded in current.items():
                if fresh.get(version) is not loaded:
                    self._states[(name, version)] = VersionState(name, version, "UNLOADING")
                    await loaded.close()
                    self._states.pop((name, version), None)
            if errors and not fresh:
                raise ModelNotReady(f"model {name!r} could not be loaded: {'; '.join(errors)}")

    @staticmethod
    def _is_new_file(loaded: LoadedVersion, path: Path) -> bool:
        return loaded.stats.get("mtime") != path.stat().st_mtime

    def _load_version(
        self, name: str, version: int, path: Path, config: ModelConfig
    ) -> LoadedVersion:
        engine = load_engine(
            path,
            options=EngineOptions(threads=self.threads, spin=self.spin, providers=self.providers),
            read=self.read,
        )
        try:
            config = self.repository.check_against(config, engine.signature)
            # Before the batcher starts: a version that fails a configured warm-up is closed
            # without ever having had a thread, let alone a request.
            runs = warm_up(engine, config, lambda file: self.repository.warmup_file(name, file))
            if config.warmup:
                log.info("model %s version %d: %d warm-up run(s) passed", name, version, runs)
            batcher = None
            if config.dynamic_batching and config.max_batch_size > 0:
                policy = BatchPolicy(
                    max_batch=config.max_batch_size,
                    max_wait_s=config.max_queue_delay_us / 1e6,
                    queue_size=config.max_queue_size or DEFAULT_QUEUE_SIZE,
                    overflow="reject",
                    preferred_sizes=tuple(
                        s for s in config.preferred_batch_sizes if s <= config.max_batch_size
                    ),
                    workers=max(1, config.instance_count),
                    # A request that finds the model idle is not held for the queue
                    # delay: at concurrency 1 the delay would be all it waited for.
                    idle_dispatch=config.idle_dispatch,
                )
                batcher = MicroBatcher(engine, policy).start()
            loaded = LoadedVersion(
                name, version, config, engine, batcher, asyncio.Semaphore(config.instance_count)
            )
            loaded.stats["mtime"] = path.stat().st_mtime
            loaded.stats["warmup_runs"] = runs
            return loaded
        except BaseException:
            engine.close()
            raise

    async def unload(self, name: str) -> None:
        async with self._lock(name):
            versions = self._models.pop(name, None)
            if versions is None:
                raise ModelNotFound(f"model {name!r} is not loaded")
            self._failures.pop(name, None)
            self._fingerprints.pop(name, None)
            for version, loaded in versions.items():
                self._states[(name, version)] = VersionState(name, version, "UNLOADING")
                await loaded.close()
                self._states.pop((name, version), None)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                names = set(self.repository.model_names())
            except FoglineError as exc:
                log.error("repository: %s", exc)
                continue
            for name in sorted(names):
                if self.repository.fingerprint(name) != self._fingerprints.get(name):
                    try:
                        await self.load(name)
                    except FoglineError as exc:
                        log.error("model %s: %s", name, exc)
            for name in set(self._models) - names:
                await self.unload(name)

    # --- queries --------------------------------------------------------------------------

    def index(self) -> list[VersionState]:
        """Every model of the repository with the state of each of its versions."""
        states = dict(self._states)
        rows: list[VersionState] = []
        for name in self.repository.model_names():
            mine = [s for (n, _), s in sorted(states.items()) if n == name]
            if mine:
                rows.extend(mine)
            else:
                reason = self._failures.get(name, "not loaded")
                rows.append(VersionState(name, 0, "UNAVAILABLE", reason))
        return rows

    def versions(self, name: str) -> dict[int, LoadedVersion]:
        if name not in self._models:
            if name in self.repository.model_names():
                why = self._failures.get(name, "it is not loaded")
                raise ModelNotReady(f"model {name!r} is not ready: {why}")
            raise ModelNotFound(f"unknown model {name!r}")
        return self._models[name]

    def get(self, name: str, version: str | int | None = None) -> LoadedVersion:
        """The version to serve: the given one, or the highest ready one."""
        versions = self.versions(name)
        if version in (None, ""):
            if not versions:
                raise ModelNotReady(f"model {name!r} has no ready version")
            return versions[max(versions)]
        try:
            number = int(version)
        except ValueError:
            raise ModelNotFound(f"model {name!r}: version {version!r} is not a number") from None
        if number not in versions:
            ready = ", ".join(str(v) for v in sorted(versions)) or "none"
            raise ModelNotFound(f"model {name!r} has no ready version {number} (ready: {ready})")
        return versions[number]

    def metadata(self, name: str, version: str | int | None = None) -> dict[str, Any]:
        """The protocol's model metadata: name, versions, platform, inputs and outputs.

        Shapes carry the batch dimension as -1 when the model batches.
        """
        loaded = self.get(name, version)
        config = loaded.config
        lead = [-1] if config.max_batch_size > 0 else []
        versions = [str(v) for v in sorted(self.versions(name))]
        return {
            "name": name,
            "versions": versions if version in (None, "") else [str(loaded.version)],
            "platform": config.platform or _platform(loaded.engine.backend),
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": lead + list(t.dims)}
                for t in config.inputs
            ],
            "outputs": [
                {"name": t.name, "datatype": t.datatype, "shape": lead + list(t.dims)}
                for t in config.outputs
            ],
        }

    # --- inference ------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        version: str | int | None,
        inputs: Mapping[str, np.ndarray],
    ) -> tuple[LoadedVersion, dict[str, np.ndarray]]:
        """Check ``inputs`` against the version's config and run them; retried once on a swap."""
        started = time.perf_counter()
        loaded: LoadedVersion | None = None
        try:
            for attempt in (0, 1):
                loaded = self.get(name, version)
                check_inputs(loaded.config, inputs)
                loaded.in_flight += 1
                try:
                    coroutine = loaded.infer(inputs)
                    if self.timeout_s is not None:
                        outputs = await asyncio.wait_for(coroutine, self.timeout_s)
                    else:
                        outputs = await coroutine
                except NotRunning:
                    if attempt == 0 and version in (None, ""):
                        continue  # retired between picking and submitting: use the new one
                    raise ModelNotReady(
                        f"model {name!r} version {loaded.version} was unloaded"
                    ) from None
                finally:
                    loaded.in_flight -= 1
                    if not loaded.in_flight:
                        loaded.idle.set()
                self.stats.record(name, loaded.version, time.perf_counter() - started, ok=True)
                return loaded, outputs
            raise ModelNotReady(f"model {name!r} is being swapped; try again")  # pragma: no cover
        except BaseException:
            where = loaded.version if loaded is not None else (version or "")
            self.stats.record(name, where, time.perf_counter() - started, ok=False)
            raise

    def loaded(self) -> dict[str, dict[int, LoadedVersion]]:
        """The versions in service now, per model (a snapshot)."""
        return {name: dict(versions) for name, versions in self._models.items()}


def check_inputs(config: ModelConfig, inputs: Mapping[str, np.ndarray]) -> None:
    """Raise :class:`SignatureMismatch` unless ``inputs`` fit the config, naming what is wrong."""
    wanted = {t.name: t for t in config.inputs}
    missing = sorted(set(wanted) - set(inputs))
    if missing:
        raise SignatureMismatch(
            f"missing input(s) {', '.join(missing)}; model {config.name!r} takes "
            f"{', '.join(wanted)}"
        )
    unknown = sorted(set(inputs) - set(wanted))
    if unknown:
        raise SignatureMismatch(
            f"unknown input(s) {', '.join(unknown)}; model {config.name!r} takes "
            f"{', '.join(wanted)}"
        )
    batch: int | None = None
    for name, spec in wanted.items():
        array = inputs[name]
        expected = numpy_dtype(spec.datatype)
        if array.dtype != expected and not (spec.datatype == "BYTES" and array.dtype.kind in "OSU"):
            raise SignatureMismatch(
                f"input {name!r} has datatype {_oip(array.dtype)}, model {config.name!r} expects "
                f"{spec.datatype}"
            )
        shape = tuple(array.shape)
        dims = spec.dims
        if config.max_batch_size > 0:
            if not shape:
                raise SignatureMismatch(f"input {name!r} needs a batch dimension")
            rows, shape = shape[0], shape[1:]
            if not 1 <= rows <= config.max_batch_size:
                raise SignatureMismatch(
                    f"input {name!r} has a batch of {rows}; model {config.name!r} takes "
                    f"1 to {config.max_batch_size}"
                )
            if batch is not None and rows != batch:
                raise SignatureMismatch(f"inputs disagree on the batch size ({batch} and {rows})")
            batch = rows
        if len(shape) != len(dims) or any(
            d != -1 and d != s for d, s in zip(dims, shape, strict=False)
        ):
            full = ([-1] if config.max_batch_size > 0 else []) + list(dims)
            raise SignatureMismatch(
                f"input {name!r} has shape {list(array.shape)}, model {config.name!r} expects {full}"
            )
        if config.reject_non_finite and array.dtype.kind == "f" and not np.isfinite(array).all():
            raise SignatureMismatch(f"input {name!r} holds NaN or Inf, which this model refuses")


def _platform(backend: str) -> str:
    return {"onnxruntime": "onnxruntime_onnx", "litert": "tflite", "openvino": "openvino"}.get(
        backend, backend
    )


def _oip(dtype: np.dtype) -> str:
    return FROM_NAME.get(dtype.name, dtype.name)
