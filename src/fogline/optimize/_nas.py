"""The architecture search behind ``fogline optimize --nas MODULE:FAMILY``.

Anchored on Edge Impulse's EON Tuner: candidates are real networks, each
trained briefly, exported to ONNX and timed on this device through the same
:class:`~fogline.model.Engine` and timing code as every variant of the
variant search (the same threads and batch), never a FLOP count.

1. :func:`nas_search` tries every network of the family's grid (or a
   seeded sample of it, ``sample``), each trained for a short schedule
   (``epochs``) from the same seed, and marks the Pareto front of the
   family's metric against measured latency and the best candidate inside
   the latency budget.
2. :func:`nas_finish` trains the chosen network again from scratch for the
   full schedule (``final_epochs``), exports it, and hands it to
   :func:`~fogline.optimize.optimize`, so the usual variants (FP16, INT8,
   OpenVINO) are built and judged from it and the usual report follows,
   with the search in it.

Training and timing run one after the other in the calling thread: a
candidate is never timed while another one trains.
"""

from __future__ import annotations

import itertools
import random
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fogline.data import Dataset
from fogline.errors import ConfigError, FoglineError, OptimizeError
from fogline.model import (
    EngineOptions,
    Signature,
    load_engine,
    measure,
    provider_name,
    require,
    torch_to_onnx,
)
from fogline.optimize._nas_family import DEFAULT_INPUT_NAMES, DEFAULT_OUTPUT_NAMES, Family, Knobs
from fogline.optimize._nas_result import Candidate, NasResult
from fogline.optimize._report import Report
from fogline.optimize._search import OptimizeOptions, optimize
from fogline.optimize._spec import import_spec

Progress = Callable[[str, int, int], None]
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class NasOptions:
    """How long to train, how many candidates, and the latency budget in milliseconds.

    >>> NasOptions(latency_budget_ms=0.1).epochs
    5
    >>> NasOptions(latency_budget_ms=0)
    Traceback (most recent call last):
    fogline.errors.ConfigError: the latency budget must be positive, got 0 ms
    """

    latency_budget_ms: float
    #: The short schedule every candidate is trained for.
    epochs: int = 5
    #: The full schedule the chosen network is trained for, from scratch.
    final_epochs: int = 40
    #: Try this many candidates drawn from the grid with ``seed``; ``None``: the whole grid.
    sample: int | None = None
    seed: int = 0
    #: The share of the training data held out (seeded) to rank the candidates on.
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not self.latency_budget_ms > 0:
            raise ConfigError(
                f"the latency budget must be positive, got {self.latency_budget_ms:g} ms"
            )
        if self.epochs < 1 or self.final_epochs < 1:
            raise ConfigError("search and final epochs must be at least 1")
        if self.sample is not None and self.sample < 1:
            raise ConfigError(f"sample must be at least 1 candidate, got {self.sample}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(
                f"the validation fraction must be between 0 and 1, got {self.val_fraction:g}"
            )


def load_family(spec: str) -> Family:
    """The family named ``module:name``: an instance, or a class or function that makes one."""
    require("torch", "train")  # every search trains and exports with it
    try:
        found = import_spec(spec, what="a fogline.optimize.Family")
    except ConfigError as exc:
        raise ConfigError(f"--nas {exc}") from exc
    if isinstance(found, type) or (callable(found) and not isinstance(found, Family)):
        try:
            found = found()
        except Exception as exc:
            raise ConfigError(
                f"--nas {spec}: calling it raised {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(found, Family):
        wanted = ("space", "metric", "build", "example_input", "fit", "score")
        missing = [name for name in wanted if not hasattr(found, name)]
        raise ConfigError(
            f"--nas {spec}: {type(found).__name__} is not a fogline.optimize.Family "
            f"(it lacks {', '.join(missing)})"
        )
    space = getattr(found, "space", None)
    if not isinstance(space, Mapping) or not space or not all(space.values()):
        raise ConfigError(f"--nas {spec}: its space must map each knob to a non-empty list")
    return found


def family_names(family: Family) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The family's input and output names, or the defaults when it names none."""
    inputs = tuple(getattr(family, "input_names", DEFAULT_INPUT_NAMES))
    outputs = tuple(getattr(family, "output_names", DEFAULT_OUTPUT_NAMES))
    return inputs, outputs


def grid(space: Mapping[str, Sequence[int | float]]) -> list[dict[str, int | float]]:
    """Every combination of the knobs' values, the first knob varying slowest.

    >>> grid({"width": (8, 16), "depth": (1, 2)})
    [{'width': 8, 'depth': 1}, {'width': 8, 'depth': 2}, {'width': 16, 'depth': 1}, {'width': 16, 'depth': 2}]
    """
    names = list(space)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*space.values())]


