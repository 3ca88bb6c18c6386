"""The variant search behind ``fogline optimize``.

Build every variant this machine can run, measure each one the same way,
and pick the fastest that stays inside the accuracy budget and is really
faster than the FP32 baseline. INT8 is never assumed to be faster, and a
static INT8 variant whose error is too large gets a second chance with the
most sensitive layers kept in floating point.

Everything is written to a staging folder beside ``--out`` and moved into
place only when the search succeeds, so a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import fnmatch
import gc
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from fogline.data import Dataset
from fogline.errors import ConfigError, FoglineError, ManifestError, OptimizeError
from fogline.model import (
    MANIFEST_NAME,
    Engine,
    EngineOptions,
    Manifest,
    PeakMemory,
    calibration_table_path,
    engine_fallback,
    load_engine,
    load_onnx,
    time_calls,
)
from fogline.optimize._measure import (
    Budget,
    accuracy,
    agreement,
    feeds_of_size,
    measure_variant,
    run_dataset,
)
from fogline.optimize._nas_result import NasResult
from fogline.optimize._report import Report, VariantResult, write_reports
from fogline.optimize._sensitivity import exclusion_set, rank_sensitive_nodes
from fogline.optimize._variants import (
    CALIBRATION_METHODS,
    CPU,
    TENSORRT,
    BuildContext,
    VariantPlan,
    gpu_plans,
    onnx_plans,
    openvino_plans,
    static_builder,
)

NOT_SELECTED = "not selected by --variants"
#: How many front-runners are timed again against the baseline, and in how many rounds.
MAX_CONFIRMED = 3
CONFIRM_ROUNDS = 6
#: At most this share of the ranked nodes is kept in FP32 by the sensitivity check.
MAX_EXCLUDED_SHARE = 0.5
#: A variant must beat the baseline by this share to replace it; less is noise.
MIN_SPEEDUP = 1.05
OBJECTIVES = ("latency", "throughput")

Progress = Callable[[str, int, int], None]


@dataclass
class OptimizeOptions:
    """Knobs of the search; the defaults suit a device that serves one item at a time."""

    max_accuracy_drop: float = 1.0
    max_abs_error: float | None = None
    threads: int | None = None
    batches: tuple[int, ...] = (1, 8)
    duration_s: float = 1.0
    methods: tuple[str, ...] = CALIBRATION_METHODS
    variants: tuple[str, ...] = ()
    objective: str = "latency"
    calibration_size: int = 256
    eval_size: int = 1000
    sensitivity: bool = True
    keep_variants: bool = True
    name: str | None = None
    version: str = "1"
    extra_manifest: dict[str, Any] = field(default_factory=dict)
    #: The ONNX Runtime execution providers the search may use (None: all this build offers).
    #: GPU variants are planned for the CUDA and TensorRT providers among them.
    providers: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be latency or throughput, not {self.objective!r}")
        if self.max_accuracy_drop < 0:
            raise ConfigError("max accuracy drop must be zero or more (percentage points)")
        if not self.batches or any(b < 1 for b in self.batches):
            raise ConfigError(f"batch sizes must be positive integers, got {self.batches}")
        for method in self.methods:
            if method not in CALIBRATION_METHODS:
                raise ConfigError(
                    f"unknown calibration method {method!r}; use {', '.join(CALIBRATION_METHODS)}"
                )


def optimize(
    model: str | Path,
    calibration: Dataset,
    evaluation: Dataset | None,
    out: str | Path,
    options: OptimizeOptions | None = None,
    progress: Progress | None = None,
    extra_plans: Sequence[VariantPlan] = (),
    *,
    nas: NasResult | None = None,
) -> Report:
    """Search variants of ``model`` and write the selected one to ``out``.

    ``extra_plans`` adds variants built elsewhere (pruning, distillation);
    they are measured, judged and reported like the built-in ones. ``nas``
    is the architecture search ``model`` came from, for the report.
    """
    options = options or OptimizeOptions()
    model, out = Path(model).resolve(), Path(out).resolve()
    if model.suffix.lower() != ".onnx":
        raise ConfigError(f"{model}: optimize takes an .onnx model (convert others first)")
    parsed = load_onnx(model)  # refuses corrupt and unsafe files before anything is written
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-staging-"))
    try:
        report = _search(
            model,
            parsed,
            calibration,
            evaluation or calibration,
            staging,
            options,
            progress or (lambda _s, _d, _t: None),
            extra_plans,
        )
        report.nas = nas
        write_reports(report, staging)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _search(
    model: Path,
    parsed: onnx.ModelProto,
    calibration: Dataset,
    evaluation: Dataset,
    staging: Path,
    options: OptimizeOptions,
    progress: Progress,
    extra_plans: Sequence[VariantPlan],
) -> Report:
    work = staging / ".work"
    work.mkdir()
    (staging / "variants").mkdir()
    source = work / "source.onnx"
    onnx.save(parsed, str(source))  # external data folded in: variants are single files
    run = _Run(
        BuildContext(source, work, calibration.limit(options.calibration_size)),
        staging / "variants",
        evaluation.limit(options.eval_size),
        options,
    )
    plans = onnx_plans(options.methods)
    ov_plans, skipped = openvino_plans()
    plans += ov_plans
    available = available_providers(options)
    on_gpu, gpu_skipped = gpu_plans(available)
    plans += on_gpu
    skipped.update(gpu_skipped)
    if options.providers is None and TENSORRT in available and not tensorrt_found():
        plans = [p for p in plans if TENSORRT not in p.providers]
        skipped["tensorrt-*"] = (
            "TensorRT's libraries (libnvinfer) are not installed: pip install tensorrt, "
            "or JetPack's (docs/gpu.md)"
        )
    plans += extra_plans
    if options.variants:
        wanted = [p for p in plans if p.name == "ort-fp32" or _matches(p.name, options.variants)]
        skipped.update({p.name: NOT_SELECTED for p in plans if p not in wanted})
        plans = wanted
    total = len(plans) + (1 if options.sensitivity else 0)
    results: list[VariantResult] = []
    for index, plan in enumerate(plans):
        progress(plan.name, index, total)
        result = run.build_and_measure(plan)
        if run.baseline is None:
            if result.status != "ok":
                raise OptimizeError(f"{model}: the FP32 baseline cannot run: {result.error}")
            run.baseline = result
        results.append(result)
    assert run.baseline is not None and run.budget is not None
    if options.sensitivity:
        progress("sensitivity check", len(plans), total)
        mixed = run.mixed_precision(results)
        if mixed is not None:
            results.append(mixed)
    progress("done", total, total)
    shutil.rmtree(work, ignore_errors=True)
    progress("confirming the fastest", total, total)
    selected = _select(results, run.baseline, options, run.confirm)
    _write_selected(selected, staging, model, options, run.baseline)
    if not options.keep_variants:
        shutil.rmtree(run.variants_dir)
    return Report.build(
        model, selected, run.baseline, results, skipped, options, run.budget, on_gpu=bool(on_gpu)
    )


def tensorrt_found() -> bool:
    """True when TensorRT's libraries are installed (onnxruntime-gpu offers the provider
    either way)."""
    from fogline.model import tensorrt_version

    return tensorrt_version() != "unknown"


def available_providers(options: OptimizeOptions) -> tuple[str, ...]:
    """The execution providers the search plans for: ``options.providers`` (short names
    allowed), else what this onnxruntime build offers."""
    if options.providers is not None:
        from fogline.model import provider_name

        return tuple(provider_name(p) for p in options.providers)
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


@contextlib.contextmanager
def quiet(workdir: Path | None = None) -> Iterator[None]:
    """Silence the chatter of quantization tools (prints, progress bars, log lines).

    With ``workdir``, also run inside it: ONNX Runtime's shape inference and
    calibrators drop scratch files into the current directory.
    """
    loggers = [logging.getLogger(n) for n in ("nncf", "onnxruntime", "root")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sink = io.StringIO()
    cwd = os.getcwd()
    try:
        if workdir is not None:
            os.chdir(workdir)
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield
    finally:
        os.chdir(cwd)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _runner(engine: Engine, feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    return lambda: engine.run(feeds)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) or name == p for p in patterns)


def _files_of(path: Path) -> list[Path]:
    if path.suffix == ".xml":
        return [path, path.with_suffix(".bin")]
    table = calibration_table_path(path)
    return [path, table] if table.is_file() else [path]


def _options(
    threads: int | None, engine: str, precision: str, providers: Sequence[str]
) -> EngineOptions:
    """How a variant runs: on its own providers (ONNX Runtime), never on the build's default."""
    chosen = tuple(providers) if engine == "onnxruntime" else None
    return EngineOptions(threads=threads, precision=precision, providers=chosen)


