"""The ``zmq`` source: each message on a PULL or SUB socket becomes one item.

No broker between the devices: a neighbour PUSHes work here (each message
to one of the PULL sockets bound or connected to it) or PUBlishes a stream
that this source SUBscribes to (by topic prefix). ``format: json`` reads the
``mqtt`` source's payload (a list of numbers, or ``{"data": [...], "id":
..., "label": ...}``), ``image`` an encoded PNG or JPEG, ``npy`` a NumPy
array file (``numpy.save``). A message that cannot be decoded becomes a
:class:`~fogline.pipeline._item.Corrupt` at ``"zmq <endpoint>#<n>"`` (``n``
counts the messages this source received, from 0) and the source goes on;
a peer whose CURVE handshake fails is logged and counted (``refused``).

Queue policy: ``pull`` defaults to ``block``, so a busy pipeline stops
reading and the sender's queue fills up to its high-water mark (back
pressure end to end); ``sub`` defaults to ``drop-oldest`` (a live feed).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import PositiveInt, model_validator

from fogline.pipeline._base import ArraySpec, SourceSpec
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._zmq import CurveSpec, probe_endpoint, resolve_bind
from fogline.pipeline.sources._mqtt import decode_image, decode_json
from fogline.transport.zmq import ZmqEndpointField

Dtype = Literal["float32", "float16", "float64", "uint8", "int8", "int32", "int64"]


def decode_npy(payload: bytes, dtype: str, shape: tuple[int, ...] | None) -> np.ndarray:
    """An array saved by ``numpy.save`` (no pickles), checked against ``dtype`` and ``shape``.

    >>> buffer = io.BytesIO(); np.save(buffer, np.ones((2, 3), np.float32))
    >>> decode_npy(buffer.getvalue(), "float32", (2, 3)).shape
    (2, 3)
    >>> decode_npy(buffer.getvalue(), "uint8", None)
    Traceback (most recent call last):
    ...
    ValueError: expected uint8 data, got float32
    """
    try:
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"not a .npy array: {exc}") from exc
    if not isinstance(array, np.ndarray):
        raise ValueError("not a .npy array (an .npz archive?)")
    if array.dtype != np.dtype(dtype):
        raise ValueError(f"expected {dtype} data, got {array.dtype}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"expected shape {shape}, got {array.shape}")
    return array


class ZmqSource:
    """Open the socket while :meth:`read` runs; yield an item per message until ``stop`` is set.

    ``ready`` is set once the socket is bound or connected; ``refused``
    counts peers whose handshake failed (a CURVE key not allowed).
    """

    def __init__(self, name: str, spec: ZmqSourceSpec) -> None:
        self.name = name
        self.spec = spec
        self.ready = threading.Event()
        self.refused = 0

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        from fogline.transport.zmq import ZmqSocket  # loads pyzmq (the zmq extra)

        spec = self.spec
        socket = ZmqSocket(
            spec.pattern,
            spec.endpoint,
            bind=spec.binds,
            curve=spec.curve.curve() if spec.curve is not None else None,
            topic=spec.topic.encode(),
            hwm=spec.hwm,
            linger=0.0,
        )
        where = f"zmq {spec.endpoint}"
        received = sequence = 0
        try:
            self.ready.set()
            while not stop.is_set():
                frames = socket.receive(timeout=0.1)
                self.refused = socket.refused
                if frames is None:
                    continue
                position = f"{where}#{received}"
                received += 1
                meta: dict[str, Any] = {"position": position}
                try:
                    meta.update(self._topic(frames))
                    data = self._decode(frames[-1], meta)
                except ValueError as exc:
                    yield Corrupt(self.name, position, str(exc))
                    continue
                yield Item(self.name, sequence, time.time(), data, meta)
                sequence += 1
                if spec.max_items is not None and sequence >= spec.max_items:
                    return
        finally:
            socket.close()

    def _topic(self, frames: list[bytes]) -> dict[str, str]:
        """SUB: ``[topic, payload]`` (or one frame); PULL: one frame."""
        most = 2 if self.spec.pattern == "sub" else 1
        if len(frames) > most:
            raise ValueError(f"a message of {len(frames)} frames; expected at most {most}")
        if len(frames) == 2:
            return {"topic": frames[0].decode(errors="replace")}
        return {}

    def _decode(self, payload: bytes, meta: dict[str, Any]) -> np.ndarray:
        spec = self.spec
        if spec.format == "image":
            return decode_image(payload)
        if spec.format == "npy":
            return decode_npy(payload, spec.dtype, spec.shape)
        data, label, id_ = decode_json(payload, spec.shape)
        if label is not None:
            meta["label"] = label
        if id_ is not None:
            meta["id"] = id_
        return data


class ZmqSourceSpec(SourceSpec):
    """``type: zmq``: ``endpoint``, ``pattern`` (pull|sub), ``bind``, ``topic``, ``format``, ``curve``.

    ``bind`` defaults to true for ``pull`` (the worker has the stable
    address; senders connect) and false for ``sub`` (the publisher binds).
    ``topic`` is the prefix a SUB socket subscribes to. ``hwm`` bounds the
    messages queued in ZeroMQ per peer.

    >>> spec = ZmqSourceSpec(endpoint="tcp://*:5557")
    >>> spec.binds, spec.policy, spec.output().describe()
    (True, 'block', '(?,) float32')
    >>> spec = ZmqSourceSpec(endpoint="tcp://cam1:5558", pattern="sub", format="npy", shape=[3, 4])
    >>> spec.binds, spec.policy, spec.output().describe()
    (False, 'drop-oldest', '(3, 4) float32')
    """

    type: Literal["zmq"] = "zmq"
    endpoint: ZmqEndpointField
    pattern: Literal["pull", "sub"] = "pull"
    bind: bool | None = None
    topic: str = ""
    format: Literal["json", "image", "npy"] = "json"
    shape: tuple[PositiveInt, ...] | None = None
    dtype: Dtype = "float32"
    hwm: PositiveInt = 1000
    curve: CurveSpec | None = None

    live: ClassVar[bool] = True
    needs: ClassVar[tuple[str, ...]] = ("zmq",)

    @model_validator(mode="before")
    @classmethod
    def _policy(cls, data: Any) -> Any:
        # Work (pull) waits for the pipeline, so the sender feels the back pressure; a
        # broadcast (sub) is a live feed, where a stale message is worth less than a fresh one.
        if isinstance(data, dict) and "policy" not in data:
            live = data.get("pattern") == "sub"
            return {**data, "policy": "drop-oldest" if live else "block"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ZmqSourceSpec:
        if self.shape is not None and self.format == "image":
            raise ValueError("shape applies to format: json or npy")
        if self.dtype != "float32" and self.format != "npy":
            raise ValueError("dtype applies to format: npy only (json is float32, image uint8)")
        if self.topic and self.pattern != "sub":
            raise ValueError("topic applies to pattern: sub only")
        resolve_bind(self.endpoint, self.bind, self.pattern == "pull")
        return self

    @property
    def binds(self) -> bool:
        return resolve_bind(self.endpoint, self.bind, self.pattern == "pull")

    def output(self) -> ArraySpec:
        if self.format == "image":
            return ArraySpec((None, None, 3), "uint8", "HWC")
        if self.format == "npy":
            return ArraySpec(self.shape, self.dtype)
        return ArraySpec(self.shape or (None,), "float32")

    def probe(self) -> None:
        probe_endpoint(self.endpoint, self.binds)

    def build(self, name: str) -> ZmqSource:
        return ZmqSource(name, self)
