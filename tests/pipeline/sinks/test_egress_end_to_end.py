"""The egress policy at the boundary: what a broker's ``#`` and a webhook see during a real run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fogline.pipeline import Pipeline, load_spec, plan
from support.digits_pipeline import write_spec
from support.echo_model import echo_model

ITEMS = 20


def _result(body: dict[str, Any]) -> dict[str, Any]:
    """The result in a delivery: an outbox envelope holds it under ``result``."""
    return body.get("result", body)


def test_a_subscriber_on_hash_and_a_webhook_see_only_the_allowed_fields(
    tmp_path: Path, mosquitto: Any, mqtt_listener: Any, http_endpoint: Any, monkeypatch: Any
) -> None:
    # Prepare: a model whose results carry the raw input ('image') and its mean ('brightness');
    # a live MQTT sink, a webhook, a local JSON lines file and the outbox over MQTT; a policy
    # that lets only the brightness out, hashes the item id and never lets a raw input leave.
    for name in ("FOGLINE_DEVICE_KEY", "FOGLINE_DEVICE_KEY_FILE", "FOGLINE_DEVICE_KEY_COMMAND"):
        monkeypatch.delenv(name, raising=False)
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
    checked = plan(load_spec(write_spec(tmp_path, spec)))

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
    for result in left:
        assert set(result["outputs"]) == {"brightness"}
        assert result["position"] is None  # not allowed: it stays
        assert result["item_id"].startswith("sha256:")  # no device key here: plain SHA-256
    wire = json.dumps([d.body for d in delivered]) + json.dumps(posted)
    pixels = {json.dumps(v) for r in local for row in r["outputs"]["image"][0] for v in row}
    assert not [p for p in pixels if p in wire]  # no pixel of any raw frame went out
    assert "image" not in wire
