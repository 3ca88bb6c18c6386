"""``kill -9`` of one of three nodes half-way through 10,000 items: lost, duplicated, recovered.

Three ``fogline run`` nodes (digits, one ONNX Runtime thread each) share a
stream through the credit dispatcher. Every result is stored with ``sync``
and delivered through the node's outbox to one topic, under the
idempotency key of a cluster item (derived from the group and the
producer's item id): the receiver here dedupes on that key, as a
downstream system would. The producer publishes 10,000 items at about
80 % of the three nodes' capacity; when half of them have a result,
one node is killed with SIGKILL. The benchmark watches the work the
dispatcher deals (``work/<node>``), so it knows which items the killed node
held and when each of them was finished elsewhere.

Figures: items lost (no result at the receiver; target 0), duplicate
effects (results of one item under more than one key, i.e. applied twice
by a deduping receiver; target 0), raw duplicates (messages the receiver
got more than once, before dedupe), and the seconds from the kill until the
last item the killed node held had its result from another node (target
under 5 s). The node is frozen (SIGSTOP) for half a second, so that the
items it holds (dealt to it, not answered with ``done``) can be read off
the wire, then killed with SIGKILL; the recovery clock starts at the
freeze, so the pause counts against it. Results it had stored but not yet
sent wait in its outbox: it is started again at the end (as its
supervisor would) and delivers them, and they count as delivered, not
lost, only then.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

from _cluster_harness import (
    Cluster,
    Observer,
    Producer,
    log,
    node_spec,
    result_id,
    start_broker,
    start_dispatcher,
    start_node,
    verdict,
    wait_until,
)
from _cluster_nodes import digits_setup

GROUP = "killbench"
TOPIC = "bench/kill/in"
OUTBOX = "bench/kill/out"


def run(quick: bool) -> list[str]:
    total = 2_000 if quick else 10_000
    print(f"\nCluster kill: kill -9 of one of three nodes half-way through {total:,} items")
    with tempfile.TemporaryDirectory(prefix="fogline-cluster-kill-") as tmp:
        folder = Path(tmp)
        broker = start_broker(folder / "broker")
        try:
            line = _run(folder, broker.url, total)
        finally:
            broker.stop()
    print(f"   {line}")
    return [line]


def _run(folder: Path, url: str, total: int) -> str:
    model, preprocess, shape, samples = digits_setup()
    cluster = Cluster(folder, url, GROUP, TOPIC)
    base = f"fogline/cluster/{GROUP}/"
    filters = [OUTBOX, base + "work/+", base + "done/+", base + "nodes/+", base + "dispatcher"]
    observer = Observer(url, filters)
    common = {"url": url, "topic": TOPIC, "group": GROUP, "dispatch": "credit", "outbox": OUTBOX}
    specs = {
        name: node_spec(name=name, model=model, preprocess=preprocess, shape=shape, **common)
        for name in ("k1", "k2", "k3")
    }
    cluster.dispatcher = start_dispatcher(folder, url, GROUP, TOPIC)
    cluster.nodes = {name: start_node(folder, spec) for name, spec in specs.items()}
    producer = Producer(url, TOPIC, samples)
    try:
        return _measure(folder, cluster, observer, producer, specs, total)
    finally:
        producer.close()
        observer.close()
        cluster.stop()


def _measure(
    folder: Path,
    cluster: Cluster,
    observer: Observer,
    producer: Producer,
    specs: dict[str, dict[str, object]],
    total: int,
) -> str:
    cluster.wait_ready(observer)
    # Capacity first (warm-up included): a short backlog, so the paced run is a real load.
    warm = producer.publish(300, prefix="warm")
    started = time.time()
    warmed = Tally(observer, 0)
    if not wait_until("the warm-up", lambda: set(warm) <= warmed.update().delivered, 90):
        cluster.check_alive()
        raise SystemExit("the warm-up items never came back")
    capacity = 300 / (time.time() - started)
    rate = 0.8 * capacity  # busy nodes: their windows are mostly full
    log(f"three nodes took a backlog of 300 at {capacity:.0f} items/s; producing at {rate:.0f}/s")

    mark = observer.mark()
    tally = Tally(observer, mark)
    victim = "k2"
    ids: list[str] = []
    # The producer goes on in its own thread while the node is frozen and killed.
    producing = threading.Thread(
        target=lambda: ids.extend(producer.publish(total, rate=rate, prefix="item")), daemon=True
    )
    producing.start()
    wait_until("half of the results", lambda: len(tally.update().delivered) >= total // 2, 600)
    # Freeze it first (SIGSTOP), so that what it holds can be read: the "done"s it sent
    # before are heard within the pause, and it sends no more. Then kill -9. The clock
    # starts at the freeze: the pause counts against the recovery.
    process = cluster.nodes[victim].process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    killed_at = time.time()
    time.sleep(0.5)
    tally.update()
    answered = tally.answered.get(victim, set())
    in_flight = tally.dealt.get(victim, set()) - answered
    stored = answered - tally.delivered
    cluster.nodes[victim].kill()
    log(f"kill -9 {victim}: it held {len(in_flight)} item(s) it had not answered")
    producing.join()
    wanted = set(ids)
    # Everything but what the killed node stored and its outbox had not sent yet.
    wait_until(
        "every item's result",
        lambda: wanted - tally.update().delivered <= stored,
        60 + total / rate,
    )
    redone = _first_results(observer, mark, in_flight, after=killed_at)
    recovery = max(redone.values(), default=killed_at) - killed_at
    if in_flight:
        moved = f"within {recovery:.2f} s (target < 5 s: {verdict(recovery < 5 and len(redone) == len(in_flight))})"
    else:
        moved = "n/a: every item it took it had answered (the race was lost; run it again)"
    before = len(wanted - tally.update().delivered)
    redispatched = json.loads(tally.stats).get("redispatched") if tally.stats else None
    # The killed node comes back (its supervisor would restart it) and sends what it stored.
    cluster.nodes[victim] = start_node(folder, specs[victim])
    wait_until("the restarted node's outbox", lambda: wanted <= tally.update().delivered, 60)

    raw = 0
    keys_per_item: dict[str, set[str]] = {}
    for heard in observer.since(mark, OUTBOX):
        item = result_id(heard)
        if item not in wanted:
            continue
        raw += 1
        key = heard.props.get("idempotency-key") or json.loads(heard.payload).get("key", "")
        keys_per_item.setdefault(item, set()).add(key)
    lost = len(wanted - set(keys_per_item))
    effects = sum(len(keys) - 1 for keys in keys_per_item.values())
    raw_duplicates = raw - len(keys_per_item)
    log(
        f"results: {raw} messages for {len(keys_per_item)} items; the dispatcher re-dispatched "
        f"{redispatched}; {len(redone)} of the {len(in_flight)} item(s) {victim} held were "
        f"processed elsewhere; {len(stored)} result(s) it had stored but not sent came when it "
        f"was restarted (missing before the restart {before}, after {lost})"
    )
    return (
        f"kill -9 of 1 of 3 nodes half-way through {total:,} items (credit dispatch, outbox to a "
        f"deduping receiver): lost {lost} (target 0: {verdict(lost == 0)}), duplicate effects "
        f"{effects} (target 0: {verdict(effects == 0)}), raw duplicates before dedupe "
        f"{raw_duplicates}; the {len(in_flight)} item(s) it held processed elsewhere {moved}"
    )


class Tally:
    """What the observer heard since ``mark``, read incrementally (10,000s of messages)."""

    def __init__(self, observer: Observer, mark: int) -> None:
        self.observer, self.cursor = observer, mark
        self.delivered: set[str] = set()
        self.dealt: dict[str, set[str]] = {}
        self.answered: dict[str, set[str]] = {}
        self.stats: bytes = b""

    def update(self) -> Tally:
        new = self.observer.since(self.cursor)
        self.cursor += len(new)
        base = f"fogline/cluster/{GROUP}/"
        for heard in new:
            if heard.topic == OUTBOX:
                if (item := result_id(heard)) is not None:
                    self.delivered.add(item)
            elif heard.topic.startswith(base + "work/") and "item-id" in heard.props:
                self.dealt.setdefault(heard.topic.rsplit("/", 1)[1], set()).add(
                    heard.props["item-id"]
                )
            elif heard.topic.startswith(base + "done/"):
                with contextlib.suppress(ValueError, AttributeError):
                    item = json.loads(heard.payload).get("id")
                    self.answered.setdefault(heard.topic.rsplit("/", 1)[1], set()).add(item)
            elif heard.topic == base + "dispatcher" and heard.payload:
                self.stats = heard.payload
        return self


def _first_results(
    observer: Observer, mark: int, items: set[str], after: float
) -> dict[str, float]:
    """When each of ``items`` first had a result, among the results heard after ``after``."""
    first: dict[str, float] = {}
    for heard in observer.since(mark, OUTBOX):
        item = result_id(heard)
        if item in items and heard.at >= after and item not in first:
            first[item] = heard.at
    return first
