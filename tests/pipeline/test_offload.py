"""The offload step against a real ``fogline serve`` holding the digits teacher: the cascade
raises accuracy, a stopped server never stalls an item past its deadline, the circuit opens and
closes again, the budget holds, and ``fogline check`` refuses remotes that do not fit."""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fogline.errors import ConfigError
from fogline.examples import digits_split
from fogline.model import load_engine
from fogline.pipeline import Metrics, OffloadReading, Pipeline, load_spec, plan
from fogline.pipeline._item import Item
from fogline.pipeline.stages import OffloadSpec, build_post
from fogline.pipeline.stages._classify import ClassifySpec
from support.digits_pipeline import LABELS, digits_spec, write_spec
from support.oip_server import Served, garbling_server, served

__all__ = ["served"]  # the fixture, imported for this module


def offload_step(url: str, **keys: Any) -> dict[str, Any]:
    return {"type": "offload", "url": url, "when": "score < 0.9", "timeout_ms": 300, **keys}


def stages(url: str, **keys: Any) -> list[Any]:
    """classify → offload, built as the runner builds them, on the digits model's signature."""
    from fogline.examples import digits_model_path

    signature = load_engine(digits_model_path()).signature
    specs = [
        ClassifySpec(type="classify", labels=LABELS),
        OffloadSpec.model_validate(offload_step(url, **keys)),
    ]
    return build_post(specs, signature)


def items(count: int, start: int = 0) -> list[Item]:
    """Digits eval images through the local model, ready for post-processing."""
    from fogline.examples import digits_model_path

    pixels, labels = digits_split("eval")
    logits = load_engine(digits_model_path()).run({"pixels": pixels})["logits"]
    return [
        Item("digits", i, 0.0, pixels[i % len(pixels)], {"label": str(labels[i % len(pixels)])},
             outputs={"logits": logits[i % len(pixels)]})
        for i in range(start, start + count)
    ]  # fmt: skip


def run(steps: list[Any], batch: list[Item]) -> tuple[list[dict[str, Any]], list[float]]:
    results, waits = [], []
    for item in batch:
        started = item.t0 = time.monotonic()  # captured now: its deadline counts from here
        for step in steps:
            item = step(item)
        waits.append(time.monotonic() - started)
        results.append(item.result)
    return results, waits


def test_the_cascade_raises_accuracy_in_a_running_pipeline(served: Served, tmp_path: Path) -> None:
    # Prepare: all 597 eval images, unsure ones (score < 0.9) to the teacher over gRPC
    post = [
        {"type": "classify", "labels": LABELS},
        offload_step(served.url("grpc"), timeout_ms=2000),
    ]
    spec = digits_spec(postprocess=post, store={"path": str(tmp_path / "r.db")})
    local_spec = digits_spec(store=False)
    # Execute
    with_offload = Pipeline(plan(load_spec(write_spec(tmp_path, spec))))
    snap = with_offload.run()
    alone = Pipeline(plan(load_spec(write_spec(tmp_path, local_spec, "local.yaml")))).run()
    # Assert
    reading = snap.extra["offload"]
    assert isinstance(reading, OffloadReading)
    assert reading.outcomes["offloaded"] > 0 and not set(reading.outcomes) - {"offloaded", "local"}
    assert reading.outcomes["offloaded"] + reading.outcomes["local"] == 597
    assert snap.accuracy is not None and alone.accuracy is not None
    assert snap.accuracy[0] > alone.accuracy[0]  # more correct answers with the teacher's help
    assert with_offload.store is not None
    stored = [dict(r.result.outputs) for r in with_offload.store.query(limit=1000)]
    offloaded = [r for r in stored if r["offloaded"]]
    assert {(r["offload_model"], r["offload_version"]) for r in offloaded} == {
        ("digits-teacher", "1")
    }
    assert all(r["offload_reason"] is None for r in stored)
    # each result names the model that answered it: the teacher's answers are not the local's
    answered = {
        (r.result.model, r.result.model_version) for r in with_offload.store.query(limit=1000)
        if r.result.outputs["offloaded"]
    }  # fmt: skip
    local = {
        r.result.model for r in with_offload.store.query(limit=1000)
        if not r.result.outputs["offloaded"]
    }  # fmt: skip
    assert answered == {("digits-teacher", "1")} and "digits-teacher" not in local
    with_offload.close()


