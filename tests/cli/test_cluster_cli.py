"""``fogline cluster status | forget | feed | dispatch`` against a real Mosquitto; bad input exits 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from fogline.cli import main
from fogline.cluster import ClusterNode, Dispatcher, read_status
from fogline.transport.mqtt import MqttMessage, MqttPublisher, MqttSubscriber, Topic
from support.broker import Mosquitto
from support.cluster import Worker
from support.fleet_controller import wait_for


def test_status_lists_the_nodes_and_forget_clears_an_offline_one(
    mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
):
    # Prepare: one node that stays, one that left
    url = mosquitto.url
    left = ClusterNode(url, "line", node="left").start()
    assert left.wait_subscribed(10)
    left.close()
    with ClusterNode(url, "line", node="stays", device="dev-7") as stays:
        assert stays.wait_subscribed(10)
        wait_for("both presences", lambda: len(read_status(url, "line").nodes) == 2, 10)

        # Execute / Assert: the table, the JSON, then forget the one that left
        assert main(["cluster", "status", "--broker", url, "--group", "line"]) == 0
        table = capsys.readouterr().out
        assert "left" in table and "offline" in table and "dev-7" in table
        assert "no dispatcher has run for this group" in table
        assert main(["cluster", "status", "--broker", url, "--group", "line", "--json"]) == 0
        body = json.loads(capsys.readouterr().out)
        assert {n["node"]: n["state"] for n in body["nodes"]} == {
            "left": "offline",
            "stays": "online",
        }
        assert main(["cluster", "forget", "--broker", url, "--group", "line", "stays"]) == 2
        assert "not offline" in capsys.readouterr().err
        assert main(["cluster", "forget", "--broker", url, "--group", "line"]) == 0
        assert "forgot 1 node(s) of group line: left" in capsys.readouterr().out
        assert [n.node for n in read_status(url, "line").nodes] == ["stays"]


def test_feed_publishes_items_with_ids_and_labels_new_ids_each_run(
    mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
):
    url = mosquitto.url
    args = ["--broker", url, "--topic", "digits/in", "--data", "fogline.examples:digits_stream"]
    args += ["--rate", "0", "--count", "3"]
    with MqttSubscriber(url, "digits/in", maxsize=100) as received:
        assert received.wait_subscribed(10)
        for more in ([], [], ["--id-prefix", "item"]):  # twice by default, then a fixed prefix
            assert main(["cluster", "feed", *args, *more]) == 0
        bodies = []
        while len(bodies) < 9 and (message := received.get(5)) is not None:
            bodies.append(json.loads(message.payload))
    ids = [b["id"] for b in bodies]
    first, second = ids[0].rsplit("-", 1)[0], ids[3].rsplit("-", 1)[0]
    assert first != second and first.startswith("feed-") and second.startswith("feed-")
    assert ids == [f"{p}-{n}" for p in (first, second, "item") for n in range(3)]
    assert len(bodies[0]["data"]) == 64 and isinstance(bodies[0]["label"], str)
    assert "published 3 item(s) to digits/in in" in capsys.readouterr().err
    assert main(["cluster", "feed", *args, "--data", "no.such:data"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --data: no.such:data: cannot import")


def test_a_second_dispatcher_for_a_group_is_refused(
    mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
):
    with Dispatcher(mosquitto.url, "line", "line/in") as first:
        assert first.wait_ready(10)
        wait_for("its stats", lambda: read_status(mosquitto.url, "line").dispatcher is not None)
        args = ["--broker", mosquitto.url, "--group", "line", "--topic", "line/in"]
        assert main(["cluster", "dispatch", *args]) == 2
    assert "a dispatcher already runs for group line" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["status", "--group", "a/b"], "a cluster group is one MQTT topic level"),
        (["dispatch", "--group", "g", "--topic", "in", "--ordered"], "--ordered needs --results"),
        (["dispatch", "--group", "", "--topic", "in"], "one MQTT topic level"),
        (["feed", "--topic", "a/+", "--data", "fogline.examples:digits_eval"], "--topic"),
        (["feed", "--topic", "in", "--data", "fogline.examples:nothing"], "cannot import"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str], args: list[str], message: str
):
    assert main(["cluster", args[0], "--broker", mosquitto.url, *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_a_dispatcher_killed_9_mid_stream_and_started_again_loses_nothing(mosquitto: Mosquitto):
    # Prepare: a slow node, and the dispatcher as its own process
    url = mosquitto.url
    worker = Worker(url, "w", 0.01, group="line").start()
    command = [sys.executable, "-m", "fogline", "cluster", "dispatch", "--broker", url]
    command += ["--group", "line", "--topic", "line/in"]
    ids = [f"i{n}" for n in range(150)]
    try:
        first = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_for("the dispatcher", lambda: _dispatcher_state(url) == "running", 30)
        with MqttPublisher(url) as publisher:
            publisher.publish(*(MqttMessage(Topic("line/in"), _item(i)) for i in ids[:100]))

            # Execute: kill -9 it half-way; more items while none runs; a second one
            wait_for("some items processed", lambda: len(worker.processed) >= 20, 30)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            assert len(worker.processed) < 100
            publisher.publish(*(MqttMessage(Topic("line/in"), _item(i)) for i in ids[100:]))
        wait_for("its last will", lambda: _dispatcher_state(url) == "offline", 10)
        second = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        wait_for("every item processed", lambda: set(ids) <= set(worker.processed), 60)
        second.send_signal(signal.SIGINT)
        assert second.wait(30) == 0
    finally:
        worker.close()

    # Assert: each item processed once (a copy it had done already was answered, not redone)
    assert sorted(worker.processed) == sorted(ids)


def _item(id_: str) -> bytes:
    return json.dumps({"id": id_, "data": [1.0]}).encode()


def _dispatcher_state(url: str) -> str | None:
    stats = read_status(url, "line").dispatcher
    return None if stats is None else stats.state
