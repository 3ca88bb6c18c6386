"""``fogline run`` and ``fogline check``: run a pipeline file, or only check it."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fogline.cli._app import app, console, console_err
from fogline.cli._bench import gpu_text
from fogline.cli._options import KEY_FROM_ENV, device_key_option
from fogline.errors import ConfigError
from fogline.model import provider_name
from fogline.monitor import OnlineEngine
from fogline.pipeline import (
    OUTCOMES,
    LabelBoard,
    OffloadReading,
    Pipeline,
    PipelineSpec,
    Plan,
    Snapshot,
    VariantBoard,
    load_spec,
    plan,
)
from fogline.security import KeySource

_DEVICE_KEY = device_key_option(
    "The device key file: it opens an encrypted store (store.encrypt) and sealed models "
    f"(default: {KEY_FROM_ENV})."
)


def _keys(device_key: Path | None) -> KeySource:
    return KeySource(file=device_key)


def _backlog(spec: PipelineSpec) -> str:
    """How soon a wait fills the outbox, when every source has a ``rate`` (else nothing known)."""
    rates = [source.rate for source in spec.sources]
    if spec.outbox is None or not rates or any(rate is None for rate in rates):
        return ""
    from fogline.power import describe_age

    total = sum(rate for rate in rates if rate is not None)
    return (
        f"; at the sources' {total:g} items/s a wait fills it in "
        f"{describe_age(spec.outbox.limit / total)} at the soonest"
    )


def _defer_warnings(spec: PipelineSpec) -> list[str]:
    """``outbox.defer`` with ``policy: drop-oldest``: a long wait loses unsent results."""
    outbox = spec.outbox
    if outbox is None or outbox.defer is None or outbox.policy != "drop-oldest":
        return []
    return [
        f"outbox: defer with policy drop-oldest: a wait that fills the outbox "
        f"({outbox.limit:,} unsent){_backlog(spec)} throws away the oldest unsent results "
        "(policy reject keeps them and refuses new ones)"
    ]


@app.command()
def check(
    pipeline: Path = typer.Argument(..., help="The pipeline YAML file."),
    device_key: Path | None = _DEVICE_KEY,
) -> None:
    """Check a pipeline file without running it: keys, files, the model, and that it all fits."""
    checked = plan(load_spec(pipeline), keys=_keys(device_key))
    try:
        console.print(describe(checked), highlight=False)
        warnings = list(checked.egress.warnings() if checked.egress is not None else ())
        warnings += _defer_warnings(checked.spec)
        for warning in warnings:
            console.print(f"[yellow]warning[/]: {escape(warning)}", highlight=False)
        console.print(
            f"[green]ok[/]: {escape(str(pipeline))} is ready to run",
            highlight=False,
            soft_wrap=True,
        )
    finally:
        checked.model.engine.close()


@app.command()
def run(
    pipeline: Path = typer.Argument(..., help="The pipeline YAML file."),
    duration: float | None = typer.Option(
        None, min=0.0, help="Stop reading the sources after this many seconds."
    ),
    max_items: int | None = typer.Option(
        None, "--max-items", min=1, help="Stop after reading this many items."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics on this port."
    ),
    live: bool | None = typer.Option(
        None, "--live/--no-live", help="Show the live table (default: when on a terminal)."
    ),
    output_dir: Path | None = typer.Option(
        None,
        "--output-dir",
        help="Write relative outputs (store, files) here, not beside the pipeline file.",
    ),
    provider: list[str] | None = typer.Option(
        None,
        help="ONNX Runtime execution provider: cpu, cuda, tensorrt or a full name (repeat for "
        "several, best first; CPU is always last); replaces the spec's model.providers. "
        "Default: those, else the model manifest's preference, else the best this build offers.",
    ),
    device_key: Path | None = _DEVICE_KEY,
) -> None:
    """Run a pipeline until its sources end, --duration passes, or Ctrl-C; then drain and sum up."""
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    spec = load_spec(pipeline, outputs=output_dir)
    if provider:
        spec = with_providers(spec, provider)
    checked = plan(spec, keys=_keys(device_key))
    runner = Pipeline(checked)
    try:
        with _logging(), _signals(runner), _prometheus(runner, metrics_port):
            show_live = console.is_terminal if live is None else live
            snapshot = live_run(runner, duration, max_items, show_live)
        print_summary(runner, snapshot)
    finally:
        runner.close()
        checked.model.engine.close()
    failed = [name for name, per in snapshot.counts.items() if per.get("source_failed")]
    if failed:  # the summary stands, but a script must see that a source broke
        console_err.print(
            f"[red]error[/]: source(s) {', '.join(failed)} stopped on an error (see above)",
            highlight=False,
        )
        raise typer.Exit(2)


def with_providers(spec: PipelineSpec, providers: list[str]) -> PipelineSpec:
    """``spec`` with its model's execution providers replaced by ``providers`` (``--provider``);
    the engine refuses, saying what the build offers, any that this build lacks."""
    if spec.model.online is not None:
        raise ConfigError("--provider is for a model file run by ONNX Runtime, not `online`")
    names = [provider_name(p) for p in providers]
    return spec.model_copy(update={"model": spec.model.model_copy(update={"providers": names})})


def live_run(
    runner: Pipeline, duration: float | None, max_items: int | None, live: bool
) -> Snapshot:
    if not live:
        return runner.run(duration=duration, max_items=max_items)
    result: list[Snapshot] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            result.append(runner.run(duration=duration, max_items=max_items))
        except BaseException as exc:  # handed to the main thread below
            errors.append(exc)

    thread = threading.Thread(target=work, name="fogline-run", daemon=True)
    with Live(console=console, refresh_per_second=4, transient=True) as view:
        thread.start()
        while thread.is_alive():
            view.update(live_table(runner.plan, runner.metrics.snapshot()))
            thread.join(0.25)
    if errors:
        raise errors[0]
    return result[0]


def print_summary(runner: Pipeline, snapshot: Snapshot) -> None:
    """The counts per source, the latency per stage, and the summary lines."""
    console.print(summary_table(runner.plan, snapshot), highlight=False)
    if snapshot.stages:
        console.print(latency_table(snapshot), highlight=False)
    for line in summary_lines(runner, snapshot):
        console.print(line, highlight=False)


def describe(checked: Plan) -> Group:
    """What the checked pipeline will do: one row per source, then one line per stage."""
    spec = checked.spec
    engine = checked.model.engine
    table = Table(title=f"pipeline {escape(spec.name)}", title_justify="left")
    for column in ("source", "type", "policy", "arrives at the model as"):
        table.add_column(column)
    for source, name in zip(spec.sources, spec.source_names(), strict=True):
        table.add_row(
            escape(name), source.type, source.policy, escape(checked.arrival[name].describe())
        )
    steps = " → ".join(step.type for step in spec.preprocess) or "none"
    post = " → ".join(step.type for step in spec.postprocess) or "none (raw outputs are stored)"
    rules = ", ".join(f"{r.name} → {', '.join(r.then) or 'tag only'}" for r in spec.rules)
    outbox = "off" if spec.outbox is None else spec.outbox.transport.type
    lines = [
        f"preprocess   {steps}",
        f"model        {checked.model.name} v{checked.model.version} ({engine.backend}, "
        f"{engine.precision}{gpu_text(engine)}), batches ≤ {spec.model.max_batch}, wait ≤ {spec.model.max_wait_ms:g} ms",
        f"postprocess  {post}",
        f"rules        {rules or 'none'}",
        f"sinks        {', '.join(spec.sink_names()) or 'none'}",
        f"store        {store_text(checked)} · outbox {outbox}",
    ]
    if spec.outbox is not None and spec.outbox.defer is not None:
        from fogline.power import Deferral

        now = Deferral(spec.outbox.defer).check().reason
        carbon = spec.outbox.defer.carbon
        if carbon is not None and carbon.topic is not None:
            now += " (the topic is followed once the pipeline runs)"
        lines.append(f"outbox defer {now}")
        full = (
            "refuses new results, keeps every stored one"
            if spec.outbox.policy == "reject"
            else "drops the oldest unsent"
        )
        backlog = _backlog(spec)
        lines.append(
            f"outbox limit {spec.outbox.limit:,} unsent (policy {spec.outbox.policy}: a full "
            f"outbox {full}){backlog}"
        )
    if spec.model.variants is not None and spec.model.policy is not None:
        names = " → ".join(v.label for v in spec.model.variants)
        lines.append(f"variants     {names} (all loaded), {variant_policy(spec.model.policy)}")
    if spec.labels is not None:
        windows = ", ".join(str(w) for w in spec.labels.windows)
        lines.append(
            f"labels       {spec.labels.source.type} → compare {spec.labels.compare} "
            f"({spec.labels.task}), windows {windows}, retention {spec.labels.retention_s:g} s"
        )
    if checked.egress is not None:
        lines.append(f"privacy      {checked.egress.describe()}")
    return Group(table, Text("\n".join(lines)))


def store_text(checked: Plan) -> str:
    """``results.db``, ``results.db (encrypted, key 1a2b3c4d5e6f7a8b)`` or ``off``."""
    store = checked.spec.store
    if store is False:
        return "off"
    key = checked.store_key
    return f"{store.path}" if key is None else f"{store.path} (encrypted, key {key.fingerprint()})"


def live_table(checked: Plan, snap: Snapshot) -> Group:
    """What the terminal shows while a pipeline runs: counts, latencies, queue depths."""
    queues = Text(
        "queues: " + " · ".join(f"{name} {depth:,}" for name, depth in snap.queues.items()),
        style="dim",
    )
    parts: list[RenderableType] = [summary_table(checked, snap, always=("dropped", "errors"))]
    if snap.stages:
        parts.append(latency_table(snap))
    parts.append(queues)
    drift = snap.extra.get("drift", {})
    if drift:
        shown = " · ".join(f"{escape(k)} {drift_text(r)}" for k, r in drift.items())
        parts.append(
            Text(
                f"drift: {shown}",
                style="bold red" if any(r.alarm for r in drift.values()) else "dim",
            )
        )
    for name, reading in offload_readings(snap):
        parts.append(Text(f"{name}: {reading.describe()}", style="dim"))
    board = snap.extra.get("labels")
    if isinstance(board, LabelBoard):
        parts.append(Text("\n".join(board.describe())))
    variants = snap.extra.get("variants")
    if isinstance(variants, VariantBoard):
        last = f" · last: {variants.switches[-1].describe()}" if variants.switches else ""
        parts.append(Text(escape(variants.describe() + last), style="bold"))
    return Group(*parts)


def variant_policy(policy: Any) -> str:
    """``down when p99 > 40 ms or queue > 32 for 2 s, up after 10 s inside x 0.7``"""
    limits = [
        f"{name} {sign} {value:g}{unit}"
        for name, sign, value, unit in (
            ("p99", ">", policy.slo_p99_ms, " ms"),
            ("queue", ">", policy.max_queue, ""),
            ("cpu", ">", policy.max_cpu_percent, "%"),
            ("temperature", ">", policy.max_temperature_c, " °C"),
            ("battery", "<", policy.min_battery_percent, "%"),
        )
        if value is not None
    ]
    return (
        f"down when {' or '.join(limits)} for {policy.down_after_s:g} s, "
        f"up after {policy.up_after_s:g} s inside x {policy.margin:g}"
    )


def offload_readings(snap: Snapshot) -> list[tuple[str, OffloadReading]]:
    """The offload steps' readings (``offload``, or ``offload:KEY`` in join mode), by name."""
    return [(k, r) for k, r in snap.extra.items() if isinstance(r, OffloadReading)]