def test_overlapping_calls_keep_the_source_order(served: Served, tmp_path: Path) -> None:
    # Prepare: every item to the teacher, four calls at a time, the raw input sent as is
    step = offload_step(
        served.url("http"), when=None, sample=1.0, max_in_flight=4, send="raw", timeout_ms=20000
    )
    post = [{"type": "classify", "labels": LABELS}, step, {"type": "smooth", "window": 3}]
    spec = digits_spec(postprocess=post, store={"path": str(tmp_path / "r.db")})
    runner = Pipeline(plan(load_spec(write_spec(tmp_path, spec))))
    # Execute
    snap = runner.run()
    # Assert
    assert runner.store is not None
    records = runner.store.query(limit=1000)
    assert [r.result.sequence for r in records] == list(range(597))
    reasons = Counter(r.result.outputs["offload_reason"] for r in records)
    assert reasons == {None: 597}, reasons
    assert snap.accuracy is not None and snap.accuracy[0] == 595  # the teacher's 99.66 %
    runner.close()


def test_a_stopped_server_costs_at_most_the_deadline_then_the_circuit_opens_and_closes(
    served: Served,
) -> None:
    # Prepare: a tight circuit so the test sees it open and probe again
    steps = stages(
        served.url("http"), when="score < 2", timeout_ms=200,
        circuit={"failures": 3, "open_s": 0.3, "max_open_s": 0.3},
    )  # fmt: skip
    offload = steps[-1]
    before, _ = run(steps, items(3))
    # Execute: paused (SIGSTOP) mid-stream, then continued
    served.pause()
    try:
        during, waits = run(steps, items(20, start=3))
    finally:
        served.resume()
    time.sleep(0.35)  # the circuit's back-off: the next item is the probe
    deadline = time.monotonic() + 10
    after: list[dict[str, Any]] = []
    while not after or not after[-1]["offloaded"]:
        assert time.monotonic() < deadline, f"never offloaded again: {after[-3:]}"
        after += run(steps, items(1, start=30))[0]
    # Assert
    assert all(r["offloaded"] for r in before)
    reasons = [r["offload_reason"] for r in during]
    assert reasons[:3] == ["timeout"] * 3 and "circuit_open" in reasons[3:]
    assert max(waits) < 0.2 + 0.1, "an item waited longer than its deadline"
    assert offload.reading().opened >= 1 and offload.circuit.state == "closed"
    assert offload.outcomes["timeout"] >= 3 and offload.outcomes["circuit_open"] >= 1


def test_a_refused_connection_is_counted_and_never_stalls(tmp_path: Path) -> None:
    steps = stages("grpc://127.0.0.1:1/digits-teacher", when="score < 2", circuit={"failures": 4})
    results, waits = run(steps, items(10))
    reasons = [r["offload_reason"] for r in results]
    assert reasons == ["refused"] * 4 + ["circuit_open"] * 6
    assert max(waits) < 0.3


def test_a_killed_and_restarted_server_is_used_again(tmp_path: Path) -> None:
    from support.oip_server import teacher_repository

    server = Served(teacher_repository(tmp_path / "models")).start()
    try:
        steps = stages(server.url("grpc"), when="score < 2", circuit={"failures": 1000})
        assert all(r["offloaded"] for r in run(steps, items(2))[0])
        server.kill()
        gone, waits = run(steps, items(5))
        assert {r["offload_reason"] for r in gone} <= {"refused", "timeout"}
        assert max(waits) < 0.3 + 0.1
        server.start()
        deadline = time.monotonic() + 10
        while not run(steps, items(1))[0][0]["offloaded"]:  # gRPC's reconnect back-off, capped
            assert time.monotonic() < deadline, "not offloaded again after the restart"
            time.sleep(0.05)
    finally:
        server.kill()


