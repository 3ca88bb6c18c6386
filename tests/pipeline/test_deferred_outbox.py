"""Non-urgent results: an outbox under a deferral policy, on a real Mosquitto.

The carbon intensity comes from a retained MQTT topic; while it is too high
the outbox holds every result (durable in the store) and the urgent sink
sends as before; once it drops, the outbox delivers all of them, in order.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from fogline.errors import ConfigError
from fogline.pipeline import Pipeline, load_spec, plan
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto
from support.digits_pipeline import digits_spec, write_spec


def wait_for(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(condition())


def test_the_outbox_waits_for_clean_power_then_delivers_everything(
    tmp_path: Path, mosquitto: Mosquitto, subscribe, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a dirty grid (retained), a pipeline whose outbox waits for < 200 g/kWh and
    # whose live sink is urgent
    caplog.set_level(logging.INFO, logger="fogline.pipeline")
    publisher = MqttPublisher(mosquitto.url)
    carbon = Topic("site/grid/carbon")
    dirty = json.dumps({"g_per_kwh": 412, "at": time.time()}).encode()  # retained: with `at`
    publisher.publish(MqttMessage(carbon, dirty, retain=True))
    live = subscribe("live/#")
    synced = subscribe("sync/#")
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "cam", "shape": [1, 8, 8], "rate": 100}],
        sinks=[{"type": "mqtt", "name": "live", "url": mosquitto.url, "topic": "live/{source}"}],
        store={"path": "results.db", "sync": True},
        outbox={
            "transport": {"type": "mqtt", "url": mosquitto.url, "topic": "sync/{source}"},
            "defer": {
                "carbon": {"topic": str(carbon), "max_g_per_kwh": 200},
                "check_every_s": 0.1,
            },
        },
    )
    checked = plan(load_spec(write_spec(tmp_path, spec)))
    pipeline = Pipeline(checked)
    thread = threading.Thread(target=pipeline.run, daemon=True)

    # Execute: run while the grid is dirty, then clean it, then stop
    thread.start()
    try:
        assert wait_for(lambda: pipeline.store is not None and pipeline.store.count() >= 40)
        assert live.get(10) is not None  # the urgent path sends meanwhile
        assert pipeline.store is not None
        assert wait_for(lambda: any("412 g/kWh" in r.getMessage() for r in caplog.records))
        early = synced.get(1.0)
        held = pipeline.store.stats().pending
        publisher.publish(MqttMessage(carbon, b"150", retain=True))
        first = synced.get(30)
    finally:
        pipeline.stop()
        thread.join(60)
    stored = pipeline.store.count()
    stats = pipeline.store.stats()
    pipeline.close()
    checked.model.engine.close()
    publisher.publish(MqttMessage(carbon, b"", retain=True))
    publisher.close()
    bodies = [] if first is None else [json.loads(first.payload)]
    while len(bodies) < stored and (message := synced.get(10)) is not None:
        bodies.append(json.loads(message.payload))

    # Assert: nothing left while waiting; then every result, once, in order; the reasons logged
    assert early is None
    assert held >= 40
    assert stats.pending == 0 and stats.dropped == 0
    assert [body["result_id"] for body in bodies] == list(range(1, stored + 1))
    said = [r.getMessage() for r in caplog.records if r.name == "fogline.pipeline"]
    assert any(
        "waiting: carbon intensity 412 g/kWh > 200 (from mqtt topic site/grid/carbon" in line
        for line in said
    ), said
    assert any("allowed: carbon intensity 150 g/kWh <= 200" in line for line in said), said


def test_what_still_waits_at_the_end_stays_in_the_store_for_the_next_run(tmp_path: Path) -> None:
    # Prepare: a file transport and a window the run is never in (an empty power folder
    # shows mains; the window is what waits)
    now = time.localtime()
    closed = f"{(now.tm_hour + 2) % 24:02d}:00-{(now.tm_hour + 3) % 24:02d}:00"
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "cam", "shape": [1, 8, 8], "count": 25}],
        store={"path": "results.db", "sync": True},
        outbox={
            "transport": {"type": "jsonl", "path": "sent.jsonl"},
            "defer": {"windows": [closed], "mains": True, "power_supply": "no-such-folder"},
        },
    )
    checked = plan(load_spec(write_spec(tmp_path, spec)))
    pipeline = Pipeline(checked)

    # Execute
    pipeline.run()
    assert pipeline.store is not None
    pending = pipeline.store.stats().pending
    pipeline.close()
    checked.model.engine.close()

    # Assert: all 25 kept, none sent
    assert pending == 25
    assert not (tmp_path / "sent.jsonl").exists() or not (tmp_path / "sent.jsonl").read_text()


def test_fogline_check_validates_the_defer_section(tmp_path: Path) -> None:
    spec = digits_spec(
        outbox={
            "transport": {"type": "jsonl", "path": "sent.jsonl"},
            "defer": {"carbon": {"topic": "grid/carbon", "max_g_per_kwh": -1}},
        },
    )
    with pytest.raises(ConfigError) as caught:
        load_spec(write_spec(tmp_path, spec))
    assert "outbox.defer.carbon.max_g_per_kwh: Input should be greater than 0, got -1" in str(
        caught.value
    )

    spec["outbox"]["defer"]["carbon"]["max_g_per_kwh"] = 200  # a topic, but no broker
    with pytest.raises(ConfigError, match=r"outbox: defer\.carbon\.topic: give carbon\.url"):
        load_spec(write_spec(tmp_path, spec))


def test_fogline_check_says_what_the_policy_says_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fogline.cli import main

    grid = tmp_path / "grid.json"
    grid.write_text('{"g_per_kwh": 312}')
    spec = digits_spec(
        outbox={
            "transport": {"type": "jsonl", "path": "sent.jsonl"},
            "defer": {"carbon": {"file": "grid.json", "max_g_per_kwh": 200}},
        },
    )

    status = main(["check", str(write_spec(tmp_path, spec))])

    out = capsys.readouterr().out
    assert status == 0, out
    # the console may wrap the long line anywhere, inside the path too
    said = "".join(out.split())
    assert (
        "".join(f"outbox defer waiting: carbon intensity 312 g/kWh > 200 (from {grid}, ".split())
        in said
    )


def test_under_defer_a_full_outbox_keeps_what_it_stores_and_check_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fogline.cli import main

    # Prepare: the same outbox with defer (no policy given), without, and with drop-oldest
    outbox = {"transport": {"type": "jsonl", "path": "sent.jsonl"}, "limit": 36_000}
    deferred = {**outbox, "defer": {"windows": ["22:00-06:00"]}}
    sources = [{"type": "synthetic", "name": "cam", "shape": [1, 8, 8], "rate": 10}]

    for name in ("plain", "deferred", "chosen"):
        (tmp_path / name).mkdir()

    # Execute
    specs = {
        name: load_spec(write_spec(tmp_path / name, digits_spec(sources=sources, outbox=box)))
        for name, box in {
            "plain": outbox,
            "deferred": deferred,
            "chosen": {**deferred, "policy": "drop-oldest"},
        }.items()
    }
    status = main(["check", str(tmp_path / "deferred" / "pipeline.yaml")])
    kept = "".join(capsys.readouterr().out.split())
    chosen = main(["check", str(tmp_path / "chosen" / "pipeline.yaml")])
    dropping = " ".join(capsys.readouterr().out.split())

    # Verify: defer makes the default reject; a chosen policy stays; check says what a wait does
    policies = {name: spec.outbox.policy for name, spec in specs.items() if spec.outbox}
    assert policies == {"plain": "drop-oldest", "deferred": "reject", "chosen": "drop-oldest"}
    assert status == 0 and chosen == 0
    assert "outboxlimit36,000unsent(policyreject:afulloutboxrefusesnewresults," in kept
    assert "at the sources' 10 items/s a wait fills it in 1 h at the soonest" in dropping
    assert "warning: outbox: defer with policy drop-oldest" in dropping
    assert "warning" not in kept
