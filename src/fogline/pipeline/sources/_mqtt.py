"""The ``mqtt`` source: each message on a topic filter becomes one item.

``format: json`` takes a list of numbers, or an object ``{"data": [...]}``
(optionally with a string ``label`` and an ``id``, the item id late labels name), as a float32 vector, reshaped to
``shape`` when given. ``format: image`` takes an encoded PNG or JPEG and
yields RGB uint8 HWC. A payload that cannot be decoded becomes a
:class:`~fogline.pipeline._item.Corrupt` at ``"mqtt <topic>"`` and the
source goes on. A live feed: the queue policy defaults to ``drop-oldest``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import PositiveInt, model_validator

from fogline.errors import ConfigError
from fogline.pipeline._base import ArraySpec, SourceSpec
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._optional import optional
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
    except (ValueError, TypeError) as exc:
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


def decode_image(payload: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, ...) as RGB uint8 HWC; ``ValueError`` if it does not decode."""
    cv2 = optional("cv2")  # only image feeds need OpenCV
    image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR) if payload else None
    if image is None:
        raise ValueError(f"not an image OpenCV can decode ({len(payload)} bytes)")
    return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


class MqttSource:
    """Subscribe while :meth:`read` runs; yield an item per message until ``stop`` is set.

    ``subscribed`` is set once the broker confirmed the subscription: messages
    published after that reach this source.
    """

    def __init__(self, name: str, spec: MqttSourceSpec) -> None:
        self.name = name
        self.spec = spec
        self.subscribed = threading.Event()

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
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
                meta: dict[str, Any] = {"position": position, "topic": str(message.topic)}
                try:
                    if spec.format == "image":
                        data = decode_image(message.payload)
                    else:
                        data, label, id_ = decode_json(message.payload, spec.shape)
                        if label is not None:
                            meta["label"] = label
                        if id_ is not None:
                            meta["id"] = id_
                except ValueError as exc:
                    yield Corrupt(self.name, position, str(exc))
                    continue
                yield Item(self.name, sequence, time.time(), data, meta)
                sequence += 1
                if spec.max_items is not None and sequence >= spec.max_items:
                    return
        finally:
            subscriber.close()


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

    live: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _live_policy(cls, data: Any) -> Any:
        # A stale reading is worth less than a fresh one: drop the oldest unless told otherwise.
        if isinstance(data, dict) and "policy" not in data:
            return {**data, "policy": "drop-oldest"}
        return data

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