def test_the_budget_and_the_in_flight_cap_hold(served: Served) -> None:
    steps = stages(served.url("http"), when=None, sample=1.0, max_per_second=5)
    batch = items(30)
    started = time.monotonic()
    results, _ = run(steps, batch)
    elapsed = time.monotonic() - started
    outcomes = [
        r["offload_reason"] or ("offloaded" if r["offloaded"] else "local") for r in results
    ]
    # The bucket holds a second's worth (5) and refills 5 a second while the items run.
    allowed = 5 + int(5 * elapsed)
    assert elapsed < 5, "too slow to tell a budget from none"
    assert 5 <= outcomes.count("offloaded") <= allowed, (outcomes, elapsed)
    assert outcomes.count("offloaded") + outcomes.count("over_budget") == 30


def test_saturation_and_lateness(served: Served) -> None:
    # Prepare: offload only while the batcher holds 5 or more items
    steps = stages(served.url("http"), when=None, when_saturated=5)
    metrics, depth = Metrics(), [0]
    metrics.watch_queue("batcher", lambda: depth[0])
    steps[-1].bind_metrics(metrics)
    # Execute
    quiet, _ = run(steps, items(2))
    depth[0] = 7
    busy, _ = run(steps, items(2))
    late = items(1)[0]
    late.t0 = time.monotonic() - 1.0  # captured a second ago: its 300 ms are spent
    for step in steps:
        late = step(late)
    # Assert
    assert [r["offloaded"] for r in quiet + busy] == [False, False, True, True]
    assert late.result["offload_reason"] == "late"


def test_a_garbled_answer_is_an_error_and_the_local_result_stays() -> None:
    server = garbling_server(b'{"model_name": "digits-teacher", "outputs": "nope"}')
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/digits-teacher"
        steps = stages(url, when="score < 2")
        batch = items(3)
        local = [
            steps[0](Item(i.source, i.sequence, 0.0, i.data, outputs=i.outputs)).result["label"]
            for i in batch
        ]
        results, _ = run(steps, batch)
    finally:
        server.shutdown()
    assert [r["offload_reason"] for r in results] == ["error"] * 3
    assert [r["label"] for r in results] == local


def test_check_refuses_remotes_that_do_not_fit(served: Served, tmp_path: Path) -> None:
    def check(step: dict[str, Any]) -> str:
        spec = digits_spec(postprocess=[{"type": "classify", "labels": LABELS}, step], store=False)
        with pytest.raises(ConfigError) as caught:
            plan(load_spec(write_spec(tmp_path, spec)))
        return str(caught.value)

    flat = check(offload_step(served.url("http", "flat")))
    assert "postprocess[1] (offload): url:" in flat and "no input 'pixels'" in flat
    missing = check(offload_step(served.url("grpc", "nosuch")))
    assert "postprocess[1] (offload): url:" in missing
    foreign = check(offload_step("http://127.0.0.1:8000/models/teacher"))
    assert "postprocess[1].url:" in foreign and "grpc://HOST:PORT/NAME" in foreign
    unknown = check(offload_step(served.url("http"), when="confidence < 0.5"))
    assert "postprocess[1] (offload): when:" in unknown and "confidence" in unknown
    nothing = check({"type": "offload", "url": served.url("http")})
    assert "postprocess[1]:" in nothing and "nothing would be offloaded" in nothing
    first = digits_spec(postprocess=[offload_step(served.url("http"), when=None, sample=0.1)])
    with pytest.raises(
        ConfigError, match=r"postprocess\[0\] \(offload\): offload needs an earlier"
    ):
        plan(load_spec(write_spec(tmp_path, first)))


def test_join_keeps_the_local_answer_and_adds_the_remote_one(served: Served) -> None:
    steps = stages(served.url("http"), when="score < 2", mode="join", key="teacher")
    results, _ = run(steps, items(4))
    for result in results:
        assert result["offloaded"] and set(result["teacher"]) >= {"label", "score"}
        assert "label" in result and isinstance(result["teacher"]["score"], float)