def drift_text(reading: Any) -> str:
    """A drift step's latest reading: ``ks score 0.31, ALARM (1 raised)``."""
    state = "ALARM" if reading.alarm else "no alarm"
    return f"{reading.detector} score {reading.score:.4g}, {state} ({reading.alarms:,} raised)"


def summary_table(checked: Plan, snap: Snapshot, always: tuple[str, ...] = ()) -> Table:
    table = Table(title=f"pipeline {escape(checked.spec.name)}", title_justify="left")
    table.add_column("source")
    keep = ("produced", "processed", *always)
    shown = [o for o in OUTCOMES if o in keep or snap.total(o)]
    for outcome in shown:
        table.add_column(outcome, justify="right")
    for source in checked.spec.source_names():
        per = snap.counts.get(source, {})
        table.add_row(escape(source), *(f"{per.get(o, 0):,}" for o in shown))
    if len(snap.counts) > 1:
        table.add_row("[b]all[/]", *(f"[b]{snap.total(o):,}[/]" for o in shown))
    table.caption = f"{snap.elapsed:.1f} s · {snap.throughput:,.0f} items/s"
    table.caption_justify = "left"
    return table


def latency_table(snap: Snapshot) -> Table:
    """p50/p99 per stage, in milliseconds."""
    table = Table(title="latency per item (ms)", title_justify="left")
    for column in ("", *snap.stages):
        table.add_column(column.replace("_", " "), justify="right")
    for name in ("p50", "p99"):
        table.add_row(name, *(f"{getattr(t, name) * 1e3:.2f}" for t in snap.stages.values()))
    return table


