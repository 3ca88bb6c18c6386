"""The ``mqtt`` source: each message on a topic filter becomes one item.

``format: json`` takes a list of numbers, or an object ``{"data": [...]}``
(optionally with a string ``label`` and an ``id``, the item id late labels name), as a float32 vector, reshaped to
``shape`` when given. ``format: image`` takes an encoded PNG or JPEG and
yields RGB uint8 HWC. A payload that cannot be decoded becomes a
:class:`~fogline.pipeline._item.Corrupt` at ``"mqtt <topic>"`` and the
source goes on. A live feed: the queue policy defaults to ``drop-oldest``.

With ``share: GROUP`` the pipeline is one node of an edge cluster
(:mod:`fogline.cluster`): with ``dispatch: credit`` (the default) it takes
the items ``fogline cluster dispatch`` deals it, ``window`` at a time, and
returns a credit for each once its result is durable (:meth:`MqttSource.settled`,
called by the runner); with ``dispatch: broker`` it joins the broker's
shared subscription ``$share/GROUP/<topic>`` (plain round-robin).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, PositiveInt, field_validator, model_validator

from fogline.cluster import (
    NODE_KEEPALIVE_S,
    ClusterNode,
    Dispatch,
    Outcome,
    check_level,
    idempotency_key,
)
from fogline.errors import ConfigError
from fogline.pipeline._base import ArraySpec, SourceSpec
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._optional import optional
from fogline.store import Result
from fogline.transport.mqtt import BrokerUrl, MqttSubscriber, TopicFilterField


def decode_json(
    payload: bytes, shape: tuple[int, ...] | None
) -> tuple[np.ndarray, str | None, str | None]:
    """The float32 array, the label and the item id (or None) in a JSON payload.

    ``ValueError`` says why a payload cannot be read. The id is the object's
    ``"id"``, a string or an integer.

    >>> decode_json(b'{"data": [1, 2.5], "label": "ok", "id": 7}', None)
    (array([1. , 2.5], dtype=float32), 'ok', '7')
    >>> decode_json(b'[[1, 2], [3, 4]]', None)
    Traceback (most recent call last):
    ...
    ValueError: expected a flat list of numbers, got shape (2, 2) (set shape: to reshape)
    """
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    except RecursionError:  # json's C scanner has a depth limit; a payload can exceed it
        raise ValueError("JSON nested too deeply to read") from None
    label = id_ = None
    if isinstance(body, dict):
        if "data" not in body:
            raise ValueError('a JSON object needs a "data" list')
        label = body.get("label") if isinstance(body.get("label"), str) else None
        id_ = _id_of(body.get("id"))
        body = body["data"]
    if not isinstance(body, list):
        raise ValueError(f"expected a list of numbers, got {type(body).__name__}")
    try:
        array = np.asarray(body, dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: 1e999 as an integer
        raise ValueError(f"not a list of numbers: {exc}") from exc
    if shape is not None:
        if array.size != int(np.prod(shape)):
            raise ValueError(f"{array.size} values do not fill shape {shape}")
        return array.reshape(shape), label, id_
    if array.ndim != 1:
        raise ValueError(
            f"expected a flat list of numbers, got shape {array.shape} (set shape: to reshape)"
        )
    return array, label, id_


def _id_of(value: object) -> str | None:
    """An item id from JSON: a non-empty string, or an integer written as one."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


#: The most pixels (width x height) an image payload may declare: 64 Mpixel, 192 MB as RGB.
MAX_PIXELS = 64 * 1024 * 1024
_PNG = b"\x89PNG\r\n\x1a\n"


