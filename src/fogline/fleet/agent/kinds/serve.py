"""The ``serve`` kind: a Triton-style model repository, run as ``python -m fogline serve``.

The health check opens every served version of every model in the
repository; the child is ``fogline serve --repository <entry> --http-port H
--metrics-port P --no-grpc``, and its metrics are the server's request
counter and latency histogram.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar

from fogline.errors import ConfigError
from fogline.fleet.agent._supervisor import ChildSpec, free_port
from fogline.fleet.agent._telemetry import Scrape
from fogline.fleet.agent.kinds._kind import ReleaseKind
from fogline.fleet.agent.kinds._scrape import Series, read_scrape
from fogline.metrics import FAILURE, SERVE_REQUEST_SECONDS, SERVE_REQUESTS, SUCCESS
from fogline.model import Engine, ModelReader, open_model

SERIES = Series(
    SERVE_REQUESTS,
    items=(SUCCESS,),
    errors=(FAILURE,),
    drops=(),
    histogram=SERVE_REQUEST_SECONDS,
)


def serve_child(
    repository: Path,
    *,
    cwd: Path,
    http_port: int | None = None,
    metrics_port: int | None = None,
    host: str = "127.0.0.1",
) -> ChildSpec:
    """``fogline serve`` of a model repository over HTTP (gRPC off), with Prometheus metrics.

    >>> spec = serve_child(Path("/dev/a"), cwd=Path("/tmp"), http_port=8000, metrics_port=9100)
    >>> spec.argv[3:6], spec.http_port
    (('serve', '--repository', '/dev/a'), 8000)
    """
    http = http_port or free_port()
    port = metrics_port or free_port()
    argv = (sys.executable, "-m", "fogline", "serve", "--repository", str(repository))
    options = ("--host", host, "--http-port", str(http), "--metrics-port", str(port), "--no-grpc")
    return ChildSpec((*argv, *options), cwd, port, http)


class ServeKind(ReleaseKind):
    """A model repository: every served version is checked, ``fogline serve`` serves them.

    >>> text = '''# TYPE fogline_serve_requests counter
    ... fogline_serve_requests_total{model="m",version="1",outcome="success"} 8
    ... fogline_serve_requests_total{model="m",version="1",outcome="failure"} 2
    ... '''
    >>> ServeKind().scrape(text).items, ServeKind().scrape(text).errors
    (8.0, 2.0)
    """

    name: ClassVar[str] = "serve"

    def open_engines(
        self, entry: Path, read: ModelReader | None = None
    ) -> list[tuple[str, Engine]]:
        from fogline.serve import Repository  # loaded when a release needs it

        repository = Repository(entry)
        problems = repository.problems()
        if problems:
            name, why = sorted(problems.items())[0]
            raise ConfigError(f"{entry}: model {name!r} cannot be served: {why}")
        engines: list[tuple[str, Engine]] = []
        try:
            for name in repository.model_names():
                for version, path in repository.versions(name).items():
                    engines.append((f"{name} {version}", open_model(path, read=read).engine))
        except BaseException:
            for _, engine in engines:
                engine.close()
            raise
        if not engines:
            raise ConfigError(f"{entry}: the repository holds no model")
        return engines

    def child(self, entry: Path, *, cwd: Path, http_port: int | None = None) -> ChildSpec:
        return serve_child(entry, cwd=cwd, http_port=http_port)

    def scrape(self, text: str) -> Scrape:
        return read_scrape(text, SERIES)
