"""The egress policy at the boundary: what a broker's ``#`` and a webhook see during a real run."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from fogline.cluster import Dispatcher
from fogline.pipeline import Pipeline, load_spec, plan
from fogline.security import KeySource, init_device_key, read_key_file
from fogline.security._policy import HASH_PURPOSE
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.digits_pipeline import write_spec
from support.echo_model import echo_model
from support.fleet_controller import wait_for

ITEMS = 20


def _result(body: dict[str, Any]) -> dict[str, Any]:
    """The result in a delivery: an outbox envelope holds it under ``result``."""
    return body.get("result", body)


def _no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FOGLINE_DEVICE_KEY", "FOGLINE_DEVICE_KEY_FILE", "FOGLINE_DEVICE_KEY_COMMAND"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("keyed", [False, True], ids=["no-device-key", "device-key-file"])
def test_a_subscriber_on_hash_and_a_webhook_see_only_the_allowed_fields(
    tmp_path: Path,
    mosquitto: Any,
    mqtt_listener: Any,
    http_endpoint: Any,
    monkeypatch: pytest.MonkeyPatch,
    keyed: bool,
) -> None:
    # Prepare: a model whose results carry the raw input ('image') and its mean ('brightness');
    # a live MQTT sink, a webhook, a local JSON lines file and the outbox over MQTT; a policy
    # that lets only the brightness out, hashes the item id and never lets a raw input leave.
    # The device key, if any, is given as `fogline run --device-key` gives it: a key file.
    _no_key_in_the_environment(monkeypatch)
    key_file = tmp_path / "device.key" if keyed else None
    if key_file is not None:
        init_device_key(key_file)
    everything = mqtt_listener("#")
    spec = {
        "name": "echo",
        "sources": [{"type": "synthetic", "name": "cam", "shape": [1, 8, 8], "count": ITEMS}],
        "model": {"path": str(echo_model(tmp_path / "echo.onnx"))},
        "sinks": [
            {"type": "jsonl", "path": "local.jsonl"},
            {"type": "mqtt", "url": mosquitto.url, "topic": "site/{source}/results"},
            {"type": "http", "url": http_endpoint.url},
        ],
        "store": {"path": "results.db", "sync": True},
        "outbox": {"transport": {"type": "mqtt", "url": mosquitto.url}},
        "privacy": {
            "fields": {"allow": ["brightness", "item_id"], "hash": ["item_id"]},
            "raw": "never",
        },
    }
    checked = plan(load_spec(write_spec(tmp_path, spec)), keys=KeySource(file=key_file))

    # Execute
    pipeline = Pipeline(checked)
    pipeline.run()
    pipeline.close()
    checked.model.engine.close()
    delivered = everything.wait_for(2 * ITEMS)  # the live sink's and the outbox's messages

    # Assert: the device kept everything; what left holds the allowed fields and nothing raw
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert len(local) == ITEMS and all("image" in r["outputs"] for r in local)
    posted = [r for d in http_endpoint.deliveries for r in d.body]
    left = [_result(d.body) for d in delivered] + posted
    assert len(delivered) == 2 * ITEMS and len(posted) == ITEMS
    assert {d.where.split("/")[-1] for d in delivered} == {"results", "outbox"}
    ids = {r["item_id"] for r in local}
    if key_file is None:  # plain SHA-256 of the id, which anyone can recompute
        hashed = {"sha256:" + hashlib.sha256(i.encode()).hexdigest() for i in ids}
    else:  # HMAC-SHA256 under the hash key derived from the device key in the file
        hash_key = read_key_file(key_file).derive(HASH_PURPOSE)
        hashed = {
            "hmac-sha256:" + hmac.new(hash_key, i.encode(), hashlib.sha256).hexdigest() for i in ids
        }
    for result in left:
        assert set(result["outputs"]) == {"brightness"}
        assert result["position"] is None  # not allowed: it stays
    assert {r["item_id"] for r in left} == hashed
    wire = json.dumps([d.body for d in delivered]) + json.dumps(posted)
    pixels = {json.dumps(v) for r in local for row in r["outputs"]["image"][0] for v in row}
    assert not [p for p in pixels if p in wire]  # no pixel of any raw frame went out
    assert "image" not in wire


def test_a_cluster_node_says_done_with_only_the_allowed_fields(
    tmp_path: Path, mosquitto: Any, mqtt_listener: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the echo model as one node of a cluster (an mqtt source with share:), fed by a
    # real dispatcher; its done messages carry each result's outputs over the broker.
    _no_key_in_the_environment(monkeypatch)
    everything = mqtt_listener("#")
    dispatcher = Dispatcher(mosquitto.url, "cams", "cams/in").start()
    spec = {
        "name": "echo-node",
        "sources": [
            {"type": "mqtt", "url": mosquitto.url, "topic": "cams/in", "share": "cams",
             "node": "a", "shape": [1, 8, 8]}
        ],
        "model": {"path": str(echo_model(tmp_path / "echo.onnx"))},
        "sinks": [{"type": "jsonl", "path": "local.jsonl"}],
        "store": {"path": "results.db"},
        "privacy": {"fields": {"allow": ["brightness"]}, "raw": "never"},
    }  # fmt: skip
    checked = plan(load_spec(write_spec(tmp_path, spec)))
    pipeline = Pipeline(checked)
    run = threading.Thread(target=pipeline.run, daemon=True)
    try:
        assert dispatcher.wait_ready(10)
        run.start()

        # Execute: ITEMS frames of distinct pixels reach the node through the dispatcher
        frames = [[(n * 64 + p) / 4096 for p in range(64)] for n in range(ITEMS)]
        with MqttPublisher(mosquitto.url) as publisher:
            publisher.publish(
                *(
                    MqttMessage(Topic("cams/in"), json.dumps({"id": f"f-{n}", "data": f}).encode())
                    for n, f in enumerate(frames)
                )
            )
        wait_for("every item's done", lambda: len(_done(everything)) >= ITEMS, 20)
        done = _done(everything)
    finally:
        pipeline.stop()
        run.join(10)
        pipeline.close()
        checked.model.engine.close()
        dispatcher.close()

    # Assert: the node kept everything; each done message it sent holds only the brightness
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert len(local) == ITEMS and all("image" in r["outputs"] for r in local)
    processed = [d.body for d in done if d.body.get("outcome") == "processed"]
    assert sorted(b["id"] for b in processed) == sorted(f"f-{n}" for n in range(ITEMS))
    assert all(set(b["result"]) == {"brightness"} for b in processed)
    assert "image" not in json.dumps([d.body for d in done])


def _done(listener: Any) -> list[Any]:
    return [d for d in list(listener.deliveries) if "/done/" in d.where]
