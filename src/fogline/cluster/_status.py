"""What a cluster says about itself: the nodes' retained presence and the dispatcher's stats.

And :func:`forget`, which clears the retained presence of nodes that left for good.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from fogline.cluster._topics import ClusterTopics, DispatcherStats, Presence
from fogline.errors import ConfigError, Refused, Unreachable
from fogline.transport.mqtt import (
    MqttMessage,
    MqttPublisher,
    MqttUrl,
    new_client,
    received,
    stop_loop,
    to_url,
)

_QUIET_S = 0.3  # no retained message for this long: all of them arrived


@dataclass(frozen=True)
class ClusterStatus:
    """The nodes of a group (by name) and the dispatcher's stats (None: no dispatcher ran)."""

    group: str
    nodes: tuple[Presence, ...]
    dispatcher: DispatcherStats | None
    malformed: int = 0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "group": self.group,
            "nodes": [asdict(n) for n in self.nodes],
            "dispatcher": None if self.dispatcher is None else asdict(self.dispatcher),
            "malformed": self.malformed,
        }


def read_status(url: MqttUrl | str, group: str, *, timeout: float = 5.0) -> ClusterStatus:
    """Read the retained presence of ``group``'s nodes and its dispatcher's stats.

    It returns at the first live (not retained) message, after 0.3 s without
    a retained one, or ``timeout`` seconds after the subscription at most.
    Raises :class:`~fogline.errors.Unreachable` when the broker does not
    answer within ``timeout`` seconds, :class:`~fogline.errors.Refused` when it
    refuses the connection or subscription.
    """
    url = to_url(url)
    topics = ClusterTopics(group)
    nodes: dict[str, Presence] = {}
    stats: list[DispatcherStats] = []
    malformed = [0]
    subscribed = threading.Event()
    refused: list[str] = []
    last = [time.monotonic()]
    live = threading.Event()

    def on_connect(client: paho.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        if reason.is_failure:
            refused.append(f"{url} refused the connection: {reason}")
            subscribed.set()
            return
        client.subscribe([(topics.all_nodes.value, 1), (str(topics.dispatcher), 1)])

    def on_subscribe(
        client: paho.Client, u: Any, mid: int, reasons: list[ReasonCode], p: Any
    ) -> None:
        bad = [r for r in reasons if r.is_failure]
        if bad:
            refused.append(f"{url} refused the subscription to {topics.base}: {bad[0]}")
        last[0] = time.monotonic()
        subscribed.set()

    def on_message(client: paho.Client, u: Any, message: paho.MQTTMessage) -> None:
        if message.retain:
            last[0] = time.monotonic()
        else:  # a live refresh: the retained ones, sent right after the SUBACK, are all in
            live.set()
        try:
            msg = received(message)
            if not msg.payload:
                return
            if msg.topic == topics.dispatcher:
                stats.append(DispatcherStats.from_payload(msg.payload))
            else:
                presence = Presence.from_payload(msg.payload)
                nodes[presence.node] = presence
        except ValueError:
            malformed[0] += 1

    client = new_client(url, timeout=timeout, reconnect=False)
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    try:
        client.connect_async(url.host, url.port, 30)
        client.loop_start()
        if not subscribed.wait(timeout):
            raise Unreachable(f"{url}: no answer within {timeout:g} s")
        if refused:
            raise Refused(refused[0])
        # Retained messages follow the SUBACK at once: wait until they stop coming, a live
        # (not retained) one arrives, or `timeout` is up. Nodes refresh presence every
        # second, so with many nodes live messages never leave a quiet gap.
        deadline = time.monotonic() + timeout
        while time.monotonic() - last[0] < _QUIET_S and time.monotonic() < deadline:
            if live.wait(0.05):
                break
    finally:
        client.disconnect()
        stop_loop(client)
    return ClusterStatus(
        group,
        tuple(sorted(nodes.values(), key=lambda n: n.node)),
        stats[-1] if stats else None,
        malformed[0],
    )


def forget(
    url: MqttUrl | str, group: str, nodes: Sequence[str] = (), *, timeout: float = 5.0
) -> list[str]:
    """Clear the retained presence of ``nodes`` (default: every offline node); their names.

    A node that is online is never forgotten: its next refresh would bring it
    back, and forgetting it would make the dispatcher re-dispatch its items.
    """
    status = read_status(url, group, timeout=timeout)
    known = {n.node: n for n in status.nodes}
    if nodes:
        unknown = sorted(set(nodes) - set(known))
        if unknown:
            raise ConfigError(f"group {group} has no node {', '.join(unknown)}")
        online = sorted(n for n in nodes if known[n].state != "offline")
        if online:
            raise ConfigError(f"{', '.join(online)}: not offline; stop the node first")
        chosen = sorted(nodes)
    else:
        chosen = [name for name, n in sorted(known.items()) if n.state == "offline"]
    topics = ClusterTopics(group)
    with MqttPublisher(url, timeout=timeout) as publisher:
        publisher.publish(*(MqttMessage(topics.presence(n), b"", 1, True) for n in chosen))
    return chosen
