"""OPC UA as a source: a subscription to node values, one item per data-change notification.

Concurrency: asyncua is asyncio-only, so :meth:`OpcuaSource.read` owns a
private event loop on the source's thread and runs it in short slices
(``POLL_S``) between items; the subscription handler collects values while
the loop runs. Each publish the server sends (a set of data changes) becomes
one item: the latest value of every node, in the order of ``nodes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from fogline.errors import ConfigError, TransportError
from fogline.pipeline._base import ArraySpec, SourceSpec
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._optional import optional
from fogline.pipeline.sources._shown import shown_url

if TYPE_CHECKING:
    from asyncua.client.client import Client
    from asyncua.common.node import Node

#: How long one slice of the event loop runs before ``stop`` is looked at again.
POLL_S = 0.1
#: Connect and request timeout, seconds.
TIMEOUT_S = 4.0


class OpcuaSpec(SourceSpec):
    """Values of OPC UA ``nodes`` on ``endpoint``, sampled every ``interval_ms``, as float32.

    A live feed: its queue defaults to ``policy: drop-oldest``. Nodes are
    written as OPC UA node ids (``"ns=2;i=2"``, ``"ns=3;s=Motor.Speed"``).

    >>> spec = OpcuaSpec(endpoint="opc.tcp://plc:4840", nodes=["ns=2;i=2", "ns=2;i=3"])
    >>> spec.output().describe(), spec.policy
    ('(2,) float32', 'drop-oldest')
    """

    type: Literal["opcua"] = "opcua"
    endpoint: str
    nodes: list[str] = Field(min_length=1)
    interval_ms: float = Field(100.0, gt=0)

    live: ClassVar[bool] = True

    @field_validator("endpoint")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError(f"endpoint {value!r}: write it opc.tcp://host:port")
        return value

    @field_validator("nodes")
    @classmethod
    def _node_ids(cls, value: list[str]) -> list[str]:
        optional("asyncua")
        from asyncua import ua
        from asyncua.ua.uaerrors import UaError

        for text in value:
            try:
                ua.NodeId.from_string(text)
            except (ValueError, UaError, KeyError, IndexError) as exc:
                raise ValueError(f"node {text!r} is not an OPC UA node id: {exc}") from None
        return value

    @model_validator(mode="after")
    def _live_policy(self) -> OpcuaSpec:
        if "policy" not in self.model_fields_set:
            object.__setattr__(self, "policy", "drop-oldest")  # frozen model: set once, here
        return self

    def output(self) -> ArraySpec:
        return ArraySpec((len(self.nodes),), "float32")

    def build(self, name: str) -> OpcuaSource:
        return OpcuaSource(name, self.endpoint, self.nodes, self.interval_ms)


class _Collector:
    """The subscription handler: keeps each node's latest value, queues one snapshot per publish.

    asyncua calls ``datachange_notification`` once per node, each from a task
    it starts for that notification; all the tasks of one publish are started
    before any runs, so a flush scheduled with ``call_soon`` by the first runs
    after the last: one snapshot per publish.
    """

    def __init__(self, nodes: list[str]) -> None:
        self.index = {text: i for i, text in enumerate(nodes)}
        self.values = np.full(len(nodes), np.nan, dtype=np.float32)
        self.ready: deque[np.ndarray | str] = deque()
        self.arrived = asyncio.Event()
        self._problems: list[str] = []
        self._flushing = False

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        key = node.nodeid.to_string()
        try:
            self.values[self.index[key]] = float(val)
        except (TypeError, ValueError, KeyError):
            self.values[self.index.get(key, 0)] = np.nan
            self._problems.append(f"{key}: {val!r} is not a number")
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        self.ready.append("; ".join(self._problems) if self._problems else self.values.copy())
        self._problems = []
        self.arrived.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()


class OpcuaSource:
    """Subscribes to ``nodes`` on ``endpoint``; ends when ``stop`` is set."""

    def __init__(self, name: str, endpoint: str, nodes: list[str], interval_ms: float) -> None:
        optional("asyncua")
        from asyncua import ua

        self.name = name
        self._endpoint = endpoint
        self._where = shown_url(endpoint)  # in positions and messages: no password
        self._nodes = [ua.NodeId.from_string(n).to_string() for n in nodes]
        self._interval_ms = interval_ms

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        from asyncua.client.client import Client
        from asyncua.client.ua_client import UaClientState

        loop = asyncio.new_event_loop()
        client = Client(self._endpoint, timeout=TIMEOUT_S)
        try:
            collector = loop.run_until_complete(self._subscribe(client))
            sequence = 0
            while not stop.is_set():
                loop.run_until_complete(collector.wait(POLL_S))
                while collector.ready and not stop.is_set():
                    entry = collector.ready.popleft()
                    if isinstance(entry, str):
                        yield Corrupt(self.name, self._where, entry)
                        continue
                    meta = {"position": f"{self._where}#{sequence}"}
                    yield Item(self.name, sequence, time.time(), entry, meta)
                    sequence += 1
                if client.state is UaClientState.DISCONNECTED:
                    raise TransportError(f"{self._where}: the OPC UA server closed the connection")
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.wait_for(client.disconnect(), TIMEOUT_S))
            loop.close()

    async def _subscribe(self, client: Client) -> _Collector:
        from asyncua import ua
        from asyncua.ua.uaerrors import UaError

        try:
            await client.connect()
        except (OSError, TimeoutError, UaError) as exc:
            raise ConfigError(f"cannot connect to OPC UA server {self._where}: {exc}") from exc
        collector = _Collector(self._nodes)
        subscription = await client.create_subscription(self._interval_ms, collector)
        nodes = [client.get_node(n) for n in self._nodes]
        handles = await subscription.subscribe_data_change(nodes)
        bad = [
            f"{n} ({h.name})"
            for n, h in zip(self._nodes, handles, strict=True)
            if isinstance(h, ua.StatusCode)
        ]
        if bad:
            raise ConfigError(f"{self._where}: cannot subscribe to node(s) {', '.join(bad)}")
        return collector