@dataclass
class _Run:
    """State of one search: the FP32 reference outputs, the baseline, the budget."""

    ctx: BuildContext
    variants_dir: Path
    eval_data: Dataset
    options: OptimizeOptions
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    baseline: VariantResult | None = None
    budget: Budget | None = None

    def build_and_measure(self, plan: VariantPlan) -> VariantResult:
        target = self.variants_dir / f"{plan.name}{plan.suffix}"
        result = VariantResult(
            plan.name, plan.engine, plan.precision, notes=plan.notes, providers=list(plan.providers)
        )
        memory = PeakMemory()
        try:
            with quiet(self.ctx.workdir):
                plan.build(self.ctx, target)
            if target.name in self.ctx.notes:
                result.notes = "; ".join(filter(None, (plan.notes, self.ctx.notes[target.name])))
            gc.collect()  # what earlier variants left behind must not count against this one
            with memory:  # loading counts: a runtime may hold two copies of the weights then
                engine = load_engine(
                    target, backend=plan.engine, options=self._engine_options(plan)
                )
                result.device, result.fallback = engine.device, engine_fallback(engine)
                if result.fallback is not None:
                    engine.close()
                    return result.failed(
                        f"{result.fallback} did not start here; ONNX Runtime would run it on "
                        f"{engine.device}"
                    )
                timings, outputs = measure_variant(
                    engine,
                    self.eval_data,
                    batches=self.options.batches,
                    duration_s=self.options.duration_s,
                )
                engine.close()
        except FoglineError as exc:
            return result.failed(str(exc))
        except Exception as exc:  # a runtime's own error while building or running
            return result.failed(f"{type(exc).__name__}: {exc}")
        result.file = f"variants/{target.name}"
        result.size_bytes = sum(p.stat().st_size for p in _files_of(target))
        result.timings = timings
        result.peak_memory_mb = round(memory.peak_mb, 1)
        result.memory_growth_mb = round(memory.growth_mb, 1)
        self._score(result, outputs)
        return result

    def _engine_options(self, plan: VariantPlan) -> EngineOptions:
        return _options(self.options.threads, plan.engine, plan.precision, plan.providers)

    def _score(
        self,
        result: VariantResult,
        outputs: dict[str, np.ndarray],
        labels: np.ndarray | None = None,
        items: int | None = None,
    ) -> None:
        if not self.reference:  # the first variant measured is the FP32 baseline
            self.reference.update(outputs)
            self.budget = Budget.decide(
                self.options.max_accuracy_drop,
                self.options.max_abs_error,
                accuracy(outputs, self.eval_data.labels) is not None,
                outputs,
            )
        reference = self.reference
        if items is not None:
            reference = {k: v[:items] for k, v in reference.items()}
        result.accuracy = accuracy(outputs, self.eval_data.labels if labels is None else labels)
        result.agreement = agreement(reference, outputs)
        assert self.budget is not None
        result.judge(self.baseline, self.budget)

    def confirm(self, candidate: VariantResult) -> float:
        """Speed of ``candidate`` over the baseline, timed in alternating rounds."""
        assert self.baseline is not None
        batches = self.options.batches
        batch = batches[-1] if self.options.objective == "throughput" else batches[0]
        engines = [
            load_engine(
                self.variants_dir.parent / r.file,
                backend=r.engine,
                options=_options(self.options.threads, r.engine, r.precision, r.providers),
            )
            for r in (self.baseline, candidate)
        ]
        feeds = feeds_of_size(self.eval_data, batch, engines[0])
        rates: list[list[float]] = [[], []]
        seconds = max(0.1, self.options.duration_s / 2)
        for round_index in range(CONFIRM_ROUNDS):
            for i in (0, 1) if round_index % 2 == 0 else (1, 0):
                stats = time_calls(
                    _runner(engines[i], feeds),
                    batch=batch,
                    warmup=2,
                    duration_s=seconds,
                    min_runs=5,
                )
                rates[i].append(stats.throughput)
        for engine in engines:
            engine.close()
        return float(np.median(rates[1]) / np.median(rates[0]))

    def mixed_precision(self, results: list[VariantResult]) -> VariantResult | None:
        """Static INT8 with the most sensitive nodes in FP32, when full INT8 misses the budget."""
        statics = [r for r in results if r.name.startswith("ort-int8-static-") and r.status == "ok"]
        if not statics or any(r.within_budget for r in statics):
            return None
        best = min(statics, key=lambda r: r.agreement.max_abs if r.agreement else float("inf"))
        method = best.name.removeprefix("ort-int8-static-")
        with quiet(self.ctx.workdir):
            ranked = rank_sensitive_nodes(
                self.ctx.prepared(),
                self.variants_dir / f"{best.name}.onnx",
                self.ctx.calibration,
                self.ctx.workdir,
            )
        check = self.eval_data.limit(256)
        count, chosen = 1, None
        while ranked:
            exclude = exclusion_set(ranked, count)
            trial_path = self.ctx.workdir / "mixed-trial.onnx"
            with quiet(self.ctx.workdir):
                static_builder(method, exclude=exclude)(self.ctx, trial_path)
            engine = load_engine(
                trial_path, options=_options(self.options.threads, "onnxruntime", "int8", (CPU,))
            )
            trial = VariantResult("trial", "onnxruntime", "int8")
            self._score(trial, run_dataset(engine, check), check.labels, check.size)
            engine.close()
            if trial.within_budget:
                chosen = exclude
                break
            if count >= len(ranked) or count >= max(1.0, MAX_EXCLUDED_SHARE * len(ranked)):
                break
            count = min(count * 2, len(ranked))
        if chosen is None:
            return None
        shown = ", ".join(chosen[:6]) + (" …" if len(chosen) > 6 else "")
        plan = VariantPlan(
            f"ort-int8-mixed-{method}",
            "onnxruntime",
            "int8",
            static_builder(method, exclude=chosen),
            f"QDQ per-channel, {method}; {len(chosen)} sensitive node(s) kept in FP32: {shown}",
        )
        result = self.build_and_measure(plan)
        result.excluded_nodes = list(chosen)
        return result


