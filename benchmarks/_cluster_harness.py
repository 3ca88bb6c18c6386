"""What the cluster benchmarks share: a Mosquitto, ``fogline run`` nodes, a dispatcher, a producer.

Everything is real and runs as it would on a site: Mosquitto on loopback
(fogline's :class:`~fogline.transport.mqtt.LocalBroker`, ``set_tcp_nodelay``
on), every node a ``python -m fogline run NODE.yaml`` process with one ONNX
Runtime thread, the dispatcher a ``python -m fogline cluster dispatch``
process. The benchmark process itself is the producer (a paho client that
publishes ``{"data": [...], "id": ...}`` items at QoS 1 and notes when it
sent each) and the observer (a paho client subscribed to the results, the
work the dispatcher deals, and the cluster's presence and stats).

Not a section of ``bench_cluster.py`` (no ``run``): the sections
``_cluster_nodes`` and ``_cluster_kill`` import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import psutil
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fogline.testing import free_port
from fogline.transport.mqtt import BrokerConfig, LocalBroker

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"   {message}", flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def child_env() -> dict[str, str]:
    """The environment of a node or dispatcher: this checkout's sources, one thread each."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    env.pop("FOGLINE_DEVICE_ID", None)
    return env


def start_broker(folder: Path) -> LocalBroker:
    """Mosquitto on a free loopback port, anonymous, persistence on, TCP_NODELAY on."""
    config = BrokerConfig(folder=folder, port=free_port(), auth=False)
    if not any("set_tcp_nodelay" in line for line in config.lines()):
        config = BrokerConfig(
            folder=folder, port=config.port, auth=False, extra=("set_tcp_nodelay true",)
        )
    broker = LocalBroker(config)
    broker.start()
    return broker


# -- processes -------------------------------------------------------------------------------