def decode_image(payload: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) as RGB uint8 HWC; ``ValueError`` if it does not decode."""
    cv2 = optional("cv2")  # only image feeds need OpenCV
    if payload.startswith(_PNG):
        _check_png(payload)
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR) if payload else None
    if image is None:
        raise ValueError(f"not an image OpenCV can decode ({len(payload)} bytes)")
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _check_png(payload: bytes) -> None:
    """Refuse a PNG whose chunks run past its end, or that declares too many pixels.

    OpenCV allocates what a chunk's length field says before it finds the
    data missing: an 80-byte message could make it take gigabytes (found by
    fuzzing, ``fuzz/regressions/mqtt/``). Only the chunk lengths and IHDR's
    size are read here; decoding stays OpenCV's.
    """
    offset = len(_PNG)
    while offset + 8 <= len(payload):
        length = int.from_bytes(payload[offset : offset + 4], "big")
        kind = payload[offset + 4 : offset + 8]
        if offset + 12 + length > len(payload):
            raise ValueError(
                f"not a whole PNG: chunk {kind!r} at byte {offset} says {length} bytes, "
                f"but the payload ends {len(payload) - offset - 12} bytes later"
            )
        if kind == b"IHDR" and length >= 8:
            width = int.from_bytes(payload[offset + 8 : offset + 12], "big")
            height = int.from_bytes(payload[offset + 12 : offset + 16], "big")
            if width * height > MAX_PIXELS:
                raise ValueError(
                    f"the PNG is {width}x{height}, over the {MAX_PIXELS} pixels an image "
                    "payload may have"
                )
        if kind == b"IEND":
            return
        offset += 12 + length


class MqttSource:
    """Subscribe while :meth:`read` runs; yield an item per message until ``stop`` is set.

    ``subscribed`` is set once the broker confirmed the subscription: messages
    published after that reach this source. As a cluster node (``share``) it
    stays a member until :meth:`close`, so the results of the items it read
    last still return their credits.
    """

    def __init__(self, name: str, spec: MqttSourceSpec) -> None:
        self.name = name
        self.spec = spec
        self.subscribed = threading.Event()
        self.node: ClusterNode | None = None
        if spec.share is not None:
            self.node = ClusterNode(
                spec.url,
                spec.share,
                node=spec.node,
                window=spec.window,
                dispatch=spec.dispatch,
                topic=spec.topic,
                keepalive=spec.keepalive,
                maxsize=max(spec.window * 4, spec.queue or 64),
            )

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        if self.node is not None:
            yield from self._read_node(self.node, stop)
            return
        spec = self.spec
        subscriber = MqttSubscriber(
            spec.url, spec.topic, qos=spec.qos, client_id=spec.client_id, maxsize=spec.queue or 64
        )
        sequence = 0
        try:
            while not stop.is_set():
                if subscriber.error is not None:
                    raise ConfigError(subscriber.error)
                message = subscriber.get(timeout=0.1)
                if subscriber.wait_subscribed(0):
                    self.subscribed.set()
                if message is None:
                    continue
                position = f"mqtt {message.topic}"
                entry = self._decode(message.payload, str(message.topic), position, sequence, None)
                yield entry
                if isinstance(entry, Item):
                    sequence += 1
                    if spec.max_items is not None and sequence >= spec.max_items:
                        return
        finally:
            subscriber.close()

    def _read_node(self, node: ClusterNode, stop: threading.Event) -> Iterator[Item | Corrupt]:
        node.start()
        sequence = 0
        try:
            while not stop.is_set():
                if node.error is not None:
                    raise ConfigError(node.error)
                work = node.get(timeout=0.1)
                if node.wait_subscribed(0):
                    self.subscribed.set()
                if work is None:
                    continue
                position = f"mqtt {work.topic}"
                if work.id is None and self.spec.dispatch == "credit":
                    yield Corrupt(self.name, position, "a work message without item-id and seq")
                    continue
                if work.id is not None:
                    position = f"{position} item {work.id}"
                entry = self._decode(work.payload, work.topic, position, sequence, work.id)
                if isinstance(entry, Corrupt):
                    if work.id is not None:
                        node.settled([work.id], "corrupt")
                    else:  # dispatch: broker: counted corrupt, so the broker may drop it
                        node.acknowledge(work)
                    yield entry
                    continue
                if work.id is None:  # dispatch: broker
                    entry.meta.setdefault("id", f"{node.node}-{sequence}")
                    node.received(entry.meta["id"], work)
                yield entry
                sequence += 1
                if self.spec.max_items is not None and sequence >= self.spec.max_items:
                    return
        finally:
            node.drain()  # nothing new; what it holds still settles before close()

    def _decode(
        self, payload: bytes, topic: str, position: str, sequence: int, id_: str | None
    ) -> Item | Corrupt:
        spec = self.spec
        meta: dict[str, Any] = {"position": position, "topic": topic}
        try:
            if spec.format == "image":
                data = decode_image(payload)
            else:
                data, label, given = decode_json(payload, spec.shape)
                if label is not None:
                    meta["label"] = label
                if given is not None:
                    meta["id"] = given
        except ValueError as exc:
            return Corrupt(self.name, position, str(exc))
        if id_ is not None:
            meta["id"] = id_  # the dispatcher's name for it: the producer's id
        return Item(self.name, sequence, time.time(), data, meta)

    def settled(
        self,
        item_ids: Sequence[str],
        outcome: Outcome,
        results: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """The runner's word that these items are durable (or counted otherwise): credits back."""
        if self.node is not None:
            self.node.settled(item_ids, outcome, results)

    def name_pipeline(self, name: str) -> None:
        """The pipeline a cluster node runs, as its presence announces it."""
        if self.node is not None:
            self.node.pipeline = name

    def close(self) -> None:
        """Leave the cluster (presence ``offline``); called once the pipeline has drained."""
        if self.node is not None:
            self.node.close()