def _select(
    results: list[VariantResult],
    baseline: VariantResult,
    options: OptimizeOptions,
    confirm: Callable[[VariantResult], float] | None = None,
) -> VariantResult:
    """The fastest variant inside the budget that is really faster than the baseline.

    Each variant was timed once, one after the other; on a shared machine that
    can flatter one of them. So the front-runners are timed again, alternating
    with the baseline (``confirm`` gives the speed ratio), and one that is not
    at least ``MIN_SPEEDUP`` faster then is passed over.
    """

    def speed(r: VariantResult) -> float:
        if options.objective == "throughput":
            return r.throughput
        return 1000.0 / r.p50 if r.p50 > 0 else 0.0

    candidates = [
        r
        for r in results
        if r is not baseline
        and r.status == "ok"
        and r.within_budget
        and speed(r) >= MIN_SPEEDUP * speed(baseline)
    ]
    for r in candidates:
        r.faster_than_baseline = True
    best = baseline
    for r in sorted(candidates, key=speed, reverse=True)[:MAX_CONFIRMED]:
        if confirm is not None:
            r.confirmed_speedup = round(confirm(r), 3)
            if r.confirmed_speedup < MIN_SPEEDUP:
                r.faster_than_baseline = False
                continue
        best = r
        break
    best.selected = True
    return best


