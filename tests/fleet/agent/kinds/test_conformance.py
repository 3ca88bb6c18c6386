"""Every release kind of the agent against one contract, on real releases of the digits model.

A kind is discovered from ``fogline.fleet.agent.kinds`` (each public module
there holds one), so a new kind is held to this suite the day it is added:
it needs a name the security package knows, a release to check here
(:data:`RELEASES`), and it must answer the health check, the child command
and the metrics reading the way the agent expects.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

import fogline.fleet.agent.kinds as kinds_package
from fogline.errors import ConfigError
from fogline.fleet.agent._telemetry import Scrape
from fogline.fleet.agent.kinds import KINDS, ReleaseKind, check_release, kind_for
from fogline.metrics import (
    END_TO_END,
    FAILURE,
    PIPELINE_ITEMS,
    PIPELINE_STAGE_SECONDS,
    SERVE_REQUEST_SECONDS,
    SERVE_REQUESTS,
    SUCCESS,
)
from fogline.security import KINDS as DOCUMENT_KINDS
from support.fleet_agent import model_release, pipeline_release
from support.fleet_learner import learner_release
from support.serve_repository import make_repository

#: For each kind, a real release of it: builds the folder under the given one, returns its entry.
RELEASES: dict[str, Callable[[Path], Path]] = {
    "model": lambda folder: model_release(folder) / "model.onnx",
    "pipeline": lambda folder: pipeline_release(folder) / "pipeline.yaml",
    "serve": lambda folder: make_repository(folder),
    "learner": lambda folder: learner_release(folder) / "learner.yaml",
}
#: Kinds whose releases hold no model to open (a learner declares what the device trains).
NO_MODEL = {"learner"}

NAMES = sorted(KINDS)


def test_the_agent_runs_exactly_the_kinds_a_release_document_may_name() -> None:
    assert set(KINDS) == set(DOCUMENT_KINDS)
    assert all(kind.name == name for name, kind in KINDS.items())


def test_every_kind_module_holds_one_registered_kind() -> None:
    modules = [m.name for m in pkgutil.iter_modules(kinds_package.__path__) if m.name[0] != "_"]
    found = []
    for name in modules:
        module = importlib.import_module(f"{kinds_package.__name__}.{name}")
        found += [
            cls
            for cls in vars(module).values()
            if inspect.isclass(cls)
            and issubclass(cls, ReleaseKind)
            and cls is not ReleaseKind
            and cls.__module__ == module.__name__
        ]
    assert sorted(cls.name for cls in found) == NAMES == sorted(modules)
    assert {type(kind) for kind in KINDS.values()} == set(found)


def test_an_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown release kind .binary.; one of learner, model"):
        kind_for("binary")


@pytest.mark.parametrize("name", NAMES)
def test_a_release_of_the_kind_passes_its_health_check(name: str, tmp_path: Path) -> None:
    entry = RELEASES[name](tmp_path / "release")

    report = check_release(kind_for(name), entry, latency_budget_ms=10_000)

    assert report.ok, report.reason
    if name in NO_MODEL:
        assert report.models == ()
    else:
        assert report.models and report.latency_ms is not None and report.latency_ms > 0


@pytest.mark.parametrize("name", NAMES)
def test_what_is_not_a_release_of_the_kind_fails_its_check_with_a_reason(
    name: str, tmp_path: Path
) -> None:
    entry = tmp_path / "release.bin"
    entry.write_bytes(b"not a model, not a pipeline, not a repository")

    report = check_release(kind_for(name), entry)

    assert not report.ok and report.reason


@pytest.mark.parametrize("name", NAMES)
def test_the_child_is_fogline_itself_in_the_given_folder(name: str, tmp_path: Path) -> None:
    entry = RELEASES[name](tmp_path / "release")

    spec = kind_for(name).child(entry, cwd=tmp_path / "run")

    if spec is not None:
        assert spec.argv[:3] == (sys.executable, "-m", "fogline")
        assert str(entry) in spec.argv and spec.cwd == tmp_path / "run"
        assert 0 < spec.metrics_port < 65536


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_scrape_measures_nothing(name: str) -> None:
    assert kind_for(name).scrape("") == Scrape()


def test_only_a_bare_model_and_a_learner_run_no_child(tmp_path: Path) -> None:
    runs = {name: kind_for(name).child(tmp_path, cwd=tmp_path) is not None for name in NAMES}
    assert runs == {"learner": False, "model": False, "pipeline": True, "serve": True}


def test_a_serve_child_listens_on_the_port_it_is_given(tmp_path: Path) -> None:
    spec = kind_for("serve").child(tmp_path, cwd=tmp_path, http_port=8123)
    assert spec is not None and spec.http_port == 8123
    assert spec.argv[spec.argv.index("--http-port") + 1] == "8123"


def test_a_pipeline_scrape_reads_items_by_outcome_and_the_end_to_end_latency() -> None:
    registry = CollectorRegistry()
    items = Counter(PIPELINE_ITEMS, "items", ["source", "outcome"], registry=registry)
    items.labels("cam", "processed").inc(7)
    items.labels("cam", "failed").inc(2)
    items.labels("cam", "expired").inc(1)
    items.labels("cam", "produced").inc(10)  # neither done, failed nor dropped
    stages = Histogram(
        PIPELINE_STAGE_SECONDS, "latency", ["stage"], buckets=(0.01, 0.1), registry=registry
    )
    for seconds in (0.005, 0.05, 0.05):
        stages.labels(END_TO_END).observe(seconds)
    stages.labels("model").observe(0.005)  # another stage: not the item's latency

    scrape = kind_for("pipeline").scrape(generate_latest(registry).decode())

    assert (scrape.items, scrape.errors, scrape.drops) == (7.0, 2.0, 1.0)
    assert scrape.buckets == ((0.01, 1.0), (0.1, 3.0), (float("inf"), 3.0))


def test_a_serve_scrape_reads_requests_by_outcome_and_their_latency() -> None:
    registry = CollectorRegistry()
    requests = Counter(SERVE_REQUESTS, "requests", ["model", "outcome"], registry=registry)
    requests.labels("digits", SUCCESS).inc(8)
    requests.labels("digits", FAILURE).inc(2)
    latency = Histogram(
        SERVE_REQUEST_SECONDS, "latency", ["model"], buckets=(0.01,), registry=registry
    )
    latency.labels("digits").observe(0.002)
    latency.labels("other").observe(0.5)  # every model of the server counts

    scrape = kind_for("serve").scrape(generate_latest(registry).decode())

    assert (scrape.items, scrape.errors, scrape.drops) == (8.0, 2.0, 0.0)
    assert scrape.buckets == ((0.01, 1.0), (float("inf"), 2.0))


def test_a_learner_spec_with_a_bad_key_names_it(tmp_path: Path) -> None:
    entry = learner_release(tmp_path / "release", epochs=0) / "learner.yaml"

    report = check_release(kind_for("learner"), entry)

    assert not report.ok and report.reason is not None
    assert "epochs" in report.reason and "greater than or equal to 1" in report.reason


def test_a_learner_spec_with_an_unknown_key_or_a_missing_module_fails(tmp_path: Path) -> None:
    unknown = learner_release(tmp_path / "a", eligibility={"min_battery": 20}) / "learner.yaml"
    missing = learner_release(tmp_path / "b", data="no_such_module:load") / "learner.yaml"

    first = check_release(kind_for("learner"), unknown)
    second = check_release(kind_for("learner"), missing)

    assert not first.ok and "eligibility.min_battery" in (first.reason or "")
    assert not second.ok and "'no_such_module' is not installed" in (second.reason or "")
