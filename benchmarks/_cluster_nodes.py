"""Edge cluster nodes: throughput of 1, 2, 3 nodes, and a fast + a slow node, credit against round-robin.

1. Scaling: a backlog of items on the producer's topic, dealt by the credit
   dispatcher (``fogline cluster dispatch``) to 1, 2 and 3 ``fogline run``
   nodes, each with one ONNX Runtime thread, on two models: the bundled
   digits model (8x8 scans, 64 values per item) and MobileNetV2 at 224x224
   (random weights, exported here from ``benchmarks/models.py``; each item
   a 224x224 JPEG of a photograph, ~17 KB, sent as it is with its id in the
   ``item-id`` user property and read with ``format: image``, as a camera
   gateway would send it). Throughput is items over the time from the first
   publish to the last ``done`` heard (a node's word that the result is
   durable in its store, which returns its credit; the nodes publish
   nothing else per item). Window: 8 for digits (batches amortize the
   store's commit and the MQTT round trips: one node measured ~1.3x faster
   than with 2, at less CPU per item), 2 for MobileNetV2 (one node is as
   fast with 4 or 8, and ONNX Runtime on one thread spends more CPU per
   item in batches over 2). Target: two nodes >= 1.7x one node. This
   machine has two cores, and the producer, the observer, Mosquitto and the
   dispatcher run on them too: the line prints each process's CPU
   milliseconds per item, the load average, and what two free cores allow
   at that CPU per item (2000 ms / the sum), which bounds the ratio.
2. A fast and a slow node: the fast node runs MobileNetV2 at 224x224, the
   slow one the same network at 640x640 (the thumbnail scaled up further):
   about 8x the arithmetic of the model, about 5x the node's time per item
   once its fixed costs (decoding, store, MQTT) are counted: a genuinely
   heavier model rather than a sleep; the ratio measured is printed.
   Each node's capacity is measured alone first (a backlog), then
   both together under fogline's credit dispatch and under Mosquitto's plain
   round-robin shared subscription (``dispatch: broker``): total throughput
   on a backlog (target >= 90 % of the two capacities summed), and, at an
   offered load of 60 % of the combined capacity or 75 % of what the two
   took together under credit dispatch, whichever is lower (two nodes on
   two busy cores take less than the sum of each alone; round-robin hands
   the slow node half of the load, more than it can take), the slow node's
   p50 latency from publish to result (target within 2x its service time,
   1 / its capacity alone; the issue measured round-robin's at 1 s). When
   the dispatcher gives the slow node fewer than 10 of the paced items (it
   sends work there only when the fast node would finish later), the figure
   is every item's p99 against the same bound: no item waited behind it.

Exported models are kept in the temporary folder's ``fogline-bench-models``
between runs (random weights, seeded: the same every time).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _cluster_harness import (
    Cluster,
    CpuClock,
    Observer,
    Producer,
    log,
    median,
    node_spec,
    result_id,
    start_broker,
    start_dispatcher,
    start_node,
    verdict,
    wait_until,
)

from fogline.transport.mqtt import LocalBroker

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
MODELS = Path(tempfile.gettempdir()) / "fogline-bench-models"


# -- models and items ------------------------------------------------------------------------


def digits_setup() -> tuple[dict[str, Any], list[dict[str, Any]], list[int], list[list[int]]]:
    from fogline.examples import digits_model_path, digits_stream

    pixels, _ = digits_stream()
    samples = [row.reshape(-1).astype(int).tolist() for row in pixels[:512]]
    preprocess = [{"type": "normalize", "scale": 0.0625}, {"type": "reshape", "shape": [1, 8, 8]}]
    return {"path": str(digits_model_path().parent)}, preprocess, [64], samples


def export_mobilenet(folder: Path, size: int) -> Path:
    """MobileNetV2 (1000 classes, random weights, settled batch norm) as ONNX at size x size."""
    import torch
    from models import mobilenet_v2, photo_crops, settle_batchnorm

    from fogline.model import torch_to_onnx

    path = MODELS / f"mobilenet_v2_{size}.onnx"
    MODELS.mkdir(exist_ok=True)
    if not path.exists():
        started = time.perf_counter()
        torch.manual_seed(0)
        crops = photo_crops(8, size)
        model = settle_batchnorm(mobilenet_v2(num_classes=1000), crops)
        torch_to_onnx(model, crops[:2], path, input_names=["images"], output_names=["logits"])
        log(f"exported MobileNetV2 {size}x{size} in {time.perf_counter() - started:.0f} s")
    return path


def thumbnails(count: int) -> list[list[int]]:
    """32x32 RGB crops of scikit-image's photographs, as flat lists of 0..255."""
    from models import photo_crops

    crops = photo_crops(count, 32).numpy().transpose(0, 2, 3, 1) * STD + MEAN
    return [np.clip(c * 255, 0, 255).astype(int).reshape(-1).tolist() for c in crops]


