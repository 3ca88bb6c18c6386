"""A whole pipeline talking to a real Mosquitto: an MQTT sink, the outbox over MQTT, a broker outage."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from fogline.pipeline import Pipeline, load_spec, plan
from support.broker import Mosquitto
from support.digits_pipeline import digits_spec, write_spec


def collect(subscriber, until_count: int, timeout: float = 30.0, seen=None) -> list[dict]:  # type: ignore[no-untyped-def]
    """Messages until ``until_count`` distinct ones (by key, when they carry one) have come."""
    bodies: list[dict] = []
    keys = set() if seen is None else seen
    deadline = time.monotonic() + timeout
    while len(keys) < until_count and time.monotonic() < deadline:
        message = subscriber.get(0.1)
        if message is not None:
            body = {"topic": str(message.topic), **json.loads(message.payload)}
            bodies.append(body)
            keys.add(body.get("key", len(bodies)))
    return bodies


def test_results_are_published_and_the_outbox_survives_a_broker_outage(
    tmp_path: Path, mosquitto: Mosquitto, subscribe
) -> None:
    # Prepare: unsure digits go to an MQTT alerts topic; every result is synced over MQTT
    alerts = subscribe("alerts/#")
    outbox = subscribe("fogline/+/results", client_id="cloud", session_expiry=300)
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "cam", "shape": [1, 8, 8], "rate": 200}],
        rules=[{"name": "unsure", "when": "not confident", "then": ["alerts"]}],
        sinks=[
            {"type": "mqtt", "name": "alerts", "url": mosquitto.url, "topic": "alerts/{source}"}
        ],
        store={"path": "results.db", "sync": True},
        outbox={
            "transport": {
                "type": "mqtt",
                "url": mosquitto.url,
                "topic": "fogline/{source}/results",
                "client_id": "device-1",
            },
            "retry_initial_s": 0.05,
            "retry_max_s": 0.5,
        },
    )
    checked = plan(load_spec(write_spec(tmp_path, spec)))
    pipeline = Pipeline(checked)
    thread = threading.Thread(target=pipeline.run, daemon=True)

    # Execute: run, take the broker away for two seconds, bring it back, stop
    thread.start()
    seen: set[str] = set()
    first = collect(outbox, 50, seen=seen)
    mosquitto.stop()
    time.sleep(2.0)
    assert pipeline.store is not None
    pending_while_down = pipeline.store.stats().pending
    mosquitto.start()
    time.sleep(1.0)
    pipeline.stop()
    thread.join(60)
    stored = pipeline.store.count()
    stats = pipeline.store.stats()
    pipeline.close()
    checked.model.engine.close()
    rest = collect(outbox, stored, timeout=30, seen=seen)

    # Assert: the outbox held everything while the broker was away, then delivered it in order
    assert len(seen) >= 50
    assert pending_while_down > 100  # 2 s at 200 items/s queued up, none dropped
    assert stats.pending == 0 and stats.dropped == 0
    by_key = {}
    for body in first + rest:
        by_key.setdefault(body["key"], body)
    assert len(by_key) == stored
    ids = [body["result_id"] for body in by_key.values()]
    assert ids == sorted(ids)
    assert sorted(ids) == list(range(1, stored + 1))
    assert all(
        body["result"]["position"] == f"cam#{body['result']['sequence']}"
        for body in by_key.values()
    )
    # the alert sink got unsure results on their source's topic (none while the broker was away
    # is allowed: a sink is best effort, the outbox is the guaranteed path)
    for body in collect(alerts, 1, timeout=2):
        assert body["topic"] == "alerts/cam"
        assert body["position"] == f"cam#{body['sequence']}"
        assert body["outputs"]["confident"] is False
