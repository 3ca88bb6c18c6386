"""Three real ``fogline run`` nodes share one stream through a real Mosquitto; one is killed.

The dispatcher (the library ``fogline cluster dispatch`` runs) deals the
digits items by credit. One node is killed with SIGKILL mid-stream: every
item must still end up in some node's store, the one malformed item is
counted corrupt (its credit returned), and the outbox keys let a receiver
that dedupes on them see each item once, even when two nodes stored it.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fogline.cli import main
from fogline.cluster import Dispatcher, idempotency_key, read_status
from fogline.examples import digits_eval
from fogline.pipeline import Corrupt, Item
from fogline.pipeline.sources import MqttSource, MqttSourceSpec
from fogline.store import read_deduplicated
from fogline.transport.mqtt import MqttMessage, MqttPublisher, Topic
from support.broker import Mosquitto
from support.digits_pipeline import digits_spec, write_spec
from support.fleet_controller import wait_for

TOPIC = "digits/in"


def node_spec(url: str, **source: object) -> dict[str, object]:
    return digits_spec(
        sources=[
            {"type": "mqtt", "url": url, "topic": TOPIC, "share": "digits", "shape": [1, 8, 8]}
            | source
        ],
        model={"path": digits_spec()["model"]["path"], "threads": 1, "max_batch": 2},
        store={"path": "results.db", "sync": True},
        outbox={"transport": {"type": "jsonl", "path": "outbox.jsonl"}, "retry_initial_s": 0.05},
    )


def stored_ids(db: Path) -> list[str]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return [row[0] for row in conn.execute("SELECT item_id FROM results")]
    except sqlite3.OperationalError:
        return []


def test_kill_9_of_one_of_three_nodes_loses_no_item_and_each_has_one_effect(
    mosquitto: Mosquitto, tmp_path: Path
):
    # Prepare: a dispatcher, three nodes (each its own store), the digits items with ids
    url = mosquitto.url
    spec = write_spec(tmp_path, node_spec(url))
    items = []
    for batch in digits_eval():
        for pixels, label in zip(batch["pixels"], batch["labels"], strict=True):
            n = len(items)
            body = {"id": f"d-{n}", "data": pixels.reshape(-1).tolist(), "label": str(label)}
            items.append(MqttMessage(Topic(TOPIC), json.dumps(body).encode()))
    ids = {f"d-{n}" for n in range(len(items))}
    bad = MqttMessage(Topic(TOPIC), b'{"id": "bad-1", "data": "not numbers"}')
    env = {**os.environ, "COLUMNS": "200"}
    dispatcher = Dispatcher(url, "digits", TOPIC).start()
    assert dispatcher.wait_ready(10)
    nodes = []
    for name in ("a", "b", "c"):
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115  closed below
        command = [sys.executable, "-m", "fogline", "run", str(spec), "--no-live"]
        process = subprocess.Popen(
            [*command, "--output-dir", str(tmp_path / name)], env=env, stderr=log
        )
        nodes.append((name, process, log))
    try:
        wait_for("three nodes", lambda: len(dispatcher.nodes) == 3, 60)

        # Execute: half the items; freeze node b once it stored some, so that it holds
        # items of the second half when it is killed with SIGKILL; then a bad item
        victim, victim_db = nodes[1][1], tmp_path / "b" / "results.db"
        name = next(n for n in dispatcher.nodes if n.endswith(f"-{victim.pid}"))
        with MqttPublisher(url) as publisher:
            publisher.publish(*items[: len(items) // 2])
            wait_for("node b to store some", lambda: len(stored_ids(victim_db)) >= 20, 30)
            victim.send_signal(signal.SIGSTOP)
            publisher.publish(*items[len(items) // 2 :])
            wait_for("b to hold items", lambda: len(dispatcher.nodes[name].outstanding) > 0, 30)
            victim.send_signal(signal.SIGKILL)
            publisher.publish(bad)
        wait_for("every item done", lambda: dispatcher.stats.completed == len(ids) + 1, 60)
        for name, process, _ in nodes:
            if name != "b":
                process.send_signal(signal.SIGINT)
        for name, process, _ in nodes:
            assert process.wait(60) in ((0,) if name != "b" else (-signal.SIGKILL,))
    finally:
        dispatcher.close()
        for _, process, log in nodes:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()

    # Assert: every item stored somewhere; the bad one counted corrupt with its position
    stores = {name: stored_ids(tmp_path / name / "results.db") for name in "abc"}
    assert set().union(*stores.values()) == ids
    assert all(len(found) == len(set(found)) for found in stores.values())  # once per store
    stats = dispatcher.stats
    assert stats.corrupt == 1 and stats.redispatched >= 1 and stats.queued == 0
    # What `fogline cluster status` shows: b offline (its will), the items it lost re-dispatched
    status = read_status(url, "digits")
    by_pid = {int(n.node.rsplit("-", 1)[1]): n for n in status.nodes}
    killed = by_pid[nodes[1][1].pid]
    assert killed.state == "offline" and status.dispatcher is not None
    assert status.dispatcher.nodes[killed.node]["redispatched"] == stats.redispatched
    assert {n.state for n in status.nodes} == {"offline"}  # the others left when stopped
    assert {n.pipeline for n in status.nodes} == {"digits"}
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in "abc")
    assert (
        "skipped mqtt fogline/cluster/digits/work/" in logs
        and "item bad-1: expected a list" in logs
    )
    # One effect per item at a receiver that dedupes on the outbox key
    received = tmp_path / "received.jsonl"
    received.write_bytes(b"".join((tmp_path / n / "outbox.jsonl").read_bytes() for n in "ac"))
    victim_sent = tmp_path / "b" / "outbox.jsonl"
    if victim_sent.exists():
        with received.open("ab") as out:
            out.write(victim_sent.read_bytes())
    effects = read_deduplicated(received)
    delivered = {m["result"]["item_id"] for m in effects}
    assert len(effects) == len(delivered)
    assert all(m["key"] == idempotency_key("digits", m["result"]["item_id"]) for m in effects)
    survivors = set(stores["a"]) | set(stores["c"])
    assert survivors <= delivered  # what the live nodes stored, their outboxes delivered


@pytest.mark.parametrize(
    "source, message",
    [
        ({"share": "line/1"}, "sources[0].share: a cluster group is one MQTT topic level"),
        ({"share": "#"}, "one MQTT topic level"),
        ({"share": ""}, "one MQTT topic level"),
        ({"share": "g", "node": "a/b"}, "a node name is one MQTT topic level"),
        ({"share": "g", "policy": "drop-oldest"}, "would drop items that hold a credit"),
        ({"share": "g", "window": 0}, "window"),
        ({"share": "g", "dispatch": "roundrobin"}, "dispatch"),
        ({"share": None, "dispatch": "broker"}, "add share: GROUP"),
    ],
)
def test_check_refuses_a_bad_cluster_key_with_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: dict[str, object], message: str
):
    spec = write_spec(tmp_path, node_spec("mqtt://127.0.0.1:1", **source))
    assert main(["check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_dispatch_broker_shares_the_topic_round_robin_and_still_announces_presence(
    mosquitto: Mosquitto,
):
    # Prepare: two sources of group "line" on the broker's shared subscription
    url = mosquitto.url
    specs = [
        MqttSourceSpec(url=url, topic="line/in", share="line", dispatch="broker", node=name)
        for name in ("x", "y")
    ]
    sources = [spec.build(f"mqtt-{n}") for n, spec in enumerate(specs)]
    stop = threading.Event()
    got: list[list[Item | Corrupt]] = [[], []]

    def read(source: MqttSource, out: list[Item | Corrupt]) -> None:
        for entry in source.read(stop):  # settled at once: the broker sends the next one
            out.append(entry)
            if isinstance(entry, Item):
                source.settled([entry.meta["id"]], "processed")

    readers = [
        threading.Thread(target=read, args=(s, out), daemon=True)
        for s, out in zip(sources, got, strict=True)
    ]
    for reader in readers:
        reader.start()
    wait_for("both subscribed", lambda: all(s.subscribed.is_set() for s in sources), 10)

    # Execute: ten items with ids, one without, one malformed
    with MqttPublisher(url) as publisher:
        bodies = [{"id": f"i{n}", "data": [n]} for n in range(10)] + [{"data": [1]}]
        messages = [MqttMessage(Topic("line/in"), json.dumps(b).encode()) for b in bodies]
        publisher.publish(*messages, MqttMessage(Topic("line/in"), b"{"))
    wait_for("every message", lambda: sum(map(len, got)) == 12, 10)
    status = read_status(url, "line")
    stop.set()
    for reader, source in zip(readers, sources, strict=True):
        reader.join()
        source.close()

    # Assert: each message reached one node; ids kept or made; the bad one is corrupt
    items = [e for out in got for e in out if isinstance(e, Item)]
    assert all(got)  # round-robin: both took some
    assert {i.meta["id"] for i in items} >= {f"i{n}" for n in range(10)} and len(items) == 11
    assert sum(isinstance(e, Corrupt) for out in got for e in out) == 1
    assert {(n.node, n.window) for n in status.nodes} == {("x", 0), ("y", 0)}  # no credits


def test_the_example_node_checks(capsys: pytest.CaptureFixture[str]):
    node = Path(digits_spec()["model"]["path"]).parent / "digits_cluster" / "node.yaml"
    assert main(["check", str(node)]) == 0
    assert "is ready to run" in capsys.readouterr().out
