"""The ``zmq`` sink: each result as JSON on a PUSH or PUB socket, to a neighbour, no broker.

``push`` hands each result to one of the connected PULL peers (work for a
neighbour; with no peer, ``write`` waits up to ``timeout`` and then fails,
counted by the runner as not written); ``pub`` broadcasts it as the two
frames ``[topic, json]`` to every subscriber whose prefix matches (a
subscriber that is not there misses it: a live feed, never blocking). The
topic is a template filled from the result, like the ``mqtt`` sink's. The
payload is ``Result.to_dict()``, the mqtt sink's JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from fogline.errors import ItemError
from fogline.pipeline._base import SinkSpec
from fogline.pipeline._mqtt import result_topic
from fogline.pipeline._zmq import CurveSpec, probe_endpoint, resolve_bind
from fogline.store import Result
from fogline.transport.mqtt import TopicTemplate, TopicTemplateField, json_payload
from fogline.transport.zmq import ZmqEndpointField


class ZmqSink:
    """Send each result as JSON; :class:`~fogline.errors.TransportError` when no peer takes it.

    A PUSH peer that refuses the CURVE handshake makes ``write`` raise
    :class:`~fogline.errors.Refused` naming why; with no peer at all,
    :class:`~fogline.errors.TimedOut` after the spec's ``timeout``.
    """

    def __init__(self, spec: ZmqSinkSpec) -> None:
        from fogline.transport.zmq import ZmqSocket  # loads pyzmq (the zmq extra)

        self.spec = spec
        self.socket = ZmqSocket(
            spec.pattern,
            spec.endpoint,
            bind=spec.binds,
            curve=spec.curve.curve() if spec.curve is not None else None,
            hwm=spec.hwm,
            linger=spec.linger,
            send_timeout=spec.timeout,
        )

    def write(self, results: Sequence[Result]) -> None:
        bad: list[ItemError] = []
        for result in results:
            try:
                payload = json_payload(result.to_dict())
                frames = [payload]
                if self.spec.pattern == "pub":
                    frames.insert(0, str(result_topic(self.spec.topic, result)).encode())
            except (ValueError, TypeError) as exc:
                where = result.position or f"{result.source}#{result.sequence}"
                bad.append(ItemError(str(exc), where))
                continue
            self.socket.send(frames)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise ItemError(f"not sent: {bad[0]}{more}", bad[0].position)

    def close(self) -> None:
        self.socket.close()


class ZmqSinkSpec(SinkSpec):
    """``type: zmq`` sink: ``endpoint``, ``pattern`` (push|pub), ``bind``, ``topic``, ``curve``.

    ``bind`` defaults to false for ``push`` (it connects to the worker that
    binds) and true for ``pub`` (subscribers connect to the publisher).
    ``topic`` (pub only) is a template filled from each result, like the
    mqtt sink's; ``hwm`` bounds the messages queued per peer, ``linger`` how
    long closing waits to deliver them, ``timeout`` how long a PUSH waits for
    a peer.

    >>> spec = ZmqSinkSpec(endpoint="tcp://127.0.0.1:5557")
    >>> spec.binds, spec.pattern
    (False, 'push')
    >>> spec = ZmqSinkSpec(endpoint="tcp://*:5558", pattern="pub", topic="cam/{source}/{label}")
    >>> spec.binds, sorted(spec.fields())
    (True, ['label', 'source'])
    """

    type: Literal["zmq"] = "zmq"
    endpoint: ZmqEndpointField
    pattern: Literal["push", "pub"] = "push"
    bind: bool | None = None
    topic: TopicTemplateField = TopicTemplate("fogline/{source}/results")
    hwm: PositiveInt = 1000
    linger: NonNegativeFloat = 1.0
    timeout: PositiveFloat = 10.0
    curve: CurveSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ZmqSinkSpec:
        if self.pattern != "pub" and "topic" in self.model_fields_set:
            raise ValueError("topic applies to pattern: pub only")
        resolve_bind(self.endpoint, self.bind, self.pattern == "pub")
        return self

    @property
    def binds(self) -> bool:
        return resolve_bind(self.endpoint, self.bind, self.pattern == "pub")

    def fields(self) -> set[str]:
        """The result fields the topic template uses (none for push)."""
        return set(self.topic.fields) if self.pattern == "pub" else set()

    def probe(self) -> None:
        probe_endpoint(self.endpoint, self.binds)

    def build(self) -> ZmqSink:
        return ZmqSink(self)