def _write_selected(
    selected: VariantResult,
    staging: Path,
    model: Path,
    options: OptimizeOptions,
    baseline: VariantResult,
) -> None:
    source = staging / selected.file
    files = _files_of(source)
    # model.onnx, model.bin, model.calibration.flatbuffers: each keeps what follows the stem
    names = ["model" + p.name.removeprefix(source.stem) for p in files]
    for path, name in zip(files, names, strict=True):
        shutil.copyfile(path, staging / name)
    engine = load_engine(
        staging / names[0],
        backend=selected.engine,
        options=_options(None, selected.engine, selected.precision, selected.providers),
    )
    metrics = {
        "variant": selected.name,
        **selected.summary(),
        "baseline": baseline.name,
        "baseline_latency_ms": baseline.p50,
    }
    extra = dict(options.extra_manifest)
    described = _source_manifest(model)
    if described is not None:
        extra.setdefault("preprocessing", described.preprocessing)
        extra.setdefault("labels", described.labels)
    manifest = Manifest.for_model(
        staging / names[0],
        engine.signature,
        name=options.name or (described.name if described else model.stem),
        version=options.version,
        backend=selected.engine,
        precision=selected.precision,
        metrics=metrics,
        **extra,
    )
    ran_on = _ran_on(selected, engine.device, engine_fallback(engine))
    engine.close()
    manifest.engine = manifest.engine.model_copy(update=ran_on)
    if options.threads is not None:
        manifest.engine = manifest.engine.model_copy(update={"threads": options.threads})
    manifest.write(staging)


def _ran_on(selected: VariantResult, device: str, fallback: str | None) -> dict[str, Any]:
    """The manifest's ``engine.providers``/``device``/``fallback``, only where they say
    something: a variant on the CPU writes none of them, so its manifest reads
    the same to a fogline from before providers were recorded (schema_version 1)."""
    ran_on: dict[str, Any] = {}
    providers = [p for p in selected.providers if p != CPU]
    if selected.engine == "onnxruntime" and providers:
        ran_on["providers"] = [*providers, CPU]
    if device not in (CPU, "CPU") or fallback is not None:  # OpenVINO and LiteRT say "CPU"
        ran_on["device"] = device
    if fallback is not None:
        ran_on["fallback"] = fallback
    return ran_on


def _source_manifest(model: Path) -> Manifest | None:
    """The manifest beside the source model, when it describes that very file."""
    path = model.parent / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = Manifest.read(path)
    except ManifestError:
        return None
    return manifest if manifest.model.path == model.name else None


def _publish(staging: Path, out: Path) -> None:
    """Move the finished results into ``out``, replacing earlier results of the same names."""
    umask = os.umask(0)
    os.umask(umask)
    for folder in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
        folder.chmod(0o777 & ~umask)  # mkdtemp makes 0700; give the usual folder mode
    if not out.exists():
        os.replace(staging, out)
        return
    for entry in staging.iterdir():
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(entry, target)
    with contextlib.suppress(OSError):
        staging.rmdir()