def photos(count: int, size: int) -> list[bytes]:
    """size x size RGB crops of scikit-image's photographs, each a JPEG (quality 90)."""
    import cv2
    from models import photo_crops

    crops = photo_crops(count, size).numpy().transpose(0, 2, 3, 1) * STD + MEAN
    encoded = []
    for crop in crops:
        bgr = np.ascontiguousarray(np.clip(crop * 255, 0, 255).astype(np.uint8)[:, :, ::-1])
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        encoded.append(jpeg.tobytes())
    return encoded


def mobilenet_preprocess(size: int) -> list[dict[str, Any]]:
    return [
        {"type": "resize", "size": [size, size]},
        {"type": "normalize", "mean": MEAN, "std": STD, "scale": 1 / 255},
        {"type": "layout", "to": "chw"},
    ]


# -- one cluster -----------------------------------------------------------------------------


class Run:
    """One configuration: a fresh group, its dispatcher (credit) and nodes, warmed up."""

    counter = 0

    def __init__(
        self,
        folder: Path,
        url: str,
        mode: str,
        nodes: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]],
        shape: list[int],
        samples: list[list[int]] | list[bytes],
        broker_pid: int | None = None,
        window: int = 2,
        format: str = "json",
        observe_done: bool = False,
    ) -> None:
        Run.counter += 1
        group = f"bench{Run.counter}"
        topic = f"bench/{group}/in"
        base = f"fogline/cluster/{group}/"
        # observe_done (credit dispatch only): an item is finished when its node's done message
        # says its result is durable (what returns its credit), and the nodes publish nothing
        # else per item; otherwise each node also has a live results sink (round-robin nodes
        # send no done messages) and the observer hears that.
        observe_done = observe_done and mode == "credit"
        self.results = base + "done/" if observe_done else f"bench/{group}/results/"
        self.cluster = Cluster(folder, url, group, topic)
        filters = [self.results + "+", base + "nodes/+", base + "dispatcher"]
        self.observer = Observer(
            url, filters, name=f"observer-{group}", results=lambda t: t.startswith(self.results)
        )
        if mode == "credit":
            self.cluster.dispatcher = start_dispatcher(folder, url, group, topic)
        for name, (model, preprocess) in nodes.items():
            spec = node_spec(
                name=name, url=url, topic=topic, group=group, dispatch=mode, model=model,
                preprocess=preprocess, shape=shape, window=window, format=format,
                results=None if observe_done else self.results + name,
            )  # fmt: skip
            self.cluster.nodes[name] = start_node(folder / group, spec)
        self.producer = Producer(url, topic, samples, name=f"producer-{group}")
        self.mode = mode
        self.broker_pid = broker_pid

    def warm(self, timeout: float = 90.0) -> None:
        """Once every node is up, a burst of items, until each has answered (models loaded)."""
        self.cluster.wait_ready(self.observer, timeout)
        ids = set(self.producer.publish(4 * len(self.cluster.nodes), prefix="warm"))
        if not wait_until("the warm-up results", lambda: ids <= self._answered(), timeout):
            raise SystemExit("the warm-up items did not all come back")

    def _answered(self, mark: int = 0) -> set[str | None]:
        return {result_id(h) for h in self.observer.since(mark, self.results)}

    def backlog(self, count: int, timeout: float) -> dict[str, Any]:
        """Publish ``count`` items at once; items/s from the first publish to the last result."""
        mark = self.observer.mark()
        clock = CpuClock({**self.cluster.pids(), "broker": self.broker_pid, "bench": os.getpid()})
        busy = _busy_seconds()
        started = time.time()
        ids = self.producer.publish(count, prefix="b")
        wanted = set(ids)

        finished = wait_until(f"{count} results", lambda: wanted <= self._answered(mark), timeout)
        heard = [h for h in self.observer.since(mark, self.results) if result_id(h) in wanted]
        got = {result_id(h) for h in heard}
        last = max((h.at for h in heard), default=time.time())
        per_node: dict[str, int] = {}
        for h in heard:
            node = h.topic.rsplit("/", 1)[1]
            per_node[node] = per_node.get(node, 0) + 1
        rate = len(got) / max(1e-9, last - started)
        cpu, load = clock.ms_per(len(got)), os.getloadavg()[0]
        wall = max(1e-9, time.time() - started)
        # Cores busy over the run, this run's processes and all others (other work on the box).
        ours = sum(cpu.values()) * len(got) / 1000 / wall
        others = max(0.0, (_busy_seconds() - busy) / wall - ours)
        log(
            f"CPU ms per item: {clock.per(len(got))}; cores busy: this run {ours:.2f}, other "
            f"processes {others:.2f}; load average {load:.1f}"
        )
        return {
            "rate": rate,
            "per_node": per_node,
            "missing": len(wanted - got),
            "all": finished,
            "cpu": cpu,
            "load": load,
            "others": others,
        }

    def paced(self, rate: float, seconds: float, timeout: float) -> dict[str, Any]:
        """Items at ``rate``/s for ``seconds``; each node's latencies (publish to result heard)."""
        mark = self.observer.mark()
        ids = self.producer.publish(int(rate * seconds), rate=rate, prefix="p")
        wanted = set(ids)
        wait_until("the paced items' results", lambda: wanted <= self._answered(mark), timeout)
        latency: dict[str, list[float]] = {}
        for h in self.observer.since(mark, self.results):
            item = result_id(h)
            if item in wanted:
                node = h.topic.rsplit("/", 1)[1]
                latency.setdefault(node, []).append(h.at - self.producer.sent[item])
        answered = sum(len(v) for v in latency.values())
        return {"latency": latency, "missing": len(wanted) - answered}

    def close(self) -> None:
        self.producer.close()
        self.observer.close()
        self.cluster.stop()


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, all processes) since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def in_turn(makers: list[Callable[[], Run]], together: bool) -> Iterator[Run]:
    """Each run in turn, closed after use; ``together``: all started at once, then used in turn.

    ``--quick`` starts them together: there the nodes' start-up, not the
    measurement, takes most of the time; an idle node costs little (its
    presence every 2 s), but a full run starts each alone all the same.
    """
    started = [make() for make in makers] if together else []
    try:
        for index, make in enumerate(makers):
            run = started[index] if together else make()
            try:
                yield run
            finally:
                run.close()
    finally:
        for run in started:
            run.close()


