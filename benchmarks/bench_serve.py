"""``fogline serve`` against the servers users pick, measured in one run on this machine.

    python benchmarks/bench_serve.py [--threads 2] [--max-batch 8] [--instances 2]
                                     [--duration 8] [--rounds 3]
                                     [--naive threadpool|inline] [--protocol http|grpc ...]
                                     [--no-mlserver] [--no-pytriton] [--no-bentoml] [--quick]
                                     [--provider cpu|cuda|tensorrt]
                                     [--concurrency 1 [--concurrency 32 ...]]

MobileNetV2 (224x224, 1000 classes, random weights, settled batch norm) is
exported to ONNX with a dynamic batch axis into a temporary Triton-style
repository. Load comes from the official Triton clients, one image per
request, raw tensors both ways, at concurrency 1, 8 and 32, each (server,
concurrency) cell for a fixed duration; requests/s = images/s. Two loads,
each driving the servers that speak it, so that every comparison is made
with the same load:

* HTTP: ``tritonclient.http.aio`` with the binary tensor extension;
* gRPC: ``tritonclient.grpc.aio`` with ``raw_input_contents`` (one channel).

Servers, each its own process on the same 2 cores as the load generator:

* ``fogline serve`` (subprocess, HTTP and gRPC) over two models of one
  repository, the same ONNX file with dynamic batching: max_batch_size
  ``--max-batch`` (8: on 2 cores a batch of 16 is slower per image than 8),
  preferred sizes 4 and 8, and a queue delay of 2 ms (``fogline 2ms``) or 0
  (``fogline 0ms``: a batch is cut as soon as a compute thread is free, so
  batches form only while they are busy). ``instance_group`` count
  ``--instances`` (2): two batches in flight on the version's one session,
  with the same ``--threads`` (a second batch fills the gaps one batch's
  threads leave on 2 cores; count 1, the earlier runs' setting, was 0.8-0.9x
  of count 2 at concurrency 8 and 32 in A/B runs here). Both loads.
* ``naive`` (HTTP): FastAPI + one ``InferenceSession.run`` per request, the
  server people write themselves, with just enough of the OIP infer endpoint
  (JSON header + binary tensor extension) for the same tritonclient to drive
  it. ``--naive threadpool`` (default) runs ``session.run`` on Starlette's
  thread pool, as FastAPI does for a ``def`` endpoint; ``inline`` calls it on
  the event loop. In ``benchmarks/.venv-naive`` (FastAPI is not fogline's).
* MLServer 1.7 (gRPC), Seldon's V2-protocol server, in
  ``benchmarks/.venv-mlserver``, with the few-line custom ONNX Runtime runtime
  of ``benchmarks/_mlserver_onnx.py`` and its adaptive batching (max batch
  ``--max-batch``, max batch time 2 ms), otherwise its defaults (one parallel
  inference worker process). Its REST endpoint takes JSON tensors only (the
  run checks: a binary-extension request is refused), so it is driven over
  gRPC, where it takes raw tensors; a naive server over gRPC is not what
  people write, so the naive server stays on the HTTP load.
* PyTriton (gRPC; Triton's C++ server with a Python function,
  ``benchmarks/_pytriton_onnx.py``, Triton's dynamic batcher with the same
  max batch and 2 ms delay) in ``benchmarks/.venv-pytriton``, made with
  another Python than fogline's where one is found (its stub failed under
  3.11.7); where it cannot start, one line says exactly why.
* BentoML: not measured; the line printed says why (see ``BENTOML_WHY``).
* ``floor`` (HTTP, concurrency 1 only, a reference, not a server row):
  uvloop and httptools with no framework and no model, reading each request
  whole and sending back a canned answer of the same size as the real one.
  What the round trip costs this client and loopback before any server does
  work.

Every server gets the same ONNX Runtime threads (``--threads``, intra-op;
inter-op 1) and the same execution provider (``--provider``, default cpu;
``cuda`` puts fogline, the naive server, MLServer, PyTriton and the bare
session all on the GPU, the CPU as each one's fallback) and is warmed up before its first cell and briefly before each
cell. Cells are interleaved (per load and concurrency: A B C, C B A, ... for
``--rounds`` rounds) and each figure is the median over rounds.

Targets (issue 16), per load: at concurrency 1, 8 and 32, fogline's
throughput at least 1.1x the naive server's (HTTP) and at least MLServer's
(gRPC), with a lower p99 than both; at concurrency 1, the time fogline adds
over a bare in-process ``InferenceSession.run`` on batch 1 (p50 round trip
minus bare p50) at most 1.5x the floor's p50 round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as http_aio
from _serve_report import Cell, Target, bentoml_line, report
from _serve_rivals import (
    FLOOR_SERVER,
    NAIVE_SERVER,
    MLServerPorts,
    Unavailable,
    mlserver_command,
    mlserver_folder,
    naive_command,
    pytriton_command,
    pytriton_env,
    version_of,
)
from models import mobilenet_v2, photo_crops, settle_batchnorm

from fogline.model import provider_name, time_calls, torch_to_onnx

SIZE = 224
INPUT, OUTPUT = "images", "logits"
CONCURRENCIES = (1, 8, 32)
PROTOCOLS = ("http", "grpc")


def log(message: str) -> None:
    """Progress, on stderr: the result lines on stdout stay pasteable."""
    print(f"  {message}", file=sys.stderr, flush=True)


# --- the model and the repository ----------------------------------------------------------------


def export_mobilenet(folder: Path) -> Path:
    """MobileNetV2 (1000 classes, random weights, settled batch norm) as ONNX, dynamic batch."""
    path = folder / "mobilenet_v2.onnx"
    started = time.perf_counter()
    torch.manual_seed(0)
    crops = photo_crops(16, SIZE)
    model = settle_batchnorm(mobilenet_v2(num_classes=1000), crops)
    torch_to_onnx(model, crops[:2], path, input_names=[INPUT], output_names=[OUTPUT])
    log(f"exported MobileNetV2 {SIZE}x{SIZE} in {time.perf_counter() - started:.0f} s")
    return path


def config_pbtxt(name: str, max_batch: int, delay_us: int, instances: int) -> str:
    preferred = ", ".join(str(s) for s in (4, 8, 16) if s <= max_batch)
    return textwrap.dedent(
        f"""\
        name: "{name}"
        platform: "onnxruntime_onnx"
        max_batch_size: {max_batch}
        input [ {{ name: "{INPUT}", data_type: TYPE_FP32, dims: [ 3, {SIZE}, {SIZE} ] }} ]
        output [ {{ name: "{OUTPUT}", data_type: TYPE_FP32, dims: [ 1000 ] }} ]
        dynamic_batching {{
          preferred_batch_size: [ {preferred} ]
          max_queue_delay_microseconds: {delay_us}
        }}
        instance_group [ {{ count: {instances}, kind: KIND_CPU }} ]
        """
    )


def make_repository(
    folder: Path, onnx: Path, max_batch: int, delays: dict[str, int], instances: int
) -> Path:
    """A Triton-style repository: one model per queue delay, all the same ONNX file."""
    root = folder / "repository"
    for name, delay_us in delays.items():
        (root / name / "1").mkdir(parents=True)
        os.link(onnx, root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(
            config_pbtxt(name, max_batch, delay_us, instances)
        )
    return root


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def launch(name: str, command: list[str], folder: Path, env: dict[str, str], port: int) -> Process:
    """Start ``command`` and wait until its /v2/health/ready answers 200."""
    log_path = folder / f"{name}.log"
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    process = Process(name, popen, port, log_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise SystemExit(f"{name} exited with {popen.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{process.url}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return process
        except OSError:
            pass
        time.sleep(0.2)
    process.stop()
    raise SystemExit(f"{name} did not get ready in time:\n{log_path.read_text()}")


# --- the load generator --------------------------------------------------------------------------


class Client:
    """One tritonclient (HTTP binary or gRPC raw) with the request prepared once."""

    def __init__(self, target: Target, image: np.ndarray, connections: int = 8) -> None:
        self.target = target
        if target.protocol == "http":
            self.client: Any = http_aio.InferenceServerClient(target.url, conn_limit=connections)
            given = http_aio.InferInput(INPUT, list(image.shape), "FP32")
            given.set_data_from_numpy(image, binary_data=True)
            self.wanted: list[Any] = [http_aio.InferRequestedOutput(OUTPUT, binary_data=True)]
        else:
            self.client = grpc_aio.InferenceServerClient(target.url)
            given = grpc_aio.InferInput(INPUT, list(image.shape), "FP32")
            given.set_data_from_numpy(image)
            self.wanted = [grpc_aio.InferRequestedOutput(OUTPUT)]
        self.inputs = [given]

    async def infer(self) -> np.ndarray:
        result = await self.client.infer(self.target.model, self.inputs, outputs=self.wanted)
        return np.asarray(result.as_numpy(OUTPUT))

    async def close(self) -> None:
        await self.client.close()


async def drive(target: Target, concurrency: int, seconds: float, image: np.ndarray) -> Cell:
    """``concurrency`` closed-loop clients for ``seconds``; every request must succeed."""
    client = Client(target, image, connections=max(concurrency, 8))
    latencies: list[float] = []
    clock = time.perf_counter
    end = clock() + seconds

    async def client_loop() -> None:
        while clock() < end:
            sent = clock()
            await client.infer()
            latencies.append(clock() - sent)

    try:
        started = clock()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        elapsed = clock() - started
    finally:
        await client.close()
    ms = np.asarray(latencies) * 1000.0
    return Cell(
        rate=len(latencies) / elapsed,
        p50=float(np.percentile(ms, 50)),
        p99=float(np.percentile(ms, 99)),
        requests=len(latencies),
    )


async def answer(target: Target, image: np.ndarray) -> np.ndarray:
    client = Client(target, image)
    try:
        return await client.infer()
    finally:
        await client.close()


def bare_session(path: Path, threads: int, providers: list[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers)


def providers_of(provider: str) -> list[str]:
    """``--provider`` as the list every server's session is made with (the CPU last, a fallback).

    >>> providers_of("cuda")
    ['CUDAExecutionProvider', 'CPUExecutionProvider']
    """
    return list(dict.fromkeys([provider_name(provider), "CPUExecutionProvider"]))


# --- MLServer's REST --------------------------------------------------------------------------


def mlserver_rest_line(http_url: str, image: np.ndarray) -> str:
    """What MLServer's REST endpoint says to the binary tensor extension (why it runs on gRPC)."""
    target = Target(http_url, "mobilenet", "http")
    try:
        asyncio.run(answer(target, image))
    except Exception as exc:  # tritonclient raises its own error with the server's answer
        said = " ".join(str(exc).split())[:160]
        return (
            f"MLServer REST with the binary tensor extension: refused ({said}); its REST "
            "endpoint takes JSON tensors only, so MLServer is driven over gRPC (raw tensors)"
        )
    return "MLServer REST with the binary tensor extension: accepted"


