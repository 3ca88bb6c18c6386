"""``fogline bench``: latency percentiles, throughput, energy per item and memory of one model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import app, console, needs_extra, parse_batches
from fogline.model import Engine, PeakMemory, engine_fallback, measure, open_model


def load_for_bench(
    path: Path | str,
    backend: str,
    threads: int | None,
    precision: str | None,
    graph_optimization: str | None = None,
    providers: tuple[str, ...] | None = None,
    spin: bool | None = None,
) -> tuple[Engine, str]:
    """Load a model file, or the model a manifest folder describes (hash checked), or connect to
    a remote model (an Open Inference Protocol URL, see :class:`fogline.oip.ModelUrl`)."""
    if "://" in str(path):
        return open_remote(str(path))
    opened = open_model(
        path,
        backend=backend,
        threads=threads,
        precision=precision,
        graph_optimization=graph_optimization,
        providers=providers,
        spin=spin,
    )
    return opened.engine, str(opened.file)


def device_text(engine: Engine) -> str:
    """The provider that runs ``engine``, and the GPU one that did not start if it fell back."""
    fallback = engine_fallback(engine)
    return engine.device + (f" (fell back: {fallback} did not start)" if fallback else "")


def gpu_text(engine: Engine) -> str:
    """``", CUDAExecutionProvider"`` for a line that names the backend, when it is not the CPU."""
    if engine.device == "CPUExecutionProvider" and engine_fallback(engine) is None:
        return ""
    return f", {device_text(engine)}"


def open_remote(url: str, timeout_s: float = 10.0) -> tuple[Engine, str]:
    """A remote model behind an OIP server, its signature read from the server."""
    needs_extra("serve", "tritonclient")
    from fogline.oip import RemoteEngine

    engine = RemoteEngine(url, timeout_s=timeout_s).connect()
    return engine, str(engine.url)


@app.command()
def bench(
    model: str = typer.Argument(
        ...,
        help="A .onnx/.tflite/.xml file, a folder with fogline.yaml, or a remote model: "
        "http://HOST:PORT/v2/models/NAME or grpc://HOST:PORT/NAME.",
    ),
    batch: str = typer.Option("1,8", "--batch", help="Batch sizes, comma-separated."),
    threads: int | None = typer.Option(
        None, min=1, help="Compute threads (default: the runtime's)."
    ),
    duration: float = typer.Option(3.0, min=0.01, help="Seconds to measure each batch size."),
    backend: str = typer.Option("auto", help="auto, onnxruntime, openvino or litert."),
    precision: str | None = typer.Option(None, help="fp32, fp16, bf16 or int8 (OpenVINO: bf16)."),
    graph_optimization: str | None = typer.Option(
        None, help="ONNX Runtime graph optimization: disable, basic, extended or all."
    ),
    provider: list[str] | None = typer.Option(
        None,
        help="ONNX Runtime execution provider: cpu, cuda, tensorrt or a full name (repeat for "
        "several, best first; CPU is always last). Default: the best this build offers.",
    ),
    spin: bool | None = typer.Option(
        None, "--spin/--no-spin", help="Let idle threads spin (ONNX Runtime; default: spin)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Measure latency (p50/p90/p99), throughput, energy per item and peak memory after a warm-up.

    Energy is measured (RAPL, NVML) where the device exposes its counters, else estimated
    from CPU time x FOGLINE_CPU_WATTS per core; the output says which.
    """
    batches = parse_batches(batch)
    providers = tuple(provider) if provider else None
    with PeakMemory() as memory:
        engine, model_file = load_for_bench(
            model if "://" in model else Path(model),
            backend,
            threads,
            precision,
            graph_optimization,
            providers,
            spin,
        )
        try:
            results = [measure(engine, batch=b, duration_s=duration) for b in batches]
        finally:
            engine.close()
    info = {
        "model": model_file,
        "backend": engine.backend,
        "precision": engine.precision,
        "device": engine.device,
        "fallback": engine_fallback(engine),
        "graph_optimization": graph_optimization or "all",
        "spin": spin,
        "threads": threads,
        "peak_memory_mb": round(memory.peak_mb, 1),
        "results": [r.to_dict() for r in results],
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console.print(
        f"[bold]{escape(model_file)}[/] · {engine.backend} · {engine.precision} · "
        f"{device_text(engine)} · threads {threads or 'auto'} · graph optimization "
        f"{graph_optimization or 'all'}",
        highlight=False,
    )
    table = Table()
    for column in ("batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "items/s", "mJ/item", "runs"):
        table.add_column(column, justify="right")
    for r in results:
        per_item = r.joules_per_item
        table.add_row(
            str(r.batch),
            f"{r.p50:.3f}",
            f"{r.p90:.3f}",
            f"{r.p99:.3f}",
            f"{r.mean:.3f}",
            f"{r.throughput:,.1f}",
            "" if per_item is None else f"{per_item * 1000:.3f}",
            str(r.runs),
        )
    console.print(table)
    energy = next((r.energy for r in results if r.energy is not None), None)
    if energy is not None:
        why = f" · {energy.note}" if energy.note else ""
        console.print(f"energy {escape(energy.label)}{escape(why)}", highlight=False)
    else:
        console.print("energy not metered: the model runs on another machine", highlight=False)
    console.print(f"peak memory {memory.peak_mb:.0f} MiB (process resident set)")