def pick(
    everything: list[dict[str, int | float]], sample: int | None, seed: int
) -> list[dict[str, int | float]]:
    """``sample`` candidates of ``everything`` drawn with ``seed``, in grid order (all without).

    >>> pick(grid({"width": (4, 8, 16, 32)}), 2, seed=0)
    [{'width': 8}, {'width': 32}]
    """
    if sample is None or sample >= len(everything):
        return everything
    drawn = sorted(random.Random(seed).sample(range(len(everything)), sample))
    return [everything[i] for i in drawn]


def holdout(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """``data`` split at random (``seed``) into (the rest, ``fraction`` of it), order kept.

    >>> import numpy as np
    >>> data = Dataset("d", ({"x": np.arange(10.0)},), labels=np.arange(10))
    >>> rest, held = holdout(data, 0.2, seed=0)
    >>> rest.size, held.size, sorted([*rest.labels, *held.labels]) == list(range(10))
    (8, 2, True)
    """
    size = data.size
    count = round(size * fraction)
    if not 0 < count < size:
        raise ConfigError(
            f"{data.source}: {size} items cannot be split {1 - fraction:.0%}/{fraction:.0%} "
            "into training and validation data"
        )
    order = np.random.default_rng(seed).permutation(size)
    batch = len(next(iter(data.batches[0].values())))
    arrays = {name: data.array(name) for name in data.batches[0]}

    def subset(indices: np.ndarray, what: str) -> Dataset:
        indices = np.sort(indices)
        batches = tuple(
            {k: np.ascontiguousarray(v[indices[i : i + batch]]) for k, v in arrays.items()}
            for i in range(0, len(indices), batch)
        )
        labels = None if data.labels is None else data.labels[indices]
        return Dataset(f"{data.source} ({what})", batches, labels)

    return subset(order[count:], "training part"), subset(order[:count], "validation part")


def nas_search(
    family: Family,
    train: Dataset,
    validation: Dataset | None,
    nas: NasOptions,
    options: OptimizeOptions | None = None,
    *,
    name: str = "family",
    progress: Progress | None = None,
) -> NasResult:
    """Train, export, time and score every candidate; mark the front and the choice.

    Candidates are ranked on ``validation``; without it (the CLI), on
    ``nas.val_fraction`` of ``train`` held out with ``nas.seed``, and trained
    on the rest. The eval data is never seen here: it judges only the chosen
    network (:func:`nas_finish`), so its score is not the best of many tries.
    Latency is the p50 of ``Engine.run`` at the first of ``options.batches``
    with ``options.threads``, timed for ``options.duration_s`` on the
    providers of :func:`timing_options`: what the variant search ranks by. A candidate that cannot be built, trained or
    exported is reported as failed; when all fail, :class:`OptimizeError`.
    """
    require("torch", "train")
    options = options or OptimizeOptions()
    progress = progress or (lambda _s, _d, _t: None)
    if validation is None:
        train, validation = holdout(train, nas.val_fraction, nas.seed)
    everything = grid(family.space)
    chosen = pick(everything, nas.sample, nas.seed)
    result = NasResult(
        family=name,
        metric=family.metric,
        budget_ms=nas.latency_budget_ms,
        batch=options.batches[0],
        threads=options.threads,
        epochs=nas.epochs,
        final_epochs=nas.final_epochs,
        grid_size=len(everything),
        sampled=len(chosen) < len(everything),
        seed=nas.seed,
        train_items=train.size,
        val_items=validation.size,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fogline-nas-") as tmp:
        for index, knobs in enumerate(chosen):
            candidate = Candidate(knobs, epochs=nas.epochs)
            progress(candidate.label, index, len(chosen))
            _try(family, candidate, train, validation, nas, options, Path(tmp) / f"{index}.onnx")
            result.candidates.append(candidate)
    progress("done", len(chosen), len(chosen))
    result.search_seconds = time.perf_counter() - started
    if not any(c.ok for c in result.candidates):
        first = result.candidates[0]
        raise OptimizeError(f"{name}: no candidate could be built; {first.label}: {first.error}")
    result.decide()
    return result


def _try(
    family: Family,
    candidate: Candidate,
    train: Dataset,
    validation: Dataset,
    nas: NasOptions,
    options: OptimizeOptions,
    path: Path,
) -> None:
    began = time.perf_counter()
    try:
        net = build_trained(family, candidate.knobs, train, nas.epochs, nas.seed)
        candidate.params = sum(int(p.numel()) for p in net.parameters())
        export_candidate(family, net, candidate.knobs, path)
        candidate.size_bytes = path.stat().st_size
        engine = load_engine(path, options=timing_options(options))
        try:
            batch = options.batches[0]
            feeds = _feeds(family, validation, candidate.knobs, engine.signature, batch)
            stats = measure(engine, feeds, batch=batch, duration_s=options.duration_s)
            candidate.latency_ms, candidate.p99_ms = stats.p50, stats.p99
            candidate.metric = float(family.score(engine, validation, candidate.knobs))
        finally:
            engine.close()
    except Exception as exc:  # the user's factory, trainer or scorer: reported per candidate
        message = str(exc) if isinstance(exc, FoglineError) else f"{type(exc).__name__}: {exc}"
        candidate.status, candidate.error = (
            "failed",
            (message.strip().splitlines() or [""])[0][:300],
        )
    candidate.seconds = time.perf_counter() - began


def timing_options(options: OptimizeOptions) -> EngineOptions:
    """How candidates run: like the variant search's FP32 baseline (ONNX Runtime on the CPU).

    With ``options.providers`` (``--provider cuda``), on those providers,
    best first: the device the user is searching for.
    """
    providers = (
        (CPU,) if options.providers is None else tuple(provider_name(p) for p in options.providers)
    )
    return EngineOptions(threads=options.threads, providers=providers)


def build_trained(family: Family, knobs: Knobs, train: Dataset, epochs: int, seed: int) -> Any:
    """A new network for ``knobs``, initialised from ``seed`` and trained for ``epochs``."""
    import torch

    torch.manual_seed(seed)
    net = family.build(knobs)
    family.fit(net, train, knobs, epochs=epochs, seed=seed)
    return net.eval()


def export_candidate(family: Family, net: Any, knobs: Knobs, path: Path) -> Path:
    """``net`` as ONNX at ``path``, with the family's input and output names."""
    inputs, outputs = family_names(family)
    return torch_to_onnx(
        net, family.example_input(knobs), path, input_names=inputs, output_names=outputs
    )


def prepared(family: Family, data: Dataset, knobs: Knobs, signature: Signature) -> Dataset:
    """``data`` as the candidate with ``signature`` takes it.

    The family's own ``prepare`` when it has one; else float inputs whose
    last two dimensions differ from the candidate's fixed ones are resized
    bilinearly (antialiased); else ``data`` as it is.
    """
    own = getattr(family, "prepare", None)
    if callable(own):
        result: Dataset = own(data, knobs)
        return result
    sides: dict[str, tuple[int, int]] = {}
    for spec in signature.inputs:
        if len(spec.shape) < 3:
            continue
        height, width = spec.shape[-2], spec.shape[-1]
        if isinstance(height, int) and isinstance(width, int):
            sides[spec.name] = (height, width)

    def fit(name: str, value: np.ndarray) -> np.ndarray:
        side = sides.get(name)
        if side is None or value.ndim < 3 or value.dtype.kind != "f" or value.shape[-2:] == side:
            return value
        return _resize(value, side)

    batches = tuple({k: fit(k, v) for k, v in b.items()} for b in data.batches)
    return Dataset(data.source, batches, data.labels)


def _resize(value: np.ndarray, side: tuple[int, int]) -> np.ndarray:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:]) if tensor.ndim != 4 else tensor
    out = torch.nn.functional.interpolate(
        flat, size=side, mode="bilinear", align_corners=False, antialias=True
    )
    return np.ascontiguousarray(out.reshape(*value.shape[:-2], *side).numpy())