def test_the_metrics_count_outcomes_for_prometheus(served: Served) -> None:
    from prometheus_client.core import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    steps = stages(served.url("http"), when="score < 2")
    metrics = Metrics()
    steps[-1].bind_metrics(metrics)
    run(steps, items(3))
    registry = CollectorRegistry()
    registry.register(metrics.prometheus_collector("digits"))
    text = generate_latest(registry).decode()
    assert (
        f'fogline_offload_total{{outcome="offloaded",pipeline="digits",remote="{served.url("http")}"}} 3.0'
        in text
    )
    assert "fogline_offload_seconds_count" in text
    assert np.isfinite(steps[-1].reading().latency.total)


def answer_of(label: int) -> bytes:
    """An OIP inference answer from the teacher: logits that say ``label``."""
    logits = [10.0 if i == label else 0.0 for i in range(10)]
    outputs = [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": logits}]
    return json.dumps(
        {"model_name": "digits-teacher", "model_version": "1", "outputs": outputs}
    ).encode()


def test_calls_overlap_while_the_oldest_item_waits_for_its_answer(tmp_path: Path) -> None:
    # Prepare: a remote taking 400 ms a call, 8 calls at a time (20 items/s), items arriving
    # at 20 a second. Each is sent as it comes (a call every ~50 ms); a collector that waits
    # for the oldest call before sending the next items sends them in bursts ~400 ms apart.
    server = garbling_server(answer_of(7), delay_s=0.4)
    url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/digits-teacher"
    step = offload_step(url, when=None, sample=1.0, max_in_flight=8, timeout_ms=3000)
    source = {**digits_spec()["sources"][0], "rate": 20}
    post = [{"type": "classify", "labels": LABELS}, step]
    spec = digits_spec(sources=[source], postprocess=post, store={"path": str(tmp_path / "r.db")})
    runner = Pipeline(plan(load_spec(write_spec(tmp_path, spec))))
    # Execute
    try:
        snap = runner.run(max_items=30)
    finally:
        server.shutdown()
    # Assert: all answered by the remote, in source order, the calls spread out
    assert runner.store is not None
    records = runner.store.query(limit=100)
    assert [r.result.sequence for r in records] == list(range(30))
    assert snap.extra["offload"].outcomes == {"offloaded": 30}
    arrivals = server.RequestHandlerClass.arrivals  # type: ignore[attr-defined]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) == 30 and max(gaps) < 0.2, f"calls held back: gaps {gaps}"
    runner.close()


def test_the_circuit_opens_once_and_lets_one_probe_through() -> None:
    # Prepare: nothing listens; four calls at a time, the circuit opens after two failures
    steps = stages(
        "http://127.0.0.1:1/v2/models/digits-teacher", when="score < 2", max_in_flight=4,
        circuit={"failures": 2, "open_s": 0.2, "max_open_s": 5},
    )  # fmt: skip
    offload = steps[-1]

    def start(batch: list[Item]) -> list[Any]:
        started = []
        for item in batch:
            item.t0 = time.monotonic()
            started.append(offload.start(steps[0](item)))
        return started

    # Execute: four calls in flight, all refused, settled in order
    first = [d.resolve_item().result["offload_reason"] for d in start(items(4))]
    opened, back_off = offload.circuit.opened, offload.circuit.back_off
    time.sleep(0.25)  # the back-off is over: one item probes, the one behind it stays local
    probe, behind = start(items(2, start=4))
    behind_reason = behind.result["offload_reason"]  # decided at once: not sent
    probe_reason = probe.resolve_item().result["offload_reason"]
    # Assert
    assert first == ["refused"] * 4
    assert (opened, back_off) == (1, 0.2), "the calls in flight when it opened counted again"
    assert (probe_reason, behind_reason) == ("refused", "circuit_open")
    assert offload.circuit.back_off == 0.4 and offload.circuit.opened == 1
    assert not offload.circuit.allows(time.monotonic())
