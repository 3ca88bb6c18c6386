"""A carbon-intensity topic on a real Mosquitto: retained values of unknown age, refusals."""

from __future__ import annotations

import json
import time
from pathlib import Path

from fogline.pipeline import CarbonSubscription
from fogline.power import DeferPolicy, Deferral
from fogline.transport.mqtt import MqttMessage, MqttPublisher, MqttUrl, Topic
from support.broker import Mosquitto


def verdict_after_subscribing(url: str, topic: str, tmp_path: Path) -> tuple[bool, str]:
    policy = DeferPolicy(
        carbon={"topic": topic, "max_g_per_kwh": 200}, power_supply=tmp_path / "none"
    )
    deferral = Deferral(policy)
    assert deferral.feed is not None
    subscription = CarbonSubscription(MqttUrl.parse(url), topic, deferral.feed)
    try:
        deadline = time.monotonic() + 30
        while deferral.feed.latest() is None and deferral.feed.error is None:
            assert time.monotonic() < deadline, "no value and no error within 30 s"
            time.sleep(0.05)
        verdict = deferral.check()
    finally:
        subscription.close()
    return verdict.allowed, verdict.reason


def test_a_retained_value_counts_as_fresh_only_with_at_or_an_expiry(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    # Prepare: three retained values, all clean: bare, with `at` (now), with a message expiry
    now = time.time()
    payloads = {
        "bare": (b"150", None),
        "dated": (json.dumps({"g_per_kwh": 150, "at": now}).encode(), None),
        "expiring": (b"150", 3600),
    }
    with MqttPublisher(mosquitto.url) as publisher:
        for name, (payload, expiry) in payloads.items():
            message = MqttMessage(Topic(f"grid/{name}"), payload, retain=True, expiry_s=expiry)
            publisher.publish(message)

        # Execute: a device subscribes to each (as after a restart)
        verdicts = {
            name: verdict_after_subscribing(mosquitto.url, f"grid/{name}", tmp_path)
            for name in payloads
        }
        for name in payloads:
            publisher.publish(MqttMessage(Topic(f"grid/{name}"), b"", retain=True))

    # Verify: the bare retained value has no known age, so the default (wait) holds
    allowed, reason = verdicts["bare"]
    assert not allowed
    assert "150 g/kWh has no known age" in reason and "retained message without `at`" in reason
    assert verdicts["dated"][0], verdicts["dated"][1]
    assert verdicts["expiring"][0], verdicts["expiring"][1]


def test_a_refusal_by_the_broker_is_the_reason(tmp_path: Path) -> None:
    # Prepare: a broker that lets no anonymous client in (a refusal no retry can fix, as an
    # ACL's: Mosquitto 2.0.11, tried, let a subscription its ACL denies pass, silent)
    broker = Mosquitto(tmp_path / "mosquitto", extra_config=["allow_anonymous false"])
    with broker:
        # Execute
        allowed, reason = verdict_after_subscribing(broker.url, "grid/carbon", tmp_path)

    # Verify
    assert not allowed
    assert reason.startswith("waiting: no carbon intensity yet from mqtt topic grid/carbon (")
    assert "refused the connection" in reason