def _feeds(
    family: Family, data: Dataset, knobs: Knobs, signature: Signature, batch: int
) -> dict[str, np.ndarray]:
    """``batch`` real items as the candidate takes them; random ones if they do not fit."""
    fitted = prepared(family, data.limit(max(batch, 1)), knobs, signature)
    joined = {name: fitted.array(name) for name in fitted.batches[0]}
    feeds = {
        k: np.ascontiguousarray(np.resize(v, (batch, *v.shape[1:]))) for k, v in joined.items()
    }
    try:
        signature.check_feeds(feeds)
    except FoglineError:
        return signature.sample_feeds(batch)
    return feeds


def nas_finish(
    family: Family,
    result: NasResult,
    train: Dataset,
    evaluation: Dataset,
    out: str | Path,
    options: OptimizeOptions | None = None,
    progress: Progress | None = None,
) -> Report:
    """Train the chosen network fully on all of ``train``, export it, and run the variant search.

    ``evaluation`` (which the search never saw) gives the chosen network's
    metric (``result.final_metric``) and judges the variants.

    Calibration data for the variants is the training data as the chosen
    network takes it. The report carries the search (``report.nas``).
    """
    chosen = result.chosen
    if chosen is None:
        raise OptimizeError(no_fit_message(result))
    options = options or OptimizeOptions()
    progress = progress or (lambda _s, _d, _t: None)
    progress(f"training {chosen.label} ({result.final_epochs} epochs)", 0, 1)
    with tempfile.TemporaryDirectory(prefix="fogline-nas-") as tmp:
        net = build_trained(family, chosen.knobs, train, result.final_epochs, result.seed)
        stem = "-".join(f"{k}{v:g}" for k, v in chosen.knobs.items())
        path = export_candidate(family, net, chosen.knobs, Path(tmp) / f"{stem}.onnx")
        engine = load_engine(path, options=timing_options(options))
        try:
            result.final_metric = float(family.score(engine, evaluation, chosen.knobs))
            signature = engine.signature
        finally:
            engine.close()
        return optimize(
            path,
            prepared(family, train, chosen.knobs, signature),
            prepared(family, evaluation, chosen.knobs, signature),
            out,
            options,
            progress=progress,
            nas=result,
        )


def no_fit_message(result: NasResult) -> str:
    """Why nothing was chosen: the budget, and the fastest candidate found."""
    fastest = result.fastest()
    where = f"at batch {result.batch}"
    if fastest is None:
        return f"{result.family}: no candidate could be measured"
    return (
        f"{result.family}: no candidate runs within {result.budget_ms:g} ms {where}; "
        f"the fastest, {fastest.label}, took {fastest.latency_ms:.3f} ms"
    )
