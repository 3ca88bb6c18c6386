"""The credit dispatcher against a real Mosquitto, with nodes run in this process.

Each node is a :class:`ClusterNode` and a thread that "processes" an item by
sleeping, then settles it, as a pipeline's store writer does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fogline.cli import main
from fogline.cluster import ClusterNode, Dispatcher, read_status
from fogline.errors import ConfigError
from fogline.transport.mqtt import MqttMessage, MqttPublisher, MqttSubscriber, Topic
from support.broker import Mosquitto
from support.cluster import Worker
from support.fleet_controller import wait_for

TOPIC = "line/in"


def publish(url: str, ids: Iterator[str] | list[str]) -> None:
    with MqttPublisher(url) as publisher:
        for id_ in ids:
            body = json.dumps({"id": id_, "data": [1.0]}).encode()
            publisher.publish(MqttMessage(Topic(TOPIC), body))


@pytest.fixture
def url(mosquitto: Mosquitto) -> str:
    return mosquitto.url


def test_a_fast_node_takes_more_than_a_slow_one_and_results_keep_their_order(url: str):
    # Prepare: the items wait at the broker before any node joins, so both nodes stay busy
    # and the split follows their speed, not the producer's pace. One node is 25x slower:
    # on a busy CI machine each item's overhead (ms) must not even out the split.
    results = MqttSubscriber(url, "line/results", maxsize=10_000)
    assert results.wait_subscribed(10)
    ids = [f"i{n}" for n in range(300)]
    with Dispatcher(url, "g", TOPIC, results="line/results", ordered=True) as dispatcher:
        assert dispatcher.wait_ready(10)
        publish(url, ids)

        # Execute
        fast, slow = Worker(url, "fast", 0.002).start(), Worker(url, "slow", 0.05).start()
        wait_for("every item done", lambda: dispatcher.stats.completed == len(ids), 30)

        # Assert: each item processed once, most by the fast node; results in producer order
        stats = dispatcher.stats
    fast.close()
    slow.close()
    assert sorted(fast.processed + slow.processed) == sorted(ids)
    assert len(fast.processed) > 2 * len(slow.processed) > 0
    assert stats.duplicates == 0 and stats.redispatched == 0 and stats.queued == 0
    out = []
    while len(out) < len(ids) and (message := results.get(5)) is not None:
        out.append(json.loads(message.payload))
    results.close()
    assert [o["id"] for o in out] == ids
    assert not any(o["late"] for o in out)
    assert {o["result"]["by"] for o in out} == {"fast", "slow"}


def test_a_node_that_leaves_has_its_items_finished_by_another_and_status_shows_it(url: str):
    # Prepare: a node that takes items and never settles them, and a working one
    stuck = ClusterNode(url, "g", node="stuck", window=2).start()
    assert stuck.wait_subscribed(10)
    with Dispatcher(url, "g", TOPIC) as dispatcher:
        assert dispatcher.wait_ready(10)
        wait_for("the stuck node", lambda: "stuck" in dispatcher.nodes, 10)
        publish(url, ["a", "b"])
        wait_for("the stuck node took both", lambda: stuck.in_flight == 2, 10)

        # Execute: it leaves without settling; a working node joins
        stuck.close()
        worker = Worker(url, "worker", 0.001).start()
        wait_for("both items done", lambda: dispatcher.stats.completed == 2, 15)
        statuses = []

        def refreshed() -> bool:  # presence is published again every second
            statuses.append(read_status(url, "g"))
            seen = statuses[-1]
            done = seen.dispatcher is not None and seen.dispatcher.completed == 2
            return done and any(n.node == "worker" and n.finished == 2 for n in seen.nodes)

        wait_for("the worker's presence and the dispatcher's stats to say so", refreshed, 10)
        status = statuses[-1]
    worker.close()

    # Assert
    assert sorted(worker.processed) == ["a", "b"]
    assert dispatcher.stats.redispatched == 2
    nodes = {n.node: n for n in status.nodes}
    assert nodes["stuck"].state == "offline" and nodes["stuck"].took == 2
    assert nodes["worker"].state == "online" and nodes["worker"].finished == 2
    assert status.dispatcher is not None and status.dispatcher.completed == 2


def test_an_id_done_already_is_acknowledged_not_processed_again_and_counted(
    url: str, capsys: pytest.CaptureFixture[str]
):
    worker = Worker(url, "w", 0.001).start()
    with Dispatcher(url, "g", TOPIC) as dispatcher:
        assert dispatcher.wait_ready(10)
        publish(url, ["a"])
        wait_for("a done", lambda: dispatcher.stats.completed == 1, 10)
        publish(url, ["a", "b"])  # a producer that reuses an id
        wait_for("b done", lambda: dispatcher.stats.completed == 2, 10)
        stats = dispatcher.stats
    worker.close()
    assert worker.processed == ["a", "b"] and stats.duplicates == stats.repeated == 1
    # `fogline cluster status` says so, from the stats the dispatcher left retained
    assert main(["cluster", "status", "--broker", url, "--group", "g"]) == 0
    assert "repeated 1: ids done already, not processed again" in capsys.readouterr().out


def test_the_dispatcher_refuses_what_cannot_work(url: str):
    with pytest.raises(ConfigError, match="one MQTT topic level"):
        Dispatcher(url, "a/b", TOPIC)
    with pytest.raises(ConfigError, match="no \\$share"):
        Dispatcher(url, "g", "$share/x/in")
    with pytest.raises(ConfigError, match="--ordered needs --results"):
        Dispatcher(url, "g", TOPIC, ordered=True)


def test_status_of_a_group_nobody_joined_is_empty(url: str, tmp_path: Path):
    status = read_status(url, "empty")
    assert status.nodes == () and status.dispatcher is None
