"""The ``pipeline`` kind: a pipeline YAML, run as ``python -m fogline run``.

The health check opens the pipeline's model the way the pipeline would
(``load_spec`` + ``plan``); the child is ``fogline run <entry> --no-live
--output-dir <cwd> --metrics-port P``, and its metrics are the pipeline's
item counter and end-to-end latency histogram, and the series of a pipeline
that monitors its model (drift, late labels, live accuracy, captures).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

from fogline.fleet.agent._monitoring import read_monitoring
from fogline.fleet.agent._supervisor import ChildSpec, free_port
from fogline.fleet.agent._telemetry import Scrape
from fogline.fleet.agent.kinds._kind import ReleaseKind
from fogline.fleet.agent.kinds._scrape import Series, read_scrape
from fogline.metrics import END_TO_END, PIPELINE_ITEMS, PIPELINE_STAGE_SECONDS
from fogline.model import Engine, ModelReader

SERIES = Series(
    PIPELINE_ITEMS,
    items=("processed",),
    errors=("errors", "failed"),
    drops=("dropped", "expired"),
    histogram=PIPELINE_STAGE_SECONDS,
    where=("stage", END_TO_END),
)


def pipeline_child(entry: Path, *, cwd: Path, metrics_port: int | None = None) -> ChildSpec:
    """``fogline run`` of a pipeline YAML, with Prometheus metrics on ``metrics_port``.

    The release folder is read-only: relative outputs (the store, files) go to ``cwd``.

    >>> spec = pipeline_child(Path("/dev/a/p.yaml"), cwd=Path("/tmp"), metrics_port=9100)
    >>> spec.argv[1:5]
    ('-m', 'fogline', 'run', '/dev/a/p.yaml')
    """
    port = metrics_port or free_port()
    argv = (
        sys.executable,
        "-m",
        "fogline",
        "run",
        str(entry),
        "--no-live",
        "--output-dir",
        str(cwd),
    )
    return ChildSpec((*argv, "--metrics-port", str(port)), cwd, port)


class PipelineKind(ReleaseKind):
    """A pipeline: its model is checked, ``fogline run`` runs it, its item counter is read.

    >>> PipelineKind().scrape('fogline_pipeline_items_total{outcome="processed"} 3').items
    3.0
    """

    name: ClassVar[str] = "pipeline"

    def open_engines(
        self, entry: Path, read: ModelReader | None = None
    ) -> list[tuple[str, Engine]]:
        from fogline.pipeline import load_spec, plan  # loaded when a release needs it

        checked = plan(load_spec(entry), read=read)
        return [(f"{checked.model.name} {checked.model.version}", checked.model.engine)]

    def child(self, entry: Path, *, cwd: Path, http_port: int | None = None) -> ChildSpec:
        return pipeline_child(entry, cwd=cwd)

    def scrape(self, text: str) -> Scrape:
        return replace(read_scrape(text, SERIES), monitor=read_monitoring(text))