# -- 1. scaling ------------------------------------------------------------------------------


def scaling(
    folder: Path,
    broker: LocalBroker,
    name: str,
    setup: Any,
    counts: dict[int, int],
    quick: bool,
    window: int = 2,
    format: str = "json",
) -> list[str]:
    """Backlogs through 1, 2 (, 3) nodes; the ratio, the CPU per item and the CPU-bound ceiling.

    The ceiling says what two cores allow whatever the dispatch: with ``c``
    CPU milliseconds per item over every process of the run (nodes,
    dispatcher, broker, this producer and observer) measured with two
    nodes, two fully free cores take at most ``2000 / c`` items/s.
    """
    model, preprocess, shape, samples = setup
    rates: dict[int, float] = {}
    details: dict[int, str] = {}
    others: list[float] = []
    ceiling = float("nan")

    def maker(nodes: int) -> Callable[[], Run]:
        members = {f"n{i}": (model, preprocess) for i in range(1, nodes + 1)}
        return lambda: Run(
            folder, broker.url, "credit", members, shape, samples, broker.pid,
            window=window, format=format, observe_done=True,
        )  # fmt: skip

    runs = in_turn([maker(nodes) for nodes in counts], together=quick)
    for (nodes, count), run in zip(counts.items(), runs, strict=True):
        run.warm()
        got = run.backlog(count, timeout=max(60.0, count / 5))
        rates[nodes] = got["rate"]
        cpu = got["cpu"]
        node_ms = sum(ms for n, ms in cpu.items() if n.startswith("n"))  # nodes together
        total_ms = sum(cpu.values())
        details[nodes] = (
            f"{nodes}: nodes {node_ms:.1f}, dispatcher {cpu.get('dispatcher', float('nan')):.1f}, "
            f"broker {cpu.get('broker', float('nan')):.1f}, producer+observer "
            f"{cpu.get('bench', float('nan')):.1f} = {total_ms:.1f}; other processes busy "
            f"{got['others']:.2f} cores, load {got['load']:.1f}"
        )
        others.append(got["others"])
        if nodes == 2:
            ceiling = 2000.0 / total_ms
        log(
            f"{name}, {nodes} node(s), credit dispatch, window {window}: {got['rate']:.1f} "
            f"items/s over {count} items; per node {got['per_node']}; missing {got['missing']}"
        )
    ratio = rates.get(2, float("nan")) / rates[1]
    three = f", 3 nodes {rates[3]:.1f} ({rates[3] / rates[1]:.2f}x)" if 3 in rates else ""
    # Other work on the machine (load from outside this benchmark) takes cores from one run
    # and not another: the ratio then says more about it than about the cluster.
    shared = (
        f", NOT a valid measurement: other processes kept up to {max(others):.1f} cores busy"
        if max(others) > 0.25
        else ""
    )
    return [
        f"{name}, nodes of 1 ORT thread (credit dispatch, window {window}): 1 node "
        f"{rates[1]:.1f} items/s, 2 nodes {rates.get(2, float('nan')):.1f} ({ratio:.2f}x){three}"
        f"  (target 2 nodes >= 1.7x on 2 cores shared with producer, dispatcher and broker: "
        f"{verdict(ratio >= 1.7)}{shared}); CPU ms per item by nodes run "
        f"[{'; '.join(details.values())}]; at the 2-node CPU per item two otherwise idle cores "
        f"take at most {ceiling:.0f} items/s"
    ]


