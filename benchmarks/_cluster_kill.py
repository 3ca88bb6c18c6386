"""``kill -9`` of one of three nodes half-way through 10,000 items: lost, duplicated, recovered.

Three ``fogline run`` nodes (digits, one ONNX Runtime thread each) share a
stream through the credit dispatcher. Every result is stored with ``sync``
and delivered through the node's outbox to one topic, under the
idempotency key of a cluster item (derived from the group and the
producer's item id): the receiver here dedupes on that key, as a
downstream system would. The producer publishes 10,000 items at about
two thirds of the three nodes' capacity; when half of them have a result,
one node is killed with SIGKILL. The benchmark watches the work the
dispatcher deals (``work/<node>``), so it knows which items the killed node
held and when each of them was finished elsewhere.

Figures: items lost (no result at the receiver; target 0), duplicate
effects (results of one item under more than one key, i.e. applied twice
by a deduping receiver; target 0), raw duplicates (messages the receiver
got more than once, before dedupe), and the seconds from the kill until the
last item the killed node held had its result from another node (target
under 5 s). Results the killed node had stored but not yet sent wait in
its outbox: it is started again at the end (as its supervisor would) and
delivers them, and they count as delivered, not lost, only then.
"""

from __future__ import annotations

import json
import tempfile
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
    observer = Observer(url, [OUTBOX, base + "work/+", base + "nodes/+", base + "dispatcher"])
    specs = {
        name: node_spec(
            name=name, url=url, topic=TOPIC, group=GROUP, dispatch="credit", model=model,
            preprocess=preprocess, shape=shape, outbox=OUTBOX,
        )  # fmt: skip
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
    if not wait_until("the warm-up", lambda: set(warm) <= _delivered(observer), 90):
        cluster.check_alive()
        raise SystemExit("the warm-up items never came back")
    capacity = 300 / (time.time() - started)
    rate = 2 / 3 * capacity
    log(f"three nodes took a backlog of 300 at {capacity:.0f} items/s; producing at {rate:.0f}/s")

    mark = observer.mark()
    victim = "k2"
    killed_at: float | None = None
    held: set[str] = set()
    ids: list[str] = []
    chunk = max(1, int(rate / 10))
    while len(ids) < total:
        ids += producer.publish(min(chunk, total - len(ids)), rate=rate, prefix="item")
        if killed_at is None:
            done = _delivered(observer, mark)
            if len(done & set(ids)) >= total // 2:
                held = _held(observer, mark, victim) - _delivered(observer, mark)
                cluster.nodes[victim].kill()
                killed_at = time.time()
                log(f"kill -9 {victim} at {len(done)} results; it held {len(held)} items")
    wanted = set(ids)
    wait_until(
        "every item's result", lambda: wanted <= _delivered(observer, mark), 60 + total / rate
    )
    assert killed_at is not None
    redone = _first_results(observer, mark, held, after=killed_at)
    recovery = max(redone.values(), default=killed_at) - killed_at
    not_redone = held - set(redone)
    before = len(wanted - _delivered(observer, mark))
    # The killed node comes back (its supervisor would restart it) and sends what it stored.
    cluster.nodes[victim] = start_node(folder, specs[victim])
    wait_until("the restarted node's outbox", lambda: wanted <= _delivered(observer, mark), 60)

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
        f"results: {raw} messages for {len(keys_per_item)} items; missing before the restart "
        f"{before}, after {lost}; items held by {victim} redone elsewhere: {len(redone)} of "
        f"{len(held)} (not redone: {len(not_redone)}, their results were already stored)"
    )
    return (
        f"kill -9 of 1 of 3 nodes half-way through {total:,} items (credit dispatch, outbox to a "
        f"deduping receiver): lost {lost} (target 0: {verdict(lost == 0)}), duplicate effects "
        f"{effects} (target 0: {verdict(effects == 0)}), raw duplicates before dedupe "
        f"{raw_duplicates}; its {len(held)} held items processed elsewhere within {recovery:.1f} s "
        f"(target < 5 s: {verdict(recovery < 5)})"
    )


def _delivered(observer: Observer, mark: int = 0) -> set[str]:
    return {i for h in observer.since(mark, OUTBOX) if (i := result_id(h)) is not None}


def _held(observer: Observer, mark: int, node: str) -> set[str]:
    """Items the dispatcher dealt to ``node`` (its ``work/<node>`` messages) since ``mark``."""
    topic = f"fogline/cluster/{GROUP}/work/{node}"
    return {h.props["item-id"] for h in observer.since(mark) if h.topic == topic and "item-id" in h.props}


def _first_results(observer: Observer, mark: int, items: set[str], after: float) -> dict[str, float]:
    """When each of ``items`` first had a result, among the results heard after ``after``."""
    first: dict[str, float] = {}
    for heard in observer.since(mark, OUTBOX):
        item = result_id(heard)
        if item in items and heard.at >= after and item not in first:
            first[item] = heard.at
    return first