def summary_lines(runner: Pipeline, snap: Snapshot) -> list[str]:
    lines = []
    e2e = snap.stages.get("end_to_end")
    if e2e is not None:
        lines.append(
            f"processed {snap.total('processed'):,} items in {snap.elapsed:.2f} s: "
            f"{snap.throughput:,.0f} items/s, end-to-end p50 {e2e.p50 * 1e3:.2f} ms, "
            f"p99 {e2e.p99 * 1e3:.2f} ms"
        )
    settled = {o: snap.total(o) for o in OUTCOMES if o not in ("produced", "processed", "corrupt")}
    lines.append(
        f"books: {snap.total('produced'):,} produced = {snap.total('processed'):,} processed + "
        + " + ".join(f"{n:,} {outcome}" for outcome, n in settled.items())
        + (f" · {snap.total('corrupt'):,} unreadable skipped" if snap.total("corrupt") else "")
    )
    if snap.accuracy is not None:
        correct, labelled = snap.accuracy
        lines.append(
            f"accuracy {correct / labelled:.2%} ({correct:,} of {labelled:,} labelled items)"
        )
    for stage, reading in snap.extra.get("drift", {}).items():
        lines.append(f"drift step {escape(stage)}: {drift_text(reading)}")
    for name, reading in offload_readings(snap):
        lines.append(f"{escape(name)}: {escape(reading.describe())}")
    if snap.captures:
        kept = snap.captures
        parts = ", ".join(f"{kept[o]:,} {o}" for o in ("stored", "capped", "failed") if kept.get(o))
        lines.append(f"captures: {parts or 'none'}")
    board = snap.extra.get("labels")
    if isinstance(board, LabelBoard):
        lines += [escape(line) for line in board.describe()]
    variants = snap.extra.get("variants")
    if isinstance(variants, VariantBoard):
        lines.append(escape(variants.describe()))
        lines += [f"  {escape(s.describe())}" for s in variants.switches[-10:]]
    engine = runner.plan.model.engine
    if isinstance(engine, OnlineEngine):
        lines.append(escape(engine.summary()))
    for name, per in snap.sinks.items():
        parts = ", ".join(f"{n:,} {outcome}" for outcome, n in sorted(per.items()))
        lines.append(f"sink {escape(name)}: {parts}")
    if runner.store is not None:
        stats = runner.store.stats()
        held = f"{runner.store.count():,} results"
        if runner.spec.capture is not None:
            held += f", {runner.store.capture_count():,} captures ({runner.store.capture_bytes():,} bytes)"
        lines.append(f"store {escape(str(runner.store.path))}: {held}")
        if runner.spec.outbox is not None:
            verdict = runner.outbox_verdict
            lines.append(
                f"outbox: {stats.delivered:,} delivered, {stats.pending:,} pending, "
                f"{stats.dropped:,} dropped" + ("" if verdict is None else f" ({verdict.reason})")
            )
    return lines


