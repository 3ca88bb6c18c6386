"""The credit dispatcher: deal a producer's items to the nodes that have room, lose none.

Why not the broker's shared subscription alone: Mosquitto deals a shared
subscription round-robin whatever a member's load (a 20 ms member gets as
many items as a 1 ms one and its queue grows without bound), drops what is
beyond ``max_queued_messages`` silently, and never hands a dead member's
in-flight items to a live one. Here every node announces a window of
credits; an item goes to the node with a free credit expected to finish it
soonest (:func:`pick`), and its ``done`` gives the credit back, so a slow
node holds at most its window.

Nothing lost: the producer's topic is read on a persistent session with
manual acknowledgement, and an input message is acknowledged only once its
item is done, so a dispatcher restart gets the unfinished ones again from
the broker. A node's last will (``offline``), a presence that stops being
refreshed, or an item outstanding longer than ``item_timeout`` sends its
items to other nodes. A second ``done`` for an item is counted as a
duplicate, never completed twice.

Concurrency: paho's thread only queues what arrived; one dispatcher thread
(:meth:`Dispatcher.run`) owns all state, dispatches, and publishes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from fogline.cluster._reorder import Released, ReorderWindow
from fogline.cluster._topics import ClusterTopics, DispatcherStats, Done, Presence, encode
from fogline.errors import ConfigError
from fogline.transport.mqtt import (
    MqttMessage,
    MqttUrl,
    Topic,
    TopicFilter,
    connect_properties,
    connect_refusal,
    new_client,
    publish_queued,
    received,
    stop_loop,
    subscription_refusal,
    to_url,
)

log = logging.getLogger(__name__)

STATS_EVERY_S = 2.0
_RECENT_IDS = 65536  # completed item ids kept to acknowledge a redelivered copy at once


@dataclass
class _Entry:
    """One producer item from arrival until a node says it is done."""

    seq: int
    id: str
    payload: bytes
    mids: list[tuple[int, int]]  # (mid, qos) of each copy the broker delivered
    node: str | None = None
    sent_at: float = 0.0
    arrived: float = 0.0  # monotonic


@dataclass
class _Node:
    presence: Presence
    seen: float  # monotonic time of its last presence
    outstanding: set[int] = field(default_factory=set)
    given_at: float = 0.0
    completed: int = 0  # done messages from it that completed an item
    redispatched: int = 0  # its items that went to another node
    per_item: float | None = None  # moving average of its seconds per item; None: not measured
    last_done: float = 0.0  # monotonic time of its last done

    def learn(self, sent_at: float, now: float) -> None:
        """Learn its time per item from a ``done`` (since the later of dispatch and last done)."""
        spent = max(0.0, now - max(sent_at, self.last_done))
        self.last_done = now
        self.per_item = spent if self.per_item is None else 0.8 * self.per_item + 0.2 * spent

    @property
    def serving(self) -> bool:
        return self.presence.state == "online" and self.presence.window > 0

    def free(self, default_window: int) -> int:
        window = self.presence.window or default_window
        return window - len(self.outstanding)


def pick(nodes: dict[str, _Node], window: int, waiting: int, waited: float) -> str | None:
    """The node to give the next item to, or None: no free credit, or better to wait.

    Among the serving nodes with a free credit, the one expected to finish
    the item soonest: (its outstanding items + 1) x its time per item (a
    moving average of its ``done`` messages; a node not measured yet counts
    as the fastest measured one, so it gets work and is measured). Ties:
    the least loaded, then the one that waited longest. It waits instead
    when the nodes with no free credit are expected to work off their items
    and the ``waiting`` items sooner than the best free node finishes this
    one (a slow node then takes work only when a queue builds), but never
    longer than that node would have taken: ``waited`` is how long the first
    waiting item has waited.
    """
    known = [n.per_item for n in nodes.values() if n.serving and n.per_item is not None]
    seed = min(known, default=0.0)
    free, busy = [], []
    for name, n in nodes.items():
        if not n.serving:
            continue
        per_item = seed if n.per_item is None else n.per_item
        held = len(n.outstanding)
        if n.free(window) > 0:
            load = held / (n.presence.window or window)
            free.append(((held + 1) * per_item, load, n.given_at, name))
        elif per_item > 0:
            busy.append((held, per_item))
    if not free:
        return None
    cost, _, _, name = min(free)
    if busy and waited < cost:
        rate = sum(1.0 / per_item for _, per_item in busy)
        if (sum(held for held, _ in busy) + waiting) / rate < cost:
            return None  # the busy nodes will have done it sooner
    return name


def item_id(message: MqttMessage) -> str:
    """The producer's id for an item: its ``item-id`` user property, else the JSON ``id``.

    A payload with neither is named by its content (``sha256:<hex>``): two
    identical payloads are then one item, which is why a producer should give ids.

    >>> from fogline.transport.mqtt import Topic
    >>> item_id(MqttMessage(Topic("in"), b'{"id": 7, "data": [1]}'))
    '7'
    >>> item_id(MqttMessage(Topic("in"), b"raw", user_properties=(("item-id", "cam-1:9"),)))
    'cam-1:9'
    >>> item_id(MqttMessage(Topic("in"), b"raw"))[:15]
    'sha256:d7439bee'
    """
    given = dict(message.user_properties).get("item-id")
    if given:
        return given
    if message.payload[:1] == b"{":
        try:
            body = json.loads(message.payload)
        except (ValueError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict):
            value = body.get("id")
            if isinstance(value, str) and value:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return str(value)
    return "sha256:" + hashlib.sha256(message.payload).hexdigest()[:32]


class Dispatcher:
    """Deal the items published on ``topic`` to the nodes of ``group`` by credit.

    :meth:`run` blocks until ``stop`` is set; :meth:`start` runs it on a
    thread and :meth:`close` ends it. With ``results`` every node's result is
    published there as ``{"id", "seq", "node", "outcome", "result", "late"}``;
    with ``ordered`` in the producer's order, through a reorder window of
    ``reorder_window`` items (what comes after the window moved on is
    published with ``late: true`` and counted). ``stats`` is what it counted.

    >>> d = Dispatcher("mqtt://127.0.0.1:1", "digits", "digits/in", window=2)
    >>> d.stats.state, d.stats.topic, str(d.topics.dispatcher)
    ('starting', 'digits/in', 'fogline/cluster/digits/dispatcher')
    """

    def __init__(
        self,
        url: MqttUrl | str,
        group: str,
        topic: str,
        *,
        window: int = 2,
        results: str | None = None,
        ordered: bool = False,
        reorder_window: int = 256,
        item_timeout: float = 30.0,
        presence_timeout: float = 10.0,
        client_id: str | None = None,
        session_expiry: int = 7 * 24 * 3600,
        keepalive: int = 5,
    ) -> None:
        self.url = to_url(url)
        try:
            self.topics = ClusterTopics(group)
            self.topic = TopicFilter(topic)
            self.results = None if results is None else Topic(results)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if self.topic.group is not None or self.topic.value.startswith(self.topics.base + "/"):
            raise ConfigError(
                f"the producer's topic {topic!r} must be a plain topic (no $share), "
                f"outside {self.topics.base}/"
            )
        if window < 1 or reorder_window < 1 or item_timeout <= 0 or presence_timeout <= 0:
            raise ConfigError("window, reorder window and timeouts must be positive")
        if ordered and self.results is None:
            raise ConfigError("--ordered needs --results: the topic the ordered results go to")
        self.group = group
        self.window = window
        self.ordered = ordered
        self.item_timeout = item_timeout
        self.presence_timeout = presence_timeout
        self.client_id = client_id or f"fogline-dispatch-{group}"
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.error: str | None = None
        self.counts = {
            k: 0
            for k in (
                "dispatched", "completed", "redispatched", "duplicates", "repeated", "corrupt",
                "failed", "timeouts", "malformed",
            )
        }  # fmt: skip
        self.nodes: dict[str, _Node] = {}
        self._state = "starting"
        self._news = False  # a node left: publish the stats now, not in up to 2 s
        self._warned_reuse = False
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._pending: deque[_Entry] = deque()
        self._entries: dict[int, _Entry] = {}
        self._by_id: dict[str, int] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._next_seq = 0
        self._reorder: ReorderWindow[dict[str, Any]] = ReorderWindow(reorder_window)
        self._control: paho.Client | None = None
        self._inputs: paho.Client | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards the counters and node table that stats reads

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Dispatcher:
        """Run :meth:`run` on a thread of its own; :meth:`close` stops it."""
        self._thread = threading.Thread(
            target=self.run, args=(self._stop,), name=f"fogline-dispatch-{self.group}", daemon=True
        )
        self._thread.start()
        return self

    def wait_ready(self, timeout: float) -> bool:
        """Whether it subscribed to the producer's topic within ``timeout`` seconds."""
        return self._subscribed.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Dispatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, stop: threading.Event) -> None:
        """Dispatch until ``stop`` is set; items not done stay unacknowledged at the broker.

        Two sessions: the producer's topic on a persistent one with manual
        acknowledgement, presence and ``done`` on a clean one. On one session
        the broker's in-flight limit (Mosquitto: 20 unacknowledged messages)
        would hold back the ``done`` messages behind inputs waiting for them.
        """
        control = new_client(self.url, client_id=f"{self.client_id}-control")
        control.will_set(
            str(self.topics.dispatcher), self._stats("offline").payload(), qos=1, retain=True
        )
        control.on_connect = self._on_control_connect
        control.on_disconnect = self._on_control_disconnect
        control.on_message = self._on_control_message
        control.reconnect_delay_set(min_delay=1, max_delay=4)
        control.connect_async(self.url.host, self.url.port, self.keepalive, clean_start=True)
        inputs = new_client(self.url, client_id=self.client_id, manual_ack=True)
        inputs.on_connect = self._on_input_connect
        inputs.on_subscribe = self._on_subscribe
        inputs.on_message = self._on_input_message
        inputs.reconnect_delay_set(min_delay=1, max_delay=4)
        inputs.connect_async(
            self.url.host,
            self.url.port,
            self.keepalive,
            clean_start=False,
            properties=connect_properties(self.session_expiry),
        )
        self._control, self._inputs = control, inputs
        control.loop_start()
        # Nodes first: their retained presence arrives before the first input is dealt.
        if self._connected.wait(5.0):
            time.sleep(0.2)
        inputs.loop_start()
        next_stats = next_scan = time.monotonic()
        said = self._state
        try:
            while not stop.is_set():
                try:
                    kind, value = self._events.get(timeout=0.05)
                except queue.Empty:
                    pass
                else:
                    self._handle(kind, value)
                    while True:  # take what else arrived before dealing
                        try:
                            kind, value = self._events.get_nowait()
                        except queue.Empty:
                            break
                        self._handle(kind, value)
                now = time.monotonic()
                if now >= next_scan:
                    next_scan = now + 0.25
                    self._scan(now)
                self._deal(now)
                if now >= next_stats or self._state != said or self._news:  # news: at once
                    next_stats, said, self._news = now + STATS_EVERY_S, self._state, False
                    self._publish(self.topics.dispatcher, self._stats().payload(), retain=True)
        finally:
            self._state = "stopped"
            inputs.disconnect()
            stop_loop(inputs)
            info = control.publish(
                str(self.topics.dispatcher), self._stats("offline").payload(), qos=1, retain=True
            )
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(2.0)
            control.disconnect()
            stop_loop(control)
            self._control = self._inputs = None

    # --- what it counted ----------------------------------------------------------------

    @property
    def stats(self) -> DispatcherStats:
        return self._stats()

    def _stats(self, state: str | None = None) -> DispatcherStats:
        with self._lock:
            c = self.counts
            return DispatcherStats(
                state=state or self._state,
                topic=self.topic.value,
                window=self.window,
                queued=len(self._pending),
                dispatched=c["dispatched"],
                completed=c["completed"],
                redispatched=c["redispatched"],
                duplicates=c["duplicates"],
                late=self._reorder.late,
                repeated=c["repeated"],
                corrupt=c["corrupt"],
                failed=c["failed"],
                outstanding=len(self._entries) - len(self._pending),
                at=round(time.time(), 3),
                nodes={
                    name: {
                        "completed": n.completed,
                        "outstanding": len(n.outstanding),
                        "redispatched": n.redispatched,
                    }
                    for name, n in self.nodes.items()
                },
            )

    # --- paho's thread: queue what arrived ------------------------------------------------

    def _on_control_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if self._refused(reason):
            return
        client.subscribe([(self.topics.all_nodes.value, 1), (self.topics.all_done.value, 1)])
        self._connected.set()

    def _on_control_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connected.clear()

    def _on_input_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if not self._refused(reason):
            client.subscribe(self.topic.value, qos=1)

    def _refused(self, reason: ReasonCode) -> bool:
        refused, error = connect_refusal(self.url, reason)
        self.error = error or self.error
        return refused

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        error = subscription_refusal(self.url, self.topic, reasons)
        if error is not None:
            self.error = error
        else:
            self._state = "running"
            self._subscribed.set()

    def _on_input_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        try:
            msg = received(message)
        except ValueError:
            client.ack(message.mid, message.qos)
            return
        self._events.put(("input", (msg, message.mid, message.qos)))  # acked once done

    def _on_control_message(
        self, client: paho.Client, userdata: Any, message: paho.MQTTMessage
    ) -> None:
        try:
            msg = received(message)
        except ValueError:
            return
        node = self.topics.node_of(msg.topic)
        if node is not None:
            kind = "done" if msg.topic.levels[-2] == "done" else "presence"
            self._events.put((kind, (node, msg.payload)))

    # --- the dispatcher's thread ----------------------------------------------------------

    def _handle(self, kind: str, value: Any) -> None:
        if kind == "input":
            self._input(*value)
        elif kind == "done":
            self._done(*value)
        else:
            self._presence(*value)

    def _input(self, msg: MqttMessage, mid: int, qos: int) -> None:
        id_ = item_id(msg)
        if id_ in self._recent:  # the broker delivered a finished item again, or an id was reused
            self._ack([(mid, qos)])
            with self._lock:
                self.counts["duplicates"] += 1
                self.counts["repeated"] += 1
            if not self._warned_reuse:
                self._warned_reuse = True
                log.warning(
                    "item %s was done already: acknowledged, not dispatched again (counted in "
                    "repeated): a redelivery, or a producer that reuses ids (a data set fed "
                    "again with the same ids), whose new items are then not processed",
                    id_,
                )
            return
        seq = self._by_id.get(id_)
        if seq is not None:  # a copy of an item in progress (redelivered after a reconnect)
            self._entries[seq].mids.append((mid, qos))
            return
        entry = _Entry(self._next_seq, id_, msg.payload, [(mid, qos)], arrived=time.monotonic())
        self._next_seq += 1
        with self._lock:
            self._entries[entry.seq] = entry
            self._by_id[id_] = entry.seq
            self._pending.append(entry)

    def _presence(self, name: str, payload: bytes) -> None:
        if not payload:  # a cleared retained presence
            self._gone(name, "its presence was cleared")
            with self._lock:
                self.nodes.pop(name, None)
            return
        try:
            presence = Presence.from_payload(payload)
        except ValueError as exc:
            self.counts["malformed"] += 1
            log.warning("node %s: %s", name, exc)
            return
        node = self.nodes.get(name)
        now = time.monotonic()
        if node is None:
            with self._lock:
                self.nodes[name] = _Node(presence, now)
            if presence.state == "online":
                log.info("node %s joined (window %d)", name, presence.window)
            return
        was = node.presence.state
        node.presence, node.seen = presence, now
        if presence.state == "offline" and was != "offline":
            self._gone(name, "it went offline")

    def _gone(self, name: str, why: str) -> None:
        """Give node ``name``'s outstanding items to the others (first in line, in order)."""
        node = self.nodes.get(name)
        if node is None or not node.outstanding:
            return
        back = sorted(node.outstanding, reverse=True)
        node.outstanding.clear()
        with self._lock:
            for seq in back:
                entry = self._entries.get(seq)
                if entry is not None and entry.node == name:
                    entry.node = None
                    self._pending.appendleft(entry)
                    self.counts["redispatched"] += 1
                    node.redispatched += 1
        self._news = True
        log.warning("node %s: %s; %d item(s) re-dispatched", name, why, len(back))

    def _done(self, name: str, payload: bytes) -> None:
        try:
            done = Done.from_payload(payload)
        except ValueError as exc:
            self.counts["malformed"] += 1
            log.warning("node %s: %s", name, exc)
            return
        node = self.nodes.get(name)
        if node is not None:
            node.outstanding.discard(done.seq)
        entry = self._entries.get(done.seq)
        if entry is None or entry.id != done.id:
            with self._lock:
                self.counts["duplicates"] += 1  # it was completed by another node already
            return
        if entry.node is not None and entry.node != name and entry.node in self.nodes:
            self.nodes[entry.node].outstanding.discard(entry.seq)
        if node is not None and entry.node == name:
            node.learn(entry.sent_at, time.monotonic())
        with self._lock:
            del self._entries[entry.seq]
            del self._by_id[entry.id]
            if entry.node is None:  # waiting for re-dispatch, but its first node finished it
                with contextlib.suppress(ValueError):
                    self._pending.remove(entry)
            self.counts["completed"] += 1
            if node is not None:
                node.completed += 1
            if done.outcome in ("corrupt", "failed"):
                self.counts[done.outcome] += 1
        self._recent[entry.id] = None
        while len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        self._ack(entry.mids)
        self._result(entry, name, done)

    def _result(self, entry: _Entry, node: str, done: Done) -> None:
        if self.results is None:
            return
        body = {
            "id": entry.id,
            "seq": entry.seq,
            "node": node,
            "outcome": done.outcome,
            "result": done.result,
        }
        released: list[Released[dict[str, Any]]]
        if not self.ordered:
            released = [Released(entry.seq, body)]
        elif done.result is None and done.outcome in ("corrupt", "failed"):
            released = self._reorder.skip(entry.seq)
        else:
            released = self._reorder.push(entry.seq, body)
        for out in released:
            self._publish(self.results, encode({**out.value, "late": out.late}))

    def _scan(self, now: float) -> None:
        """Nodes whose presence went stale, items outstanding too long: to other nodes."""
        for name, node in list(self.nodes.items()):
            if node.presence.state != "offline" and now - node.seen > self.presence_timeout:
                node.presence = Presence(name, "offline", at=node.presence.at)
                self._gone(name, f"no presence for {self.presence_timeout:g} s")
        for entry in list(self._entries.values()):
            if entry.node is not None and now - entry.sent_at > self.item_timeout:
                holder = self.nodes.get(entry.node)
                if holder is not None:
                    holder.outstanding.discard(entry.seq)
                    holder.redispatched += 1
                log.warning(
                    "item %s: not done by %s within %g s; re-dispatched",
                    entry.id,
                    entry.node,
                    self.item_timeout,
                )
                entry.node = None
                with self._lock:
                    self._pending.appendleft(entry)
                    self.counts["redispatched"] += 1
                    self.counts["timeouts"] += 1

    def _deal(self, now: float) -> None:
        """Give waiting items to the nodes expected to finish them soonest (:func:`pick`)."""
        while self._pending and self._connected.is_set():
            name = pick(self.nodes, self.window, len(self._pending), now - self._pending[0].arrived)
            if name is None:
                return
            node = self.nodes[name]
            with self._lock:
                entry = self._pending.popleft()
            props = (("item-id", entry.id), ("seq", str(entry.seq)))
            message = MqttMessage(self.topics.work(name), entry.payload, 1, False, props)
            if not self._publish_message(message):
                with self._lock:
                    self._pending.appendleft(entry)
                return
            entry.node, entry.sent_at = name, now
            node.outstanding.add(entry.seq)
            node.given_at = now
            with self._lock:
                self.counts["dispatched"] += 1

    def _ack(self, mids: list[tuple[int, int]]) -> None:
        client = self._inputs
        if client is None:
            return
        for mid, qos in mids:
            if qos > 0:
                client.ack(mid, qos)

    def _publish(self, topic: Topic, payload: bytes, *, retain: bool = False) -> bool:
        return self._publish_message(MqttMessage(topic, payload, 1, retain))

    def _publish_message(self, message: MqttMessage) -> bool:
        client = self._control
        return client is not None and publish_queued(client, message)
