"""The edge clusters the controller hears about, for ``/api/clusters`` and the dashboard.

Cluster nodes (``fogline run`` with an ``mqtt`` source that has ``share:``)
announce themselves retained on ``fogline/cluster/<group>/nodes/<node>`` and
a dispatcher its counts on ``fogline/cluster/<group>/dispatcher``
(:mod:`fogline.cluster`). The controller subscribes to both, whatever its
fleet's prefix, and keeps the latest of each in memory: they are retained,
so the broker hands them over again after a reconnect or a restart, and
nothing here needs the registry. A node that runs under a fleet agent names
its device (the agent's ``FOGLINE_DEVICE_ID``); the API links it to that
device when the registry knows it.

The clusters' broker may be another than the fleet's: a site's data
broker, where nodes log in with users of their own (on the fleet's broker
a node cannot use its device's credentials: the release's pipeline file
is the same on every device, and with ``use_username_as_clientid`` it
would take over its agent's session). :class:`ClusterFeed` is the
controller's second session there (``fogline controller --cluster-broker
URL``), feeding the same :class:`Clusters`.

A node that says ``online`` but has not been heard for ``silent_after``
seconds (it refreshes its presence every second) is shown ``silent``: hung, or
cut off from the broker without its last will yet. The time is the
controller's clock when the message arrived, not the node's ``at``, so a
device's clock that is off does not make it look silent.

Concurrency: :meth:`Clusters.receive` runs on the controller's worker
thread, :meth:`Clusters.groups` on the API's; one lock guards the table.

>>> from fogline.cluster import Presence
>>> clusters = Clusters()
>>> up = Presence("n1", "online", 2, took=9, finished=8, in_flight=1, lag_ms=4.0, device="cam-1")
>>> clusters.receive("fogline/cluster/line/nodes/n1", up.payload(), now=100.0)
True
>>> [(g["group"], n["node"], n["state"], n["device"]) for g in clusters.groups(now=101.0)
...  for n in g["nodes"]]
[('line', 'n1', 'online', 'cam-1')]
>>> clusters.groups(now=200.0)[0]["nodes"][0]["state"]
'silent'
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from fogline.cluster import DispatcherStats, Presence
from fogline.errors import ConfigError
from fogline.transport.mqtt import MqttUrl, new_client, received, stop_loop, to_url

log = logging.getLogger("fogline.controller")

#: What the controller subscribes to: every group's nodes and dispatcher.
CLUSTER_FILTERS = ("fogline/cluster/+/nodes/+", "fogline/cluster/+/dispatcher")
_PREFIX = ("fogline", "cluster")


@dataclass
class _Group:
    nodes: dict[str, tuple[Presence, float]] = field(default_factory=dict)
    dispatcher: tuple[DispatcherStats, float] | None = None


class Clusters:
    """The latest presence of every cluster node and the stats of every dispatcher, by group."""

    def __init__(self, silent_after: float = 10.0) -> None:
        self.silent_after = silent_after
        self.rejected = 0
        self._groups: dict[str, _Group] = {}
        self._lock = threading.Lock()

    def receive(self, topic: str, payload: bytes, now: float | None = None) -> bool:
        """Take one message; False when ``topic`` is no cluster's (the caller handles it).

        An empty payload (a cleared retained message) forgets the node or the
        dispatcher; a malformed one is counted in ``rejected`` and logged.
        """
        parts = topic.split("/")
        if tuple(parts[:2]) != _PREFIX or len(parts) not in (4, 5):
            return False
        group, kind, node = parts[2], parts[3], parts[4] if len(parts) == 5 else None
        if not group or (kind, node is None) not in (("nodes", False), ("dispatcher", True)):
            return False
        now = time.time() if now is None else now
        try:
            if kind == "nodes":
                assert node is not None
                presence = None if not payload else Presence.from_payload(payload)
                if presence is not None and presence.node != node:
                    raise ValueError(f"the body names node {presence.node!r}, the topic {node!r}")
                with self._lock:
                    self._update_node(group, node, presence, now)
            else:
                stats = None if not payload else DispatcherStats.from_payload(payload)
                with self._lock:
                    entry = self._groups.setdefault(group, _Group())
                    entry.dispatcher = None if stats is None else (stats, now)
                    self._forget_empty(group)
        except ValueError as exc:
            self.rejected += 1
            log.warning("dropped a cluster message on %s: %s", topic, exc)
        return True

    def _update_node(self, group: str, node: str, presence: Presence | None, now: float) -> None:
        entry = self._groups.setdefault(group, _Group())
        if presence is None:
            entry.nodes.pop(node, None)
        else:
            entry.nodes[node] = (presence, now)
        self._forget_empty(group)

    def _forget_empty(self, group: str) -> None:
        entry = self._groups[group]
        if not entry.nodes and entry.dispatcher is None:
            del self._groups[group]

    def devices(self) -> set[str]:
        """Every fleet device a node names."""
        with self._lock:
            return {
                p.device
                for g in self._groups.values()
                for p, _ in g.nodes.values()
                if p.device is not None
            }

    def groups(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every group, by name: its nodes (by name) with ``heard`` and ``silent_s``, its dispatcher.

        A node's ``state`` is its own, except ``silent`` for an online or
        draining node not heard for ``silent_after`` seconds.
        """
        now = time.time() if now is None else now
        with self._lock:
            listed = []
            for name in sorted(self._groups):
                entry = self._groups[name]
                nodes = []
                for node in sorted(entry.nodes):
                    presence, heard = entry.nodes[node]
                    body = asdict(presence)
                    quiet = now - heard
                    if presence.state != "offline" and quiet > self.silent_after:
                        body["state"] = "silent"
                    nodes.append({**body, "heard": heard, "silent_s": round(max(0.0, quiet), 3)})
                dispatcher = None
                if entry.dispatcher is not None:
                    stats, heard = entry.dispatcher
                    dispatcher = {**asdict(stats), "heard": heard}
                    if (
                        stats.state not in ("stopped", "offline")
                        and now - heard > self.silent_after
                    ):
                        dispatcher["state"] = "silent"
                listed.append({"group": name, "nodes": nodes, "dispatcher": dispatcher})
            return listed


class ClusterFeed:
    """The controller's session on the clusters' own broker: what it hears goes to ``clusters``.

    Reconnects by itself (paho); the retained presence and stats arrive again
    on every (re)subscription, so nothing needs to be kept across a gap.
    """

    def __init__(self, url: MqttUrl | str, clusters: Clusters, client_id: str) -> None:
        self.url = to_url(url)
        self.clusters = clusters
        self.connected = threading.Event()
        self._client = new_client(self.url, client_id=client_id, timeout=30.0)
        self._client.reconnect_delay_set(1, 10)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *args: self.connected.clear()
        self._client.on_message = self._on_message

    def start(self) -> ClusterFeed:
        try:
            self._client.connect_async(self.url.host, self.url.port, keepalive=30)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cluster broker {self.url}: {exc}") from exc
        self._client.loop_start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
        stop_loop(self._client)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("cluster broker %s refused the controller: %s", self.url, reason)
            return
        client.subscribe([(topic, 1) for topic in CLUSTER_FILTERS])
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            got = received(message)
        except ValueError:
            return
        self.clusters.receive(got.topic.value, got.payload)