@contextmanager
def _signals(runner: Pipeline) -> Iterator[None]:
    """SIGINT/SIGTERM stop the sources; the pipeline drains and the summary is printed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        console_err.print(
            f"{signal.Signals(signum).name}: draining (items in flight finish and are stored)",
            highlight=False,
        )
        runner.stop()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _prometheus(runner: Pipeline, port: int | None) -> Iterator[None]:
    if port is None:
        yield
        return
    from prometheus_client import CollectorRegistry, start_http_server

    from fogline.metrics import EnergyCollector
    from fogline.power import open_meter

    registry = CollectorRegistry()
    registry.register(runner.metrics.prometheus_collector(runner.spec.name))
    # The run's energy: NVML when its model runs on an NVIDIA GPU, else RAPL where readable,
    # else estimated from CPU time; over the items processed, the release's energy per item.
    meter = open_meter(runner.plan.model.engine.device)
    registry.register(EnergyCollector(meter, {"pipeline": runner.spec.name}))
    try:
        server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen: {exc.strerror or exc}") from exc
    console_err.print(f"metrics: http://127.0.0.1:{server.server_port}/metrics", highlight=False)
    try:
        yield
    finally:
        server.shutdown()
        thread.join()


@contextmanager
def _logging() -> Iterator[None]:
    """Item errors and sink failures as one line each on stderr."""
    logger = logging.getLogger("fogline")
    handler = _ConsoleHandler()
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


class _ConsoleHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        level = record.levelname.lower()
        style = "red" if record.levelno >= logging.ERROR else "yellow"
        console_err.print(f"[{style}]{level}[/]: {escape(record.getMessage())}", highlight=False)
