"""``dispatch: broker``: a node holds at most ``window`` items; the broker keeps the rest.

Real Mosquitto. 60 items are published at once to a node whose queue holds
its window: before, paho acknowledged each message on receipt and the node
dropped what did not fit its queue; now it acknowledges a message once its
item is settled and a full queue holds the rest at the broker.
"""

from __future__ import annotations

import json
import threading
import time

from fogline.cluster import ClusterNode
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto
from support.fleet_controller import wait_for


def test_a_broker_node_holds_its_window_and_loses_nothing(mosquitto: Mosquitto):
    # Prepare: a broker-dispatch node with window 2 and a queue of 4
    node = ClusterNode(
        mosquitto.url, "g", node="a", window=2, dispatch="broker", topic="in", maxsize=4
    ).start()
    sent = [f"i-{n}" for n in range(60)]
    try:
        assert node.wait_subscribed(10)

        # Execute: 60 items at once; then take and settle them one by one
        with MqttPublisher(mosquitto.url) as publisher:
            publisher.publish(
                *(MqttMessage(Topic("in"), json.dumps({"id": i}).encode()) for i in sent)
            )
        wait_for("the first window", lambda: node._queue.qsize() == 2, 10)
        got, most = [], 0
        while len(got) < len(sent):
            work = node.get(timeout=10)
            assert work is not None, f"only {len(got)} of {len(sent)} arrived"
            most = max(most, node._queue.qsize() + 1)
            id_ = json.loads(work.payload)["id"]
            node.received(id_, work)
            node.settled([id_], "processed")
            got.append(id_)
    finally:
        node.close()

    # Assert: every item once, never more than the window held by the node
    assert sorted(got) == sorted(sent)
    assert most <= 2
    assert node.took == node.finished == len(sent)


def test_a_broker_node_with_a_backlog_closes_at_once(mosquitto: Mosquitto):
    # Prepare: a broker-dispatch node, window 2, a backlog of 30 items at the broker
    node = ClusterNode(mosquitto.url, "g", node="a", window=2, dispatch="broker", topic="in")
    node.start()
    try:
        assert node.wait_subscribed(10)
        with MqttPublisher(mosquitto.url) as publisher:
            publisher.publish(
                *(MqttMessage(Topic("in"), json.dumps({"id": n}).encode()) for n in range(30))
            )
        for _ in range(4):  # take and settle a few, as a pipeline does, then stop reading
            work = node.get(timeout=10)
            assert work is not None
            id_ = str(json.loads(work.payload)["id"])
            node.received(id_, work)
            node.settled([id_], "processed")
        # Mosquitto 2.0.11 sends one more per ack: the full queue now holds paho's thread
        wait_for("a full queue", lambda: node._queue.qsize() == 2, 10)

        # Execute: stop the node (as `fogline run` does on Ctrl-C) while paho's thread waits
        closing = threading.Thread(target=node.close, daemon=True)
        started = time.monotonic()
        closing.start()
        closing.join(5)

        # Assert: close() returned at once; what it did not settle it did not take
        assert not closing.is_alive(), "close() hung on paho's thread"
        assert time.monotonic() - started < 3
        assert node.took == node.finished == 4
        assert node.get(timeout=0) is None  # the queue was drained, its items unacknowledged
    finally:
        node.close()