# --- the run -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--max-batch", type=int, default=8, help="max batch size of every batcher")
    parser.add_argument(
        "--instances",
        type=int,
        default=2,
        help="fogline's instance_group count: batches in flight on the one session",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per cell")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per concurrency")
    parser.add_argument("--naive", choices=("threadpool", "inline"), default="threadpool")
    parser.add_argument(
        "--protocol",
        action="append",
        choices=PROTOCOLS,
        help="measure only this load (repeatable; default: both)",
    )
    parser.add_argument(
        "--provider",
        default="cpu",
        help="ONNX Runtime execution provider of every server and of the bare session "
        "(cpu, cuda, tensorrt; the CPU is the fallback of each)",
    )
    parser.add_argument("--no-mlserver", action="store_true", help="skip MLServer")
    parser.add_argument("--no-pytriton", action="store_true", help="skip PyTriton")
    parser.add_argument("--no-bentoml", action="store_true", help="skip the BentoML check")
    parser.add_argument("--quick", action="store_true", help="2 s cells, one round: a smoke run")
    parser.add_argument(
        "--concurrency",
        type=int,
        action="append",
        choices=CONCURRENCIES,
        help="measure only this concurrency (repeatable; default: all)",
    )
    args = parser.parse_args()
    args.concurrency = tuple(sorted(set(args.concurrency or CONCURRENCIES)))
    args.protocol = tuple(p for p in PROTOCOLS if p in (args.protocol or PROTOCOLS))
    if args.quick:
        args.duration, args.rounds = 2.0, 1
    logging.getLogger("fogline").setLevel(logging.ERROR)
    started = time.perf_counter()
    print(
        f"onnxruntime {ort.__version__}, torch {torch.__version__}, {os.cpu_count()} cores, "
        f"{args.threads} ORT threads per server (fogline: instance_group count "
        f"{args.instances}); MobileNetV2 {SIZE}x{SIZE}, batch 1 per request; "
        f"{args.duration:g} s per cell, {args.rounds} round(s), loads: "
        + ", ".join(
            {"http": "tritonclient.http.aio binary", "grpc": "tritonclient.grpc.aio raw"}[p]
            for p in args.protocol
        )
        + (" (--quick)" if args.quick else "")
        + ("" if args.provider == "cpu" else f"; provider {args.provider} for every server")
        + f"; load average at the start {', '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        summary = run(folder, args)
    bento = bentoml_line(args)
    print(bento)
    summary += "\n" + bento
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nSummary ({time.perf_counter() - started:.0f} s; load average at the end {load}):")
    print(summary)


def run(folder: Path, args: argparse.Namespace) -> str:
    onnx = export_mobilenet(folder)
    delays = {"fogline 2ms": 2000, "fogline 0ms": 0}
    models = {"fogline 2ms": "mobilenet_delay2ms", "fogline 0ms": "mobilenet_delay0"}
    repository = make_repository(
        folder, onnx, args.max_batch, {models[k]: v for k, v in delays.items()}, args.instances
    )
    naive_script = folder / "naive_server.py"
    naive_script.write_text(NAIVE_SERVER)
    floor_script = folder / "floor_server.py"
    floor_script.write_text(FLOOR_SERVER)
    # every server's ONNX Runtime: the same threads and the same providers
    threads = {
        "ONNX_THREADS": str(args.threads),
        "ONNX_PROVIDERS": ",".join(providers_of(args.provider)),
    }
    http, grpc = "http" in args.protocol, "grpc" in args.protocol
    image = photo_crops(1, SIZE, seed=1).numpy()

    notes: list[str] = []
    processes: list[Process] = []
    targets: dict[str, Target] = {}
    try:
        fogline_http, fogline_grpc = free_port(), free_port()
        fogline = launch(
            "fogline",
            [
                *(sys.executable, "-m", "fogline", "serve", "--repository", str(repository)),
                *("--http-port", str(fogline_http), "--grpc-port", str(fogline_grpc)),
                *("--threads", str(args.threads), "--provider", args.provider),
            ],
            folder,
            {},
            fogline_http,
        )
        processes.append(fogline)
        floor_url = ""
        if http:
            for name in delays:
                targets[name] = Target(fogline.url, models[name], "http")
            naive_port = free_port()
            naive = launch(
                "naive",
                naive_command(naive_script, onnx, naive_port),
                folder,
                {**threads, "NAIVE_THREADS": str(args.threads), "NAIVE_MODE": args.naive},
                naive_port,
            )
            processes.append(naive)
            targets[f"naive ({args.naive})"] = Target(naive.url, "mobilenet", "http")
            floor_port = free_port()
            floor = launch(
                "floor",
                [sys.executable, str(floor_script), str(floor_port)],
                folder,
                {},
                floor_port,
            )
            processes.append(floor)
            floor_url = floor.url
        if grpc:
            for name in delays:
                targets[f"{name} (gRPC)"] = Target(
                    f"127.0.0.1:{fogline_grpc}", models[name], "grpc"
                )
            if args.no_mlserver:
                notes.append("MLServer: not measured (--no-mlserver)")
            else:
                try:
                    ports = MLServerPorts(free_port(), free_port(), free_port())
                    root = mlserver_folder(folder, onnx, ports, args.max_batch, 0.002)
                    command, env = mlserver_command(root)
                    mlserver = launch("mlserver", command, folder, {**env, **threads}, ports.http)
                    processes.append(mlserver)
                    version, _ = version_of(Path(command[0]).parent / "python", "mlserver")
                    targets[f"MLServer {version} (gRPC)"] = Target(
                        f"127.0.0.1:{ports.grpc}", "mobilenet", "grpc"
                    )
                    notes.append(mlserver_rest_line(mlserver.url, image))
                except (Unavailable, SystemExit) as exc:
                    notes.append(f"MLServer: not measured ({one_line(exc)})")
            if args.no_pytriton:
                notes.append("PyTriton: not measured (--no-pytriton)")
            else:
                try:
                    ports = MLServerPorts(free_port(), free_port(), free_port())
                    command = pytriton_command(onnx, ports.http, ports.grpc, ports.metrics)
                    env = {
                        **threads,
                        **pytriton_env(Path(command[0])),
                        "MAX_BATCH": str(args.max_batch),
                        "DELAY_US": "2000",
                    }
                    pytriton = launch("pytriton", command, folder, env, ports.http)
                    processes.append(pytriton)
                    version, python = version_of(Path(command[0]), "nvidia-pytriton")
                    targets[f"PyTriton {version} (gRPC)"] = Target(
                        f"127.0.0.1:{ports.grpc}", "mobilenet", "grpc"
                    )
                    notes.append(
                        f"PyTriton: nvidia-pytriton {version} runs here under Python {python}"
                    )
                except (Unavailable, SystemExit) as exc:
                    notes.append(f"PyTriton: not measured ({one_line(exc)})")
        for note in notes:
            log(note)
        summary = measure(onnx, targets, floor_url, image, args)
    finally:
        for process in processes:
            process.stop()
    return "\n".join([summary, *notes])


def one_line(exc: BaseException) -> str:
    """An exception as one line: the last lines of a server's log say why it did not start."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " / ".join(lines[:1] + lines[-2:])[:400]


def bare_cell(session: ort.InferenceSession, batch: int, seconds: float) -> Cell:
    """``session.run`` in this process on ``batch`` images for ``seconds``: items/s, p50, p99."""
    feeds = {INPUT: np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE), np.float32)}
    stats = time_calls(
        lambda: session.run(None, feeds), batch=batch, warmup=3, duration_s=seconds, min_runs=20
    )
    return Cell(rate=stats.throughput, p50=stats.p50, p99=stats.p99, requests=stats.runs)


def measure(
    onnx: Path,
    targets: dict[str, Target],
    floor_url: str,
    image: np.ndarray,
    args: argparse.Namespace,
) -> str:
    session = bare_session(onnx, args.threads, providers_of(args.provider))
    reference = session.run(None, {INPUT: image})[0]

    # Warm-up, and a check that every server computes what the bare session computes.
    for name, target in targets.items():
        got = asyncio.run(answer(target, image))
        np.testing.assert_allclose(got, reference, rtol=1e-3, atol=1e-3, err_msg=name)
        asyncio.run(drive(target, 8, 0.5 if args.quick else 2.0, image))
        log(f"{name}: answers match the bare session; warmed up")

    # Per load and concurrency, each round runs every server once (and, as references over
    # HTTP, a bare session.run loop in this process: batch 1 at c=1, a full batch at c=32),
    # the order flipped every round so that a noisy neighbour hits every side alike. At c=1
    # the floor server is a third reference: the round trip with no server work.
    bare1, bare_full = "bare run, batch 1", f"bare run, batch {args.max_batch}"
    floor = "floor"
    cells: dict[tuple[str, int], list[Cell]] = {}
    warm = 0.3 if args.quick else 1.0
    for protocol in args.protocol:
        names = [n for n, t in targets.items() if t.protocol == protocol]
        for concurrency in args.concurrency:
            extra = {1: [bare1, floor], 32: [bare_full]}.get(concurrency, [])
            lineup = names + (extra if protocol == "http" else [])
            for index in range(args.rounds):
                for name in lineup if index % 2 == 0 else lineup[::-1]:
                    if name in targets or name == floor:
                        target = targets.get(name, Target(floor_url, "floor", "http"))
                        asyncio.run(drive(target, concurrency, warm, image))
                        cell = asyncio.run(drive(target, concurrency, args.duration, image))
                    else:
                        batch = 1 if name == bare1 else args.max_batch
                        cell = bare_cell(session, batch, args.duration / 2)
                    cells.setdefault((name, concurrency), []).append(cell)
                    log(
                        f"{protocol} c={concurrency} round {index + 1}/{args.rounds} {name}: "
                        f"{cell.rate:.1f} items/s, p50 {cell.p50:.2f} ms, p99 {cell.p99:.2f} ms "
                        f"({cell.requests} runs)"
                    )
    return report(cells, targets, args, bare1, bare_full, floor)


if __name__ == "__main__":
    main()
