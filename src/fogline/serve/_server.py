"""``fogline serve``'s process: the model manager, the HTTP and gRPC endpoints, /metrics.

Concurrency: one asyncio event loop runs everything network-facing (uvicorn
for HTTP, grpc.aio for gRPC, the repository poller); compute happens on the
batchers' and asyncio's worker threads. :meth:`Server.start_in_thread` runs
that loop on a background thread, for tests and for embedding.

The loop is uvloop's and HTTP is parsed by httptools when they are installed
(the ``serve`` extra brings both), else asyncio's own loop and h11: on two
cores, asyncio's selector loop alone spent about a millisecond more per
602 KB request than uvloop's in a server that did nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fogline.errors import ConfigError
from fogline.serve._http import DEFAULT_MAX_BODY, build_app
from fogline.serve._manager import Control, ModelManager

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on uvloop's loop when it is installed (the CLI's and the thread's)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@dataclass
class Ports:
    http: int | None = None
    grpc: int | None = None
    metrics: int | None = None


class Server:
    """A repository served over HTTP (and gRPC when ``grpc_port`` is not None).

    Port 0 picks a free port; :attr:`ports` holds the ones bound once started.
    """

    def __init__(
        self,
        repository: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int | None = 8000,
        grpc_port: int | None = 8001,
        metrics_port: int | None = None,
        control: Control = "none",
        poll_interval: float = 5.0,
        startup: tuple[str, ...] = (),
        max_body: int = DEFAULT_MAX_BODY,
        threads: int | None = None,
        spin: bool = False,
        timeout_s: float | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        token: str | None = None,
        cors_origins: tuple[str, ...] = (),
        device_key: Path | None = None,
        providers: tuple[str, ...] | None = None,
    ) -> None:
        from fogline.security import KeySource, SealedFiles
        from fogline.serve._repository import Repository

        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key (--tls-cert, --tls-key)")
        for path in (tls_cert, tls_key):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file {path}: no such file")
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.token = token
        self.cors_origins = cors_origins

        if not Path(repository).is_dir():
            raise ConfigError(f"--repository {repository}: no such folder")
        self.repository = Repository(Path(repository))
        self.host = host
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.max_body = max_body
        self.manager = ModelManager(
            self.repository,
            control=control,
            poll_interval=poll_interval,
            startup=startup,
            threads=threads,
            spin=spin,
            timeout_s=timeout_s,
            read=SealedFiles(KeySource(file=device_key)),
            providers=providers,
        )
        self.ports = Ports()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._failure: BaseException | None = None

    async def run(self) -> None:
        """Serve until :meth:`stop` is called (or the task is cancelled)."""
        import uvicorn

        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        await self.manager.start()
        tasks: list[asyncio.Task[Any]] = []
        http = None
        grpc_server = None
        metrics_server: Any = None
        try:
            if self.http_port is not None:
                app = build_app(
                    self.manager,
                    max_body=self.max_body,
                    token=self.token,
                    cors_origins=self.cors_origins,
                )
                config = uvicorn.Config(
                    app,
                    host=self.host,
                    port=self.http_port,
                    log_level="warning",
                    lifespan="off",
                    access_log=False,
                    proxy_headers=False,  # nothing reads the client's address; one layer less
                    http="auto",  # httptools when installed, else h11
                    ssl_certfile=None if self.tls_cert is None else str(self.tls_cert),
                    ssl_keyfile=None if self.tls_key is None else str(self.tls_key),
                )
                http = uvicorn.Server(config)
                tasks.append(asyncio.create_task(http.serve()))
                while not http.started:
                    if tasks[0].done():
                        tasks[0].result()
                        raise ConfigError(f"HTTP port {self.http_port}: the server did not start")
                    await asyncio.sleep(0.01)
                self.ports.http = http.servers[0].sockets[0].getsockname()[1]
            if self.grpc_port is not None:
                from fogline.serve._grpc import ServerTLS, start_grpc

                tls = None
                if self.tls_cert is not None and self.tls_key is not None:
                    tls = ServerTLS(self.tls_cert, self.tls_key)
                started = await start_grpc(
                    self.manager, self.host, self.grpc_port, tls=tls, token=self.token
                )
                grpc_server, self.ports.grpc = started
            if self.metrics_port is not None:
                metrics_server = self._start_metrics()
            self._started.set()
            await self._stop.wait()
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            if http is not None:
                http.should_exit = True
            if grpc_server is not None:
                await grpc_server.stop(grace=5)
            for task in tasks:
                with contextlib.suppress(Exception):
                    await task
            await self.manager.close()

    def _start_metrics(self) -> Any:
        from prometheus_client import CollectorRegistry, start_http_server

        from fogline.metrics import EnergyCollector
        from fogline.power import open_meter, runs_on_gpu
        from fogline.serve._metrics import ServerCollector

        registry = CollectorRegistry()
        registry.register(ServerCollector(self.manager))
        # The server's energy, per request: NVML when a served model runs on an NVIDIA GPU
        # (as a pipeline's run does), else this process's share of RAPL where readable, else
        # estimated from CPU time; a GPU metered on the host says "host CPU only".
        devices = [
            loaded.engine.device
            for versions in self.manager.loaded().values()
            for loaded in versions.values()
        ]
        devices += list(self.manager.providers or ())
        gpu = next((device for device in devices if runs_on_gpu(device)), "cpu")
        registry.register(EnergyCollector(open_meter(gpu)))
        try:
            server, _thread = start_http_server(
                self.metrics_port or 0, addr=self.host, registry=registry
            )
        except OSError as exc:
            raise ConfigError(f"metrics port {self.metrics_port}: {exc.strerror or exc}") from exc
        self.ports.metrics = server.server_port
        return server

    def stop(self) -> None:
        """Ask the server to stop (thread-safe)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    # --- on a background thread ---------------------------------------------------------

    def start_in_thread(self, timeout: float = 60.0) -> Server:
        def main() -> None:
            try:
                run(self.run())
            except BaseException as exc:  # reported by start_in_thread
                self._failure = exc
                self._started.set()

        self._thread = threading.Thread(target=main, name="fogline-serve", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise ConfigError("the server did not start in time")
        if self._failure is not None:
            raise self._failure
        return self

    def close(self) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(30)

    def __enter__(self) -> Server:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, coroutine: Any) -> Any:
        """Run a coroutine on the server's loop from another thread (tests, tools)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)
