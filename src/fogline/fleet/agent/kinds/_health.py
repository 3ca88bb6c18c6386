"""The agent's health check of a staged release: it loads, runs its sample, meets its budget.

A release is activated only after this check passes, so a model that does
not load, does not accept its own sample input, or is slower than its
latency budget never replaces the one that runs. The release's kind opens
its models (:meth:`ReleaseKind.open_engines`), and every model goes through
the one :class:`~fogline.model.Engine` interface.

Each model runs on the release's sample (an ``.npz`` whose arrays are named
after the model's inputs; a single unnamed-fitting array feeds a single
input) or, without one, on inputs built from its signature. The median of a
few timed runs is compared with the budget. A labelled canary set (``x``,
``y``) gives the accuracy reported in telemetry; it does not fail the check
(the controller's rollout criteria judge it).

Synchronous and self-contained: the agent calls it from its convergence
thread, and nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogline.errors import ConfigError, DataError, FoglineError, SignatureMismatch
from fogline.fleet.agent.kinds._kind import ReleaseKind
from fogline.model import Engine, ModelReader, engine_fallback, time_calls

#: Timed runs per model (after one warm-up run); the median is held against the budget.
TIMED_RUNS = 5
#: Canary items per engine call when the model takes a dynamic batch.
CANARY_BATCH = 64


@dataclass(frozen=True)
class HealthReport:
    """The outcome of a check: ``ok``, or ``reason`` saying what failed.

    ``latency_ms`` is the slowest model's median latency on its sample;
    ``accuracy`` is on the canary set, when the release has one; ``device``
    is what ran the first model (``CPUExecutionProvider``, ``CUDAExecutionProvider``...)
    and ``fallback`` the GPU provider asked for that did not start, if any.

    >>> HealthReport(ok=False, reason="model.onnx: not a model").describe()
    'failed: model.onnx: not a model'
    """

    ok: bool
    reason: str | None = None
    latency_ms: float | None = None
    accuracy: float | None = None
    models: tuple[str, ...] = ()
    device: str | None = None
    fallback: str | None = None

    def describe(self) -> str:
        if not self.ok:
            return f"failed: {self.reason}"
        parts = [f"ok: {len(self.models)} model(s)" if self.models else "ok: nothing to run"]
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.3g} ms")
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.3f}")
        return ", ".join(parts)


def check_release(
    kind: ReleaseKind,
    entry: Path,
    *,
    latency_budget_ms: float | None = None,
    sample: Path | None = None,
    canary: Path | None = None,
    read: ModelReader | None = None,
) -> HealthReport:
    """Open what ``entry`` holds as ``kind`` does, run it, and say whether it is fit to activate.

    ``read`` opens sealed model files in memory (the installer's ``read``).

    Never raises for a bad release: every fogline error (and a model
    runtime's own) becomes a failing report with the reason.

    >>> from fogline.fleet.agent.kinds import kind_for
    >>> check_release(kind_for("model"), Path("/nowhere/model.onnx")).describe()
    "failed: /nowhere/model.onnx: the release's entry does not exist"
    """
    try:
        if not entry.exists():
            raise ConfigError(f"{entry}: the release's entry does not exist")
        feeds = _read_npz(sample, "sample") if sample is not None else None
        labelled = _read_canary(canary) if canary is not None else None
        engines = kind.open_engines(entry, read)
    except FoglineError as exc:
        return HealthReport(ok=False, reason=str(exc))
    worst = 0.0
    accuracy = None
    try:
        for name, engine in engines:
            latency = _timed(engine, name, feeds)
            worst = max(worst, latency)
            if latency_budget_ms is not None and latency > latency_budget_ms:
                return HealthReport(
                    ok=False,
                    reason=f"{name}: median latency {latency:.3g} ms on the sample is over "
                    f"the budget of {latency_budget_ms:g} ms",
                    latency_ms=latency,
                )
        if labelled is not None and engines:
            accuracy = canary_accuracy(engines[0][1], *labelled)
    except FoglineError as exc:
        return HealthReport(ok=False, reason=str(exc))
    except Exception as exc:  # a runtime's own error while running: the release is not fit
        return HealthReport(ok=False, reason=f"{type(exc).__name__}: {exc}")
    finally:
        for _, engine in engines:
            engine.close()
    first = engines[0][1] if engines else None
    return HealthReport(
        ok=True,
        latency_ms=worst,
        accuracy=accuracy,
        models=tuple(n for n, _ in engines),
        device=None if first is None else first.device,
        fallback=None if first is None else engine_fallback(first),
    )


def _timed(engine: Engine, name: str, sample: Mapping[str, np.ndarray] | None) -> float:
    signature = engine.signature
    feeds = _fit(sample, signature.input_names) if sample is not None else None
    if feeds is None:
        feeds = signature.sample_feeds(1)
    signature.check_feeds(feeds, where=f"{name}: the sample")
    stats = time_calls(lambda: engine.run(feeds), warmup=1, duration_s=0.0, min_runs=TIMED_RUNS)
    return stats.p50


def _fit(sample: Mapping[str, np.ndarray], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The sample's arrays by input name; one array of another name feeds a one-input model."""
    if set(names) <= set(sample):
        return {name: sample[name] for name in names}
    if len(names) == 1 and len(sample) == 1:
        return {names[0]: next(iter(sample.values()))}
    raise SignatureMismatch(
        f"the sample holds {', '.join(sorted(sample)) or 'nothing'}; "
        f"the model takes {', '.join(names)}"
    )


def canary_accuracy(engine: Engine, x: np.ndarray, y: np.ndarray) -> float:
    """The share of canary items whose prediction equals the label.

    The prediction is the arg-max over the last axis of the first output
    (a classifier's scores), or the output itself when it has no class axis.
    """
    spec = engine.signature.inputs[0]
    step = CANARY_BATCH if not isinstance(spec.shape[0] if spec.shape else 1, int) else 1
    if spec.numpy_dtype is not None and x.dtype != spec.numpy_dtype:
        x = x.astype(spec.numpy_dtype)
    first = engine.signature.output_names[0]
    predictions = []
    for start in range(0, len(x), step):
        out = np.asarray(engine.run({spec.name: x[start : start + step]})[first])
        if out.ndim >= 2 and out.dtype.kind == "f":
            out = out.argmax(axis=-1)
        predictions.append(out.reshape(len(x[start : start + step]), -1)[:, 0])
    predicted = np.concatenate(predictions)
    return float(np.mean(predicted == y.reshape(len(y), -1)[:, 0]))


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: the release's {what} is not a readable .npz: {exc}") from exc


def _read_canary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = _read_npz(path, "canary set")
    if "x" not in data or "y" not in data:
        raise DataError(f"{path}: a canary set holds arrays x and y, found {sorted(data)}")
    if len(data["x"]) != len(data["y"]) or len(data["x"]) == 0:
        raise DataError(
            f"{path}: the canary set has {len(data['x'])} items in x and {len(data['y'])} in y"
        )
    return data["x"], data["y"]