@dataclass
class Process:
    """A child process with its log file; ``kill()`` is ``kill -9``."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(),
                cwd=self.log_path.parent,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye; the broker publishes the node's last will."""
        if self.process is not None and self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (a node drains), SIGKILL after ``timeout``."""
        if self.process is None or not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def node_spec(
    *,
    name: str,
    url: str,
    topic: str,
    group: str,
    dispatch: str,
    model: dict[str, Any],
    preprocess: list[dict[str, Any]],
    shape: list[int],
    results: str | None = None,
    outbox: str | None = None,
    window: int = 2,
    format: str = "json",
) -> dict[str, Any]:
    """A cluster node's pipeline: the shared ``mqtt`` source, the model on one thread, a store.

    ``results``: a live ``mqtt`` sink of every result to that topic (the
    observer's clock). ``outbox``: every result stored with ``sync`` and
    delivered through the outbox to that topic (the durable path, under
    the idempotency key a deduping receiver uses). ``format: image``: items
    are encoded images (``shape`` is then ignored: the image says it).
    """
    source: dict[str, Any] = {
        "type": "mqtt",
        "name": "items",
        "url": url,
        "topic": topic,
        "qos": 1,
        **({"shape": shape} if format == "json" else {"format": format}),
        "share": group,
        "dispatch": dispatch,
        "node": name,
        "policy": "block",
    }
    if dispatch == "credit":
        source["window"] = window
    else:
        # Round-robin deals a node items whatever its load; a node's work queue holds
        # max(4 x window, queue) of them and drops what comes beyond, acknowledged already.
        # A long queue keeps them (they wait, as in Mosquitto's own queue): the comparison is
        # latency, not loss.
        source["queue"] = 100_000
    spec: dict[str, Any] = {
        "name": name,
        "sources": [source],
        "preprocess": preprocess,
        "model": {"threads": 1, "max_batch": 8, "max_wait_ms": 0, **model},
        "postprocess": [{"type": "classify", "top_k": 1}],
        "store": {"path": "results.db", "sync": outbox is not None},
    }
    if results is not None:
        spec["sinks"] = [{"type": "mqtt", "url": url, "topic": results, "qos": 1}]
    if outbox is not None:
        spec["outbox"] = {
            "transport": {"type": "mqtt", "url": url, "topic": outbox},
            "retry_initial_s": 0.2,
            "retry_max_s": 1.0,
        }
    return spec


def start_node(folder: Path, spec: dict[str, Any]) -> Process:
    """``fogline run`` of ``spec`` in its own folder (its store, its log)."""
    home = folder / spec["name"]
    home.mkdir(parents=True, exist_ok=True)
    path = home / "node.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    argv = [PYTHON, "-m", "fogline", "run", str(path), "--no-live", "--output-dir", str(home)]
    return Process(spec["name"], argv, home / "node.log").start()


def start_dispatcher(folder: Path, url: str, group: str, topic: str) -> Process:
    argv = [PYTHON, "-m", "fogline", "cluster", "dispatch", "--broker", url]
    argv += ["--group", group, "--topic", topic]
    return Process("dispatcher", argv, folder / f"dispatcher-{group}" / "dispatcher.log").start()


# -- the observer and the producer ------------------------------------------------------------


@dataclass
class Heard:
    topic: str
    at: float
    payload: bytes
    props: dict[str, str]
    item: str | None = None  # the producer's item id in a result, read once on arrival


def _client(url: str, name: str) -> paho.Client:
    host, port = url.removeprefix("mqtt://").rsplit(":", 1)
    client = paho.Client(CallbackAPIVersion.VERSION2, name, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, int(port), keepalive=30)
    return client


class Observer:
    """Every message on ``filters``, with the time it arrived here (this process's clock)."""

    def __init__(
        self,
        url: str,
        filters: Sequence[str],
        name: str = "bench-observer",
        results: Callable[[str], bool] = lambda topic: not topic.startswith("fogline/cluster/"),
    ) -> None:
        self.heard: list[Heard] = []
        self._results = results
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = _client(url, name)
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.loop_start()
        self.client.subscribe([(f, 1) for f in filters])
        if not self._subscribed.wait(10):
            raise RuntimeError("the observer's subscription was not confirmed")

    def _message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        at = time.time()
        props = dict(getattr(message.properties, "UserProperty", None) or [])
        heard = Heard(message.topic, at, message.payload, props)
        heard.item = _item_in(message.payload) if self._results(message.topic) else None
        with self._lock:
            self.heard.append(heard)

    def since(self, start: int = 0, prefix: str = "") -> list[Heard]:
        with self._lock:
            return [h for h in self.heard[start:] if h.topic.startswith(prefix)]

    def mark(self) -> int:
        with self._lock:
            return len(self.heard)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Producer:
    """Publishes items at QoS 1 and notes when it sent each.

    A sample that is a list goes as ``{"id": ..., "data": [...]}``; one that
    is ``bytes`` (an encoded image) goes as it is, its id in the MQTT 5 user
    property ``item-id`` (what a camera gateway would send).
    """

    def __init__(
        self,
        url: str,
        topic: str,
        samples: Sequence[list[int] | list[float] | bytes],
        name: str = "bench-producer",
    ) -> None:
        self.topic = topic
        self.samples: list[str | bytes] = [
            s if isinstance(s, bytes) else json.dumps(s) for s in samples
        ]
        self.sent: dict[str, float] = {}
        self.client = _client(url, name)
        self.client.loop_start()
        self.count = 0

    def publish(self, count: int, rate: float | None = None, prefix: str = "item") -> list[str]:
        """``count`` items, at ``rate`` per second (None: as fast as the broker takes them)."""
        ids, infos = [], []
        started = time.perf_counter()
        for i in range(count):
            if rate is not None:
                wait = started + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            item = f"{prefix}-{self.count}"
            sample = self.samples[self.count % len(self.samples)]
            self.count += 1
            props = None
            if isinstance(sample, bytes):
                payload = sample
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [("item-id", item)]
            else:
                payload = f'{{"id": "{item}", "data": {sample}}}'.encode()
            self.sent[item] = time.time()
            infos.append(self.client.publish(self.topic, payload, qos=1, properties=props))
            ids.append(item)
        for info in infos:
            info.wait_for_publish(30)
        return ids

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def result_id(heard: Heard) -> str | None:
    """The producer's item id in a result (a live sink's body, an outbox envelope, a done)."""
    return heard.item


def _item_in(payload: bytes) -> str | None:
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("outcome") == "processed":
        found = body.get("id")  # a node's done message: the result is durable in its store
        return found if isinstance(found, str) else None
    if isinstance(body, dict) and isinstance(body.get("result"), dict):
        body = body["result"]
    found = body.get("item_id") if isinstance(body, dict) else None
    return found if isinstance(found, str) else None


class CpuClock:
    """CPU seconds (user + system) that processes spent between :meth:`start` and :meth:`per`."""

    def __init__(self, processes: dict[str, int | None]) -> None:
        self.processes = {
            name: psutil.Process(pid) for name, pid in processes.items() if pid is not None
        }
        self.began = self._read()

    def _read(self) -> dict[str, float]:
        spent = {}
        for name, process in self.processes.items():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                spent[name] = times.user + times.system
        return spent

    def per(self, items: int) -> str:
        """Milliseconds of CPU per item, by process."""
        return ", ".join(f"{name} {ms:.1f}" for name, ms in self.ms_per(items).items())

    def ms_per(self, items: int) -> dict[str, float]:
        """Milliseconds of CPU per item, by process, as numbers."""
        now = self._read()
        return {
            name: 1000 * (now[name] - self.began[name]) / max(1, items)
            for name in now
            if name in self.began
        }


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            log(f"gave up waiting for {what} after {timeout:.0f} s")
            return False
        time.sleep(0.05)
    return True


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return float(np.percentile(ordered, q))


def median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else float("nan")


@dataclass
class Cluster:
    """A broker, a dispatcher (credit) or none (broker), some nodes, the producer and observer."""

    folder: Path
    url: str
    group: str
    topic: str
    nodes: dict[str, Process] = field(default_factory=dict)
    dispatcher: Process | None = None

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()  # a benchmark node's results are counted already: no need to drain
        if self.dispatcher is not None:
            self.dispatcher.stop(5)

    def wait_ready(self, observer: Observer, timeout: float = 90.0) -> None:
        """Until the dispatcher (if any) has spoken and every node says it is online.

        A node announces itself right after it subscribed (to its work, or to
        the shared subscription), so an item published after this reaches it.
        ``observer`` must be subscribed to the group's ``nodes/+`` and
        ``dispatcher`` topics.
        """
        base = f"fogline/cluster/{self.group}/"

        def ready() -> bool:
            self.check_alive()
            online = set()
            for heard in observer.since(prefix=base + "nodes/"):
                name = heard.topic.rsplit("/", 1)[1]
                state = json.loads(heard.payload).get("state") if heard.payload else None
                (online.add if state == "online" else online.discard)(name)
            spoke = self.dispatcher is None or bool(observer.since(prefix=base + "dispatcher"))
            return spoke and set(self.nodes) <= online

        if not wait_until("the cluster to be ready", ready, timeout):
            raise SystemExit(f"the cluster {self.group} did not come up")

    def pids(self) -> dict[str, int | None]:
        """The processes of this cluster, by name, for :class:`CpuClock`."""
        found = {name: p.process.pid if p.process else None for name, p in self.nodes.items()}
        if self.dispatcher is not None and self.dispatcher.process is not None:
            found["dispatcher"] = self.dispatcher.process.pid
        return found

    def check_alive(self) -> None:
        for proc in [*self.nodes.values(), *([self.dispatcher] if self.dispatcher else [])]:
            if not proc.alive:
                raise SystemExit(f"{proc.name} exited early:\n{proc.tail()}")
