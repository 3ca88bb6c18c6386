"""A node's side of a cluster: presence with a last will, the work it receives, credits back.

Concurrency: paho's thread receives work and queues it; the pipeline's source
thread takes it with :meth:`ClusterNode.get`; the pipeline's store writer
calls :meth:`ClusterNode.settled` once results are durable; a small thread
refreshes the presence. Counters and the in-flight table sit behind one lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fogline.cluster._topics import ClusterTopics, Done, NodeState, Outcome, Presence, check_level
from fogline.errors import ConfigError
from fogline.transport.mqtt import (
    MqttMessage,
    MqttUrl,
    TopicFilter,
    connect_refusal,
    new_client,
    publish_queued,
    received,
    stop_loop,
    subscription_refusal,
    to_url,
)

log = logging.getLogger(__name__)

Dispatch = Literal["credit", "broker"]
#: How often a node's presence is published again while it runs (seconds).
PRESENCE_EVERY_S = 2.0
#: The keepalive of a cluster node's connection: the broker publishes its last will
#: about 1.5 times this long after the network to it is cut.
NODE_KEEPALIVE_S = 5
_HAND_ON_STEP_S = 0.1  # how often a full queue's wait looks whether the node stops
_RECENT_IDS = 4096  # item ids a node remembers having settled (a re-dispatched copy is not redone)


def default_node_name() -> str:
    """``<hostname>-<pid>``: unique per process on a host, one topic level."""
    host = os.uname().nodename.split(".")[0] or "node"
    for char in "/+#\x00":
        host = host.replace(char, "_")
    return f"{host}-{os.getpid()}"


def device_id() -> str | None:
    """The fleet device this node runs on (``FOGLINE_DEVICE_ID``, set by the fleet agent), or None."""
    return os.environ.get("FOGLINE_DEVICE_ID") or None


@dataclass(frozen=True)
class Work:
    """One item a node received: the producer's payload, its id and the dispatcher's ``seq``.

    ``id`` is None when the message named none (a malformed work message,
    or a ``dispatch: broker`` payload whose id is in the payload itself).
    """

    payload: bytes
    id: str | None
    seq: int | None
    topic: str
    mid: int = 0  # the broker's packet id: acknowledged once settled (dispatch: broker)
    qos: int = 0


class ClusterNode:
    """Be one node of ``group``: announce presence, receive work, give credits back.

    With ``dispatch="credit"`` it receives the items the dispatcher sends to
    ``work/<node>``, at most ``window`` at a time; :meth:`settled` returns a
    credit for each (a ``done`` message). With ``dispatch="broker"`` it
    subscribes ``$share/<group>/<topic>`` and the broker deals items
    round-robin (no credits; presence still says what it took): its MQTT 5
    Receive Maximum is ``window``, a message is acknowledged only once its
    item is settled, and a full queue of ``window`` items holds paho's thread
    (in short steps, until the node stops), so the broker keeps the rest
    (never dropped here). An item id
    it settled recently that arrives again is answered ``duplicate`` at once
    and not handed on; a copy of an item it holds is not handed on either.

    >>> node = ClusterNode("mqtt://127.0.0.1:1", "digits", node="a", window=2)
    >>> node.presence().state, node.presence().window, str(node.topics.work("a"))
    ('online', 2, 'fogline/cluster/digits/work/a')
    """

    def __init__(
        self,
        url: MqttUrl | str,
        group: str,
        *,
        node: str | None = None,
        window: int = 2,
        dispatch: Dispatch = "credit",
        topic: TopicFilter | str | None = None,
        pipeline: str = "",
        device: str | None = None,
        keepalive: int = NODE_KEEPALIVE_S,
        maxsize: int = 1024,
    ) -> None:
        self.url = to_url(url)
        try:
            self.topics = ClusterTopics(group)
            self.node = check_level(node or default_node_name(), "a node name")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if window < 1 or keepalive < 1:
            raise ConfigError(f"window and keepalive must be >= 1, got {window}, {keepalive}")
        if dispatch == "broker":
            if topic is None:
                raise ConfigError("dispatch: broker needs the topic the producer publishes to")
            shared = topic.value if isinstance(topic, TopicFilter) else topic
            self.subscription = TopicFilter(f"$share/{group}/{shared}")
        else:
            self.subscription = TopicFilter(str(self.topics.work(self.node)))
        self.group = group
        self.window = window
        self.dispatch: Dispatch = dispatch
        self.pipeline = pipeline
        self.device = device if device is not None else device_id()
        self.keepalive = keepalive
        self.error: str | None = None
        self.took = 0
        self.finished = 0
        self.duplicates = 0
        self.lag_ms: float | None = None
        self._state: NodeState = "online"
        self._lock = threading.Lock()
        self._queue: queue.Queue[Work] = queue.Queue(window if dispatch == "broker" else maxsize)
        self._in_flight: dict[str, tuple[list[int], float]] = {}  # id -> (seqs, arrived)
        self._acks: dict[str, list[tuple[int, int]]] = {}  # id -> (mid, qos) (dispatch: broker)
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._subscribed = threading.Event()
        self._stop = threading.Event()
        self._client: paho.Client | None = None
        self._refresher: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> ClusterNode:
        """Connect (its last will set to ``offline``), subscribe, and start refreshing presence."""
        broker = self.dispatch == "broker"
        client = new_client(
            self.url, client_id=f"fogline-node-{self.group}-{self.node}", manual_ack=broker
        )
        client.will_set(
            str(self.topics.presence(self.node)),
            self.presence("offline").payload(),
            qos=1,
            retain=True,
        )
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=1, max_delay=4)
        props = None
        if broker:  # the broker sends at most `window` unacknowledged items; it keeps the rest
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = self.window
        client.connect_async(
            self.url.host, self.url.port, self.keepalive, clean_start=True, properties=props
        )
        client.loop_start()
        self._client = client
        self._refresher = threading.Thread(
            target=self._refresh, name=f"fogline-node-{self.node}", daemon=True
        )
        self._refresher.start()
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the broker confirmed the subscription within ``timeout`` seconds."""
        return self._subscribed.wait(timeout)

    def close(self) -> None:
        """Say ``offline`` (retained), then disconnect; items not yet settled are re-dispatched."""
        self._stop.set()
        client = self._client
        if client is None:
            return
        self._client = None
        self._drain()  # nobody takes them now; unacknowledged, they stay the broker's
        if self._refresher is not None:
            self._refresher.join()
        info = client.publish(
            str(self.topics.presence(self.node)),
            self.presence("offline").payload(),
            qos=1,
            retain=True,
        )
        # Not connected: the broker publishes the last will instead.
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(2.0)
        client.disconnect()
        stop_loop(client)
        self._drain()  # one put that was under way when the node stopped

    def _drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def __enter__(self) -> ClusterNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- work in, credits out ------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Work | None:
        """The next item, or None when none came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def received(self, id_: str, work: Work | None = None) -> None:
        """Count an item a ``dispatch: broker`` node took (credit nodes count on arrival).

        ``work``'s message is acknowledged to the broker when ``id_`` is settled.
        """
        with self._lock:
            self.took += 1
            self._in_flight.setdefault(id_, ([], time.monotonic()))
            if work is not None and work.qos > 0:
                self._acks.setdefault(id_, []).append((work.mid, work.qos))

    def acknowledge(self, work: Work) -> None:
        """Acknowledge ``work``'s message now (``dispatch: broker``: it was counted corrupt)."""
        client = self._client
        if client is not None and work.qos > 0:
            client.ack(work.mid, work.qos)

    def settled(
        self,
        ids: Sequence[str],
        outcome: Outcome,
        results: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Items ``ids`` are settled: durable in the store (``processed``), or counted otherwise.

        Sends one ``done`` per dispatched copy (its credit comes back); ids
        this node did not take are ignored.
        """
        messages = []
        acks: list[tuple[int, int]] = []
        now = time.monotonic()
        with self._lock:
            for index, id_ in enumerate(ids):
                entry = self._in_flight.pop(id_, None)
                if entry is None:
                    continue
                seqs, arrived = entry
                self.finished += 1
                lag = (now - arrived) * 1000.0
                self.lag_ms = lag if self.lag_ms is None else 0.8 * self.lag_ms + 0.2 * lag
                self._remember(id_)
                acks.extend(self._acks.pop(id_, ()))
                result = None if results is None else results[index]
                for n, seq in enumerate(seqs):
                    body = Done(id_, seq, outcome if n == 0 else "duplicate", _plain(result))
                    messages.append(MqttMessage(self.topics.done(self.node), body.payload(), 1))
        client = self._client
        if client is not None and self.dispatch == "credit":
            for message in messages:
                publish_queued(client, message)
        if client is not None:  # dispatch: broker: the broker may now send the next one
            for mid, qos in acks:
                client.ack(mid, qos)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def presence(self, state: NodeState | None = None) -> Presence:
        """This node's presence now (``state`` overrides the current one)."""
        with self._lock:
            return Presence(
                node=self.node,
                state=state or self._state,
                window=self.window if self.dispatch == "credit" else 0,
                took=self.took,
                finished=self.finished,
                in_flight=len(self._in_flight),
                lag_ms=None if self.lag_ms is None else round(self.lag_ms, 3),
                at=round(time.time(), 3),
                pipeline=self.pipeline,
                device=self.device,
            )

    def drain(self) -> None:
        """Say ``draining``: the dispatcher sends nothing new; what this node holds it finishes."""
        with self._lock:
            self._state = "draining"
        self._publish_presence()

    # --- paho's thread ------------------------------------------------------------------

    def _remember(self, id_: str) -> None:
        self._recent[id_] = None
        self._recent.move_to_end(id_)
        while len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        refused, error = connect_refusal(self.url, reason)
        if refused:
            self.error = error or self.error
            return
        client.subscribe(self.subscription.value, qos=1)
        self._publish_presence(client)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        error = subscription_refusal(self.url, self.subscription, reasons)
        if error is not None:
            self.error = error
        else:
            self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            msg = received(message)
        except ValueError:
            return
        if self.dispatch == "broker":
            self._hand_on(Work(msg.payload, None, None, str(msg.topic), message.mid, message.qos))
            return
        props = dict(msg.user_properties)
        id_ = props.get("item-id") or None
        try:
            seq: int | None = int(props["seq"])
        except (KeyError, ValueError):
            seq = None
        if id_ is None or seq is None or seq < 0:
            self._put(Work(msg.payload, None, None, str(msg.topic)))  # counted corrupt
            return
        answer = None
        with self._lock:
            if id_ in self._recent:
                self.duplicates += 1
                answer = Done(id_, seq, "duplicate")
            elif id_ in self._in_flight:
                self.duplicates += 1
                self._in_flight[id_][0].append(seq)  # answered when the first copy settles
                return
            else:
                self.took += 1
                self._in_flight[id_] = ([seq], time.monotonic())
        if answer is not None:
            publish_queued(client, MqttMessage(self.topics.done(self.node), answer.payload(), 1))
            return
        if not self._put(Work(msg.payload, id_, seq, str(msg.topic))):
            with self._lock:
                self._in_flight.pop(id_, None)
                self.took -= 1

    def _hand_on(self, work: Work) -> None:
        """Queue a ``dispatch: broker`` item; hold paho's thread while the queue is full.

        Receive Maximum bounds what the broker sends unacknowledged, but Mosquitto
        2.0.11 sends one more per acknowledgement, so the queue of ``window`` items
        can be full: then paho's thread waits (the rest stays at the broker), in
        short steps, and gives up once the node stops, leaving that message
        unacknowledged, so :meth:`close` never waits on it. An unacknowledged
        message goes back to the group only as the broker's own rules say (with
        Mosquitto: when this session ends, to the members still subscribed).
        """
        while not self._stop.is_set():
            try:
                self._queue.put(work, timeout=_HAND_ON_STEP_S)
                return
            except queue.Full:
                continue
        log.info("node %s stopping: an item stays unacknowledged at the broker", self.node)

    def _put(self, work: Work) -> bool:
        try:
            self._queue.put_nowait(work)
        except queue.Full:  # only a dispatcher that ignores credits fills it
            log.warning("node %s: work queue full, an item waits for re-dispatch", self.node)
            return False
        return True

    def _publish_presence(self, client: paho.Client | None = None) -> None:
        client = client or self._client
        if client is not None:
            body = self.presence().payload()
            publish_queued(client, MqttMessage(self.topics.presence(self.node), body, 1, True))

    def _refresh(self) -> None:
        while not self._stop.wait(PRESENCE_EVERY_S / 2):
            self._publish_presence()


def _plain(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if result is None else dict(result)
