"""``read_status`` returns while many nodes keep refreshing their presence.

Real Mosquitto. Twelve retained presences stand for twelve nodes, and one
publisher refreshes a presence every 20 ms, as many nodes refreshing every
second do together: there is never a quiet gap of 0.3 s, yet the status is
read at once (it stops at the first live message, and is capped by
``timeout``).
"""

from __future__ import annotations

import threading
import time

from fogline.cluster import ClusterTopics, Presence, read_status
from fogline.transport.mqtt import MqttMessage, MqttPublisher
from support.broker import Mosquitto


def _presence(topics: ClusterTopics, name: str) -> MqttMessage:
    body = Presence(
        name, "online", 2, took=0, finished=0, in_flight=0, lag_ms=None, at=time.time()
    ).payload()
    return MqttMessage(topics.presence(name), body, 1, True)


def test_read_status_returns_while_nodes_refresh_all_the_time(mosquitto: Mosquitto):
    # Prepare: 12 retained presences and a publisher that never leaves a quiet gap
    topics = ClusterTopics("g")
    names = [f"n{i:02d}" for i in range(12)]
    stop = threading.Event()
    with MqttPublisher(mosquitto.url) as publisher:
        publisher.publish(*(_presence(topics, n) for n in names))

        def refresh() -> None:
            while not stop.wait(0.02):
                publisher.publish(_presence(topics, names[0]))

        refresher = threading.Thread(target=refresh, daemon=True)
        refresher.start()
        try:
            # Execute: read the status while the refreshes go on
            result: dict[str, object] = {}

            def read() -> None:
                started = time.monotonic()
                result["status"] = read_status(mosquitto.url, "g", timeout=3.0)
                result["seconds"] = time.monotonic() - started

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            reader.join(8)
        finally:
            stop.set()
            refresher.join()

    # Assert: it returned well within its timeout, with every node
    assert not reader.is_alive(), "read_status never returned"
    status = result["status"]
    assert [n.node for n in status.nodes] == names  # type: ignore[attr-defined]
    assert result["seconds"] < 2.5  # type: ignore[operator]