class MqttSourceSpec(SourceSpec):
    """``type: mqtt``: ``url``, ``topic`` filter (``+``/``#`` allowed), ``qos``, ``format``, ``shape``.

    >>> spec = MqttSourceSpec(url="mqtt://broker.local", topic="sensors/+/vibration")
    >>> spec.policy, spec.output().describe()
    ('drop-oldest', '(?,) float32')
    >>> MqttSourceSpec(url="mqtt://b", topic="cams/#", format="image").output().describe()
    '(?, ?, 3) uint8 HWC'
    """

    type: Literal["mqtt"] = "mqtt"
    url: BrokerUrl
    topic: TopicFilterField
    qos: Literal[0, 1, 2] = 1
    format: Literal["json", "image"] = "json"
    shape: tuple[PositiveInt, ...] | None = None
    client_id: str | None = None
    #: Be a node of this edge cluster group (one topic level); see :mod:`fogline.cluster`.
    share: str | None = None
    dispatch: Dispatch = "credit"
    node: str | None = None  # default: <hostname>-<pid>
    window: int = Field(default=2, ge=1)  # items it holds at a time (credit dispatch)
    keepalive: int = Field(default=NODE_KEEPALIVE_S, ge=1, le=65535)  # s; a cut shows in ~1.5x

    live: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _live_policy(cls, data: Any) -> Any:
        # A stale reading is worth less than a fresh one: drop the oldest unless told otherwise.
        if isinstance(data, dict) and "policy" not in data:
            # A cluster node's items are acknowledged once settled: none is dropped, the
            # window (credits, or the broker's Receive Maximum) bounds the queue.
            live = data.get("share") is None
            return {**data, "policy": "drop-oldest" if live else "block"}
        return data

    @field_validator("share")
    @classmethod
    def _one_level(cls, value: str | None) -> str | None:
        return None if value is None else check_level(value, "a cluster group")

    @field_validator("node")
    @classmethod
    def _node_level(cls, value: str | None) -> str | None:
        return None if value is None else check_level(value, "a node name")

    @model_validator(mode="after")
    def _cluster_keys(self) -> MqttSourceSpec:
        if self.share is None:
            if "node" in self.model_fields_set or "dispatch" in self.model_fields_set:
                raise ValueError("dispatch and node apply to a cluster node: add share: GROUP")
            return self
        if self.dispatch == "credit" and self.policy != "block":
            raise ValueError(
                f"policy: {self.policy} would drop items that hold a credit; a credit node "
                "takes only `window` items at a time, so its queue stays bounded with block"
            )
        if self.client_id is not None:
            raise ValueError("client_id: a cluster node's client id is made from share and node")
        return self

    @model_validator(mode="after")
    def _shape_for_json(self) -> MqttSourceSpec:
        if self.shape is not None and self.format != "json":
            raise ValueError("shape applies to format: json only")
        return self

    def output(self) -> ArraySpec:
        if self.format == "image":
            return ArraySpec((None, None, 3), "uint8", "HWC")
        return ArraySpec(self.shape or (None,), "float32")

    def build(self, name: str) -> MqttSource:
        return MqttSource(name, self)


def cluster_key(spec: Any) -> Callable[[Result], str | None] | None:
    """The outbox key of a result of a cluster node's item: one per group and item id.

    ``spec`` is the :class:`~fogline.pipeline.PipelineSpec`; None when none of
    its sources is a cluster node (every key stays random).
    """
    groups = {
        name: source.share
        for name, source in zip(spec.source_names(), spec.sources, strict=True)
        if isinstance(source, MqttSourceSpec) and source.share is not None
    }
    if not groups:
        return None

    def key_of(result: Result) -> str | None:
        group = groups.get(result.source)
        if group is None or result.item_id is None:
            return None
        return idempotency_key(group, result.item_id)

    return key_of
