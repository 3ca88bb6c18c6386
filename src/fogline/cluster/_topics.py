"""What a cluster's members say to each other: the topics under ``fogline/cluster/<group>/`` and the bodies.

=====================  =====================  ==========================================
topic                  who → whom             body
=====================  =====================  ==========================================
``nodes/<node>``       node → all, retained   :class:`Presence` (its last will: offline)
``work/<node>``        dispatcher → node      the producer's payload, unchanged; user
                                              properties ``item-id`` and ``seq``
``done/<node>``        node → dispatcher      :class:`Done`: returns one credit
``dispatcher``         dispatcher → all,      :class:`DispatcherStats`
                       retained
=====================  =====================  ==========================================

Bodies are JSON objects; :meth:`from_payload` raises ``ValueError`` saying
what is wrong with one, so a reader counts a malformed message and goes on.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from fogline.transport.mqtt import Topic, TopicFilter

#: The first topic levels of every cluster.
PREFIX = "fogline/cluster"
NODE_STATES = ("online", "offline", "draining")
OUTCOMES = ("processed", "corrupt", "failed", "duplicate")
NodeState = Literal["online", "offline", "draining"]
Outcome = Literal["processed", "corrupt", "failed", "duplicate"]


def check_level(value: str, what: str) -> str:
    """``value`` when it is one non-empty topic level (no ``/``, ``+``, ``#``, NUL), else ``ValueError``.

    >>> check_level("digits", "a group")
    'digits'
    >>> check_level("line/1", "a group")
    Traceback (most recent call last):
    ...
    ValueError: a group is one MQTT topic level: non-empty, without '/', '+', '#' or NUL; got 'line/1'
    """
    if not isinstance(value, str) or not value or any(c in value for c in "/+#\x00"):
        raise ValueError(
            f"{what} is one MQTT topic level: non-empty, without '/', '+', '#' or NUL; "
            f"got {value!r}"
        )
    return value


@dataclass(frozen=True)
class ClusterTopics:
    """The topics of one group.

    >>> topics = ClusterTopics("digits")
    >>> str(topics.work("node-a")), str(topics.all_done), str(topics.dispatcher)
    ('fogline/cluster/digits/work/node-a', 'fogline/cluster/digits/done/+', 'fogline/cluster/digits/dispatcher')
    >>> topics.node_of(Topic("fogline/cluster/digits/done/node-a"))
    'node-a'
    """

    group: str

    def __post_init__(self) -> None:
        check_level(self.group, "a cluster group")

    @property
    def base(self) -> str:
        return f"{PREFIX}/{self.group}"

    def presence(self, node: str) -> Topic:
        return Topic(f"{self.base}/nodes/{check_level(node, 'a node name')}")

    def work(self, node: str) -> Topic:
        return Topic(f"{self.base}/work/{check_level(node, 'a node name')}")

    def done(self, node: str) -> Topic:
        return Topic(f"{self.base}/done/{check_level(node, 'a node name')}")

    @property
    def dispatcher(self) -> Topic:
        return Topic(f"{self.base}/dispatcher")

    @property
    def all_nodes(self) -> TopicFilter:
        return TopicFilter(f"{self.base}/nodes/+")

    @property
    def all_done(self) -> TopicFilter:
        return TopicFilter(f"{self.base}/done/+")

    def node_of(self, topic: Topic) -> str | None:
        """The node a ``nodes/<node>`` or ``done/<node>`` topic names, or None for another topic."""
        parts = str(topic).split("/")
        base = self.base.split("/")
        if len(parts) != len(base) + 2 or parts[: len(base)] != base:
            return None
        return parts[-1] if parts[-2] in ("nodes", "done") else None


def _object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from exc
    except RecursionError:  # json's C scanner has a depth limit; a payload can exceed it
        raise ValueError(f"{what} is JSON nested too deeply to read") from None
    if not isinstance(body, dict):
        raise ValueError(f"{what} is not a JSON object")
    return body


def _int(body: dict[str, Any], key: str, what: str) -> int:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: {key} must be a whole number >= 0, got {value!r}")
    return value


def _number(value: Any, key: str, what: str) -> float | None:
    if value is None:
        return None
    try:  # an integer past float's range (JSON allows 1 followed by 400 zeros) is not finite
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not isinstance(value, int | float) or not math.isfinite(number):
        raise ValueError(f"{what}: {key} must be a finite number or null, got {value!r:.80}")
    return number


def _text(value: Any, key: str, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what}: {key} must be a string, got {value!r}")
    return value


def encode(body: dict[str, Any]) -> bytes:
    """Compact JSON; numpy values (anything with ``tolist``) as lists and numbers."""
    return json.dumps(body, separators=(",", ":"), default=_jsonable).encode()


def _jsonable(value: object) -> object:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@dataclass(frozen=True)
class Presence:
    """A node's presence: retained on ``nodes/<node>``; its last will says ``offline``.

    ``window`` is how many items it takes at a time (0: it is not served by
    the dispatcher, e.g. ``dispatch: broker``); ``took``, ``finished`` and
    ``in_flight`` count items; ``lag_ms`` is how long its recent items took
    from arrival to a durable result.

    >>> p = Presence("node-a", "online", 2, took=5, finished=4, in_flight=1, lag_ms=3.5, at=1.0)
    >>> Presence.from_payload(p.payload()) == p
    True
    >>> Presence.from_payload(b'{"node": "a", "state": "asleep"}')
    Traceback (most recent call last):
    ...
    ValueError: presence of 'a': state must be one of online, offline, draining, got 'asleep'
    """

    node: str
    state: NodeState
    window: int = 0
    took: int = 0
    finished: int = 0
    in_flight: int = 0
    lag_ms: float | None = None
    at: float = 0.0
    pipeline: str = ""
    device: str | None = None

    def payload(self) -> bytes:
        return encode(asdict(self))

    @classmethod
    def from_payload(cls, payload: bytes) -> Presence:
        body = _object(payload, "a presence message")
        node = _text(body.get("node"), "node", "presence")
        assert node is not None
        what = f"presence of {node!r}"
        state = body.get("state")
        if state not in NODE_STATES:
            raise ValueError(
                f"{what}: state must be one of {', '.join(NODE_STATES)}, got {state!r}"
            )
        at = _number(body.get("at", 0.0), "at", what)
        return cls(
            node=node,
            state=state,
            window=_int(body, "window", what),
            took=_int(body, "took", what),
            finished=_int(body, "finished", what),
            in_flight=_int(body, "in_flight", what),
            lag_ms=_number(body.get("lag_ms"), "lag_ms", what),
            at=at or 0.0,
            pipeline=_text(body.get("pipeline", ""), "pipeline", what) or "",
            device=_text(body.get("device"), "device", what, optional=True),
        )


@dataclass(frozen=True)
class Done:
    """A node's word that item ``id`` (dispatched as ``seq``) is settled; it returns one credit.

    ``processed``: its result is durable in the node's store (``result`` is
    what the node's post-processing made); ``corrupt`` / ``failed``: it was
    counted so (no result); ``duplicate``: the node had already settled that
    id, so it did not process it again.

    >>> d = Done("cam-1:17", 17, "processed", {"label": 3})
    >>> Done.from_payload(d.payload()) == d
    True
    >>> Done.from_payload(b'{"id": "x", "seq": -1, "outcome": "processed"}')
    Traceback (most recent call last):
    ...
    ValueError: done of 'x': seq must be a whole number >= 0, got -1
    """

    id: str
    seq: int
    outcome: Outcome
    result: dict[str, Any] | None = None

    def payload(self) -> bytes:
        return encode(asdict(self))

    @classmethod
    def from_payload(cls, payload: bytes) -> Done:
        body = _object(payload, "a done message")
        id_ = body.get("id")
        if not isinstance(id_, str) or not id_:
            raise ValueError(f"a done message needs a non-empty string id, got {id_!r}")
        what = f"done of {id_!r}"
        if "seq" not in body:
            raise ValueError(f"{what}: no seq")
        seq = _int(body, "seq", what)
        outcome = body.get("outcome")
        if outcome not in OUTCOMES:
            raise ValueError(
                f"{what}: outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}"
            )
        result = body.get("result")
        if result is not None and not isinstance(result, dict):
            raise ValueError(f"{what}: result must be an object or null")
        return cls(id_, seq, outcome, result)


@dataclass(frozen=True)
class DispatcherStats:
    """What the dispatcher counted, retained on ``dispatcher`` and refreshed every 2 s.

    >>> s = DispatcherStats("running", "digits/in", 2, queued=1, dispatched=9, at=2.0)
    >>> DispatcherStats.from_payload(s.payload()) == s
    True
    """

    state: str
    topic: str
    window: int
    queued: int = 0
    dispatched: int = 0
    completed: int = 0
    redispatched: int = 0
    duplicates: int = 0
    late: int = 0
    #: Of ``duplicates``: producer items whose id was done already (a re-fed data set, a
    #: producer that reuses ids): acknowledged, not processed again.
    repeated: int = 0
    corrupt: int = 0
    failed: int = 0
    outstanding: int = 0
    at: float = 0.0
    #: Per node: ``{"completed": n, "outstanding": n, "redispatched": n}`` as the dispatcher saw
    #: it (a killed node's last will cannot say what it finished; this can).
    nodes: dict[str, dict[str, int]] = field(default_factory=dict, compare=False)

    def payload(self) -> bytes:
        return encode(asdict(self))

    @classmethod
    def from_payload(cls, payload: bytes) -> DispatcherStats:
        body = _object(payload, "the dispatcher's stats")
        what = "the dispatcher's stats"
        counts = {
            key: _int(body, key, what)
            for key in (
                "window", "queued", "dispatched", "completed", "redispatched",
                "duplicates", "late", "corrupt", "failed", "outstanding",
            )
        }  # fmt: skip
        counts["repeated"] = _int(body, "repeated", what) if "repeated" in body else 0
        nodes = body.get("nodes", {})
        if not isinstance(nodes, dict) or not all(
            isinstance(v, dict) and all(isinstance(n, int) for n in v.values())
            for v in nodes.values()
        ):
            raise ValueError(f"{what}: nodes must map a node to its counts")
        return cls(
            state=_text(body.get("state", ""), "state", what) or "",
            topic=_text(body.get("topic", ""), "topic", what) or "",
            at=_number(body.get("at", 0.0), "at", what) or 0.0,
            nodes=nodes,
            **counts,
        )
