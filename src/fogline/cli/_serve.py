"""``fogline serve``: a model repository over the Open Inference Protocol (HTTP and gRPC)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import typer

from fogline.cli._app import app, console_err, needs_extra
from fogline.cli._options import device_key_option
from fogline.errors import ConfigError


@app.command()
def serve(
    repository: Path = typer.Option(..., "--repository", help="A Triton-style model repository."),
    http_port: int = typer.Option(8000, "--http-port", min=0, max=65535),
    grpc_port: int = typer.Option(8001, "--grpc-port", min=0, max=65535),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve Prometheus /metrics here (e.g. 8002)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for all)."),
    control: str = typer.Option("none", help="Model control: none, poll or explicit."),
    poll_interval: float = typer.Option(5.0, "--poll-interval", min=0.1),
    load: list[str] = typer.Option([], "--load", help="With --control explicit: load these."),
    no_grpc: bool = typer.Option(False, "--no-grpc", help="HTTP only."),
    threads: int | None = typer.Option(None, min=1, help="Compute threads per model."),
    spin: bool = typer.Option(
        False, "--spin/--no-spin", help="Let ONNX Runtime's idle threads spin (off: they sleep)."
    ),
    timeout: float | None = typer.Option(
        None, min=0.001, help="Seconds a request may take before it is answered with a timeout."
    ),
    tls_cert: Path | None = typer.Option(
        None, "--tls-cert", help="PEM certificate (HTTPS, gRPC TLS)."
    ),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Its PEM private key."),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="A file holding the bearer token every request must carry."
    ),
    cors: list[str] = typer.Option([], "--cors-origin", help="Allow browsers from this origin."),
    device_key: Path | None = device_key_option(
        "The device key file that opens sealed models (default: $FOGLINE_DEVICE_KEY_FILE)."
    ),
    provider: list[str] | None = typer.Option(
        None,
        help="ONNX Runtime execution provider for every model: cpu, cuda, tensorrt or a full "
        "name (repeat, best first). Default: the best this build offers.",
    ),
) -> None:
    """Serve every model of a repository until Ctrl-C (SIGINT/SIGTERM drain in-flight requests)."""
    needs_extra("serve", "starlette", "uvicorn", "grpc", "tritonclient")
    from fogline.serve import CONTROLS, Server, run

    if control not in CONTROLS:
        raise ConfigError(f"--control must be one of {', '.join(CONTROLS)}; got {control!r}")
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: {exc.strerror or exc}") from exc
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty")
    server = Server(
        repository,
        host=host,
        http_port=http_port,
        grpc_port=None if no_grpc else grpc_port,
        metrics_port=metrics_port,
        control=control,
        poll_interval=poll_interval,
        startup=tuple(load),
        threads=threads,
        spin=spin,
        timeout_s=timeout,
        tls_cert=tls_cert,
        tls_key=tls_key,
        token=token,
        cors_origins=tuple(cors),
        device_key=device_key,
        providers=tuple(provider) if provider else None,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        task = asyncio.create_task(server.run())
        while not server._started.is_set() and not task.done():
            await asyncio.sleep(0.05)
        if not task.done():
            ports = server.ports
            scheme = "https" if tls_cert else "http"
            lines = [f"HTTP  {scheme}://{host}:{ports.http}/v2"]
            if ports.metrics is not None:
                lines.append(f"metrics http://{host}:{ports.metrics}/metrics")
            if ports.grpc is not None:
                lines.append(f"gRPC  {host}:{ports.grpc} (inference.GRPCInferenceService)")
            for row in server.manager.index():
                lines.append(f"model {row.name} v{row.version}: {row.state} {row.reason}".rstrip())
            console_err.print("\n".join(lines), highlight=False)
        await task

    run(main())