# -- 2. fast and slow ------------------------------------------------------------------------


def fast_and_slow(
    folder: Path, broker: LocalBroker, sizes: tuple[int, int], quick: bool
) -> list[str]:
    fast_size, slow_size = sizes
    fast = ({"path": str(export_mobilenet(folder, fast_size))}, mobilenet_preprocess(fast_size))
    slow = ({"path": str(export_mobilenet(folder, slow_size))}, mobilenet_preprocess(slow_size))
    samples = thumbnails(64)
    shape = [32, 32, 3]
    backlog = 150 if quick else 400
    seconds = 5.0 if quick else 20.0

    def maker(mode: str, nodes: dict[str, Any]) -> Callable[[], Run]:
        return lambda: Run(folder, broker.url, mode, nodes, shape, samples, broker.pid)

    runs = in_turn(
        [
            maker("credit", {"fast": fast}),
            maker("credit", {"slow": slow}),
            maker("credit", {"fast": fast, "slow": slow}),
            maker("broker", {"fast": fast, "slow": slow}),
        ],
        together=quick,
    )
    capacity: dict[str, float] = {}
    for name in ("fast", "slow"):
        run = next(runs)
        run.warm()
        count = backlog if name == "fast" else max(20, backlog // 5)
        capacity[name] = run.backlog(count, timeout=120)["rate"]
        log(f"{name} node alone: {capacity[name]:.2f} items/s")
    combined = capacity["fast"] + capacity["slow"]
    service = 1.0 / capacity["slow"]
    offered = 0.6 * combined  # lowered below to what the two take together, if that is less
    log(
        f"slow/fast: {capacity['fast'] / capacity['slow']:.1f}x slower; combined capacity "
        f"{combined:.1f} items/s; slow node's service time {service * 1000:.0f} ms"
    )

    lines = []
    for mode, run in zip(("credit", "broker"), runs, strict=True):
        run.warm()
        total = run.backlog(backlog, timeout=300)
        if mode == "credit":
            offered = min(offered, 0.75 * total["rate"])
        timed = run.paced(offered, seconds, timeout=seconds * 4 + 30)
        slow_p50 = median(timed["latency"].get("slow", []))
        fast_p50 = median(timed["latency"].get("fast", []))
        share = {n: len(v) for n, v in timed["latency"].items()}
        log(
            f"{mode}: backlog of {backlog}: {total['rate']:.1f} items/s, per node "
            f"{total['per_node']}, missing {total['missing']}; at {offered:.1f} items/s for "
            f"{seconds:g} s: per node {share}, p50 fast {fast_p50 * 1000:.0f} ms, slow "
            f"{slow_p50 * 1000:.0f} ms, missing {timed['missing']}"
        )
        label = "fogline credit dispatch" if mode == "credit" else "round-robin ($share)"
        of = total["rate"] / combined
        # The target is that no item waits behind the slow node. A dispatcher that keeps the
        # paced load off the slow node altogether leaves its p50 undefined; then the figure is
        # the p99 of every item, against the same bound.
        everyone = sorted(v for values in timed["latency"].values() for v in values)
        p99_all = everyone[int(0.99 * (len(everyone) - 1))] if everyone else float("nan")
        took_slow = share.get("slow", 0)
        if took_slow >= 10:
            within = slow_p50 / service
            figure = f"slow node p50 {slow_p50 * 1000:.0f} ms = {within:.1f}x"
        else:
            within = p99_all / service
            figure = (
                f"the slow node took {took_slow} item(s), every item's p99 "
                f"{p99_all * 1000:.0f} ms = {within:.1f}x"
            )
        target = (
            f"(targets: >= 90 %: {verdict(of >= 0.9)}; <= 2x: {verdict(within <= 2)})"
            if mode == "credit"
            else "(the anchor fogline's dispatch is measured against)"
        )
        lines.append(
            f"fast + slow node ({capacity['fast'] / capacity['slow']:.1f}x slower: MobileNetV2 "
            f"{fast_size} vs {slow_size}), {label}: {total['rate']:.1f} items/s = {100 * of:.0f}% "
            f"of combined capacity {combined:.1f}; at {offered:.1f} items/s offered, per node "
            f"{share}: {figure} the slow node's service time {service * 1000:.0f} ms {target}"
        )
    return lines


def run(quick: bool) -> list[str]:
    print(
        "\nCluster nodes: 1, 2, 3 nodes (credit dispatch); a fast and a slow node, credit vs "
        "round-robin" + (" (--quick: fewer items, smaller models)" if quick else "")
    )
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fogline-cluster-nodes-") as tmp:
        folder = Path(tmp)
        broker = start_broker(folder / "broker")
        try:
            counts = {1: 500, 2: 1000} if quick else {1: 3000, 2: 6000, 3: 9000}
            lines += scaling(folder, broker, "digits", digits_setup(), counts, quick, window=8)
            if not quick:
                size = 224
                mobilenet = (
                    {"path": str(export_mobilenet(folder, size))},
                    mobilenet_preprocess(size),  # the resize is a no-op on 224x224 photos
                    [size, size, 3],
                    photos(64, size),
                )
                lines += scaling(
                    folder, broker, f"MobileNetV2 {size}x{size} (JPEG items)", mobilenet,
                    {1: 300, 2: 600, 3: 900}, quick, window=2, format="image",
                )  # fmt: skip
            lines += fast_and_slow(folder, broker, (96, 352) if quick else (224, 640), quick)
        finally:
            broker.stop()
    for line in lines:
        print(f"   {line}")
    return lines
