"""MQTT for the pipeline: broker URLs and topics as value objects, a publisher, a subscriber.

Built on paho-mqtt 2 (callback API 2, MQTT 5). paho's network loop runs on
its own thread (``loop_start``); :class:`MqttPublisher` and
:class:`MqttSubscriber` may be called from any one other thread. Errors from
paho and sockets are mapped here into :class:`~fogline.errors.TransportError`
(could not deliver) and :class:`~fogline.errors.ConfigError` (bad option).

The value objects (:class:`MqttUrl`, :class:`Topic`, :class:`TopicFilter`,
:class:`TopicTemplate`) raise ``ValueError`` like every fogline value object,
so pydantic specs report them as validation errors; the pydantic field types
at the end of this module parse them from YAML strings.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import ssl
import string
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BeforeValidator, PlainSerializer

from fogline.errors import ConfigError, TransportError
from fogline.store import Result

log = logging.getLogger(__name__)

#: The fields of a result that a topic template may always use (outputs add their own keys).
RESULT_FIELDS = frozenset({"source", "sequence", "captured_at", "model", "model_version"})

_MAX_TOPIC_BYTES = 65535
# CONNACK/SUBACK reasons that retrying cannot fix: bad protocol, client id, credentials, ACL.
_CONFIG_REASONS = frozenset({0x84, 0x85, 0x86, 0x87, 0x8C, 0x8F})


@dataclass(frozen=True)
class MqttUrl:
    """Where a broker is: ``mqtt://[user:password@]host[:port]``, or ``mqtts://`` for TLS.

    The password never appears in ``str()`` or ``repr()``.

    >>> url = MqttUrl.parse("mqtts://edge:s%40cret@broker.local")
    >>> url.host, url.port, url.tls, url.username, url.password
    ('broker.local', 8883, True, 'edge', 's@cret')
    >>> str(url)
    'mqtts://edge@broker.local:8883'
    >>> MqttUrl.parse("http://broker.local")
    Traceback (most recent call last):
    ...
    ValueError: a broker URL starts with mqtt:// or mqtts://, got 'http://broker.local'
    """

    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.host or any(c.isspace() or c in "/@?#" for c in self.host):
            raise ValueError(f"a broker URL needs a host name, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"a port is an int, got {self.port!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"a port is 1 to 65535, got {self.port}")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a user name")

    @classmethod
    def parse(cls, text: str) -> MqttUrl:
        parts = urlsplit(text.strip())
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"a broker URL starts with mqtt:// or mqtts://, got {text!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"a broker URL has no path, query or fragment, got {text!r}")
        tls = parts.scheme == "mqtts"
        port = parts.port  # raises ValueError when malformed
        if port is None:
            port = 8883 if tls else 1883
        user = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        return cls(parts.hostname or "", port, tls, user or None, password)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"


def _check_topic_text(text: str, what: str) -> None:
    if not isinstance(text, str) or not text:
        raise ValueError(f"{what} cannot be empty")
    if "\x00" in text:
        raise ValueError(f"{what} cannot contain NUL: {text!r}")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not valid UTF-8: {text!r}") from exc
    if size > _MAX_TOPIC_BYTES:
        raise ValueError(f"{what} is longer than {_MAX_TOPIC_BYTES} bytes")


@dataclass(frozen=True)
class Topic:
    """A topic to publish to: not empty, no ``+`` or ``#`` wildcards, no NUL, at most 64 KiB.

    >>> Topic("fogline/cam0/results").levels
    ('fogline', 'cam0', 'results')
    >>> Topic("fogline/+/results")
    Traceback (most recent call last):
    ...
    ValueError: a topic to publish to cannot contain '+' or '#': 'fogline/+/results'
    """

    value: str

    def __post_init__(self) -> None:
        _check_topic_text(self.value, "a topic")
        if "+" in self.value or "#" in self.value:
            raise ValueError(f"a topic to publish to cannot contain '+' or '#': {self.value!r}")

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(self.value.split("/"))

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TopicFilter:
    """A subscription: a topic whose levels may be ``+`` (any one level) or a final ``#`` (the rest).

    >>> str(TopicFilter("sensors/+/vibration/#"))
    'sensors/+/vibration/#'
    >>> TopicFilter("sensors/#/x")
    Traceback (most recent call last):
    ...
    ValueError: '#' must be the last level of a topic filter: 'sensors/#/x'
    """

    value: str

    def __post_init__(self) -> None:
        _check_topic_text(self.value, "a topic filter")
        levels = self.value.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"'#' must be the last level of a topic filter: {self.value!r}")
            if "+" in level and level != "+":
                raise ValueError(f"'+' must be a whole level of a topic filter: {self.value!r}")

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TopicTemplate:
    """A topic with ``{field}`` placeholders, filled from each result.

    A field fills exactly one level: ``/``, ``+``, ``#`` and NUL in its value
    become ``_``. :meth:`check` tells at load time whether every field is known.

    >>> template = TopicTemplate("fogline/{source}/{label}")
    >>> sorted(template.fields)
    ['label', 'source']
    >>> str(template.render({"source": "cam/0", "label": 7}))
    'fogline/cam_0/7'
    >>> template.check(RESULT_FIELDS)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: topic 'fogline/{source}/{label}' uses {label}, which is not one of: captured_at, model, model_version, sequence, source
    """

    text: str
    fields: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise ValueError(f"a topic template is a string, got {self.text!r}")
        names = []
        for _, name, spec, conversion in string.Formatter().parse(
            self.text
        ):  # ValueError on bad {}
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ValueError(
                    f"topic fields are plain {{name}}s, got {{{name}}} in {self.text!r}"
                )
            names.append(name)
        object.__setattr__(self, "fields", frozenset(names))
        self.render(dict.fromkeys(names, "x"))  # the literal part must make a valid topic

    def render(self, values: Mapping[str, object]) -> Topic:
        """The topic for ``values``; ``ValueError`` if one of the fields has no value."""
        parts = []
        for literal, name, _, _ in string.Formatter().parse(self.text):
            parts.append(literal)
            if name is not None:
                if name not in values:
                    raise ValueError(f"topic {self.text!r} needs {{{name}}}, which is missing")
                parts.append(_level(values[name]))
        return Topic("".join(parts))

    def for_result(self, result: Result) -> Topic:
        """The topic for one result: its own fields (source, sequence, position, ...) and outputs."""
        return self.render(result_fields(result))

    def check(self, known: Collection[str]) -> None:
        """Raise :class:`ConfigError` unless every field is in ``known``."""
        unknown = sorted(self.fields - set(known))
        if unknown:
            names = ", ".join("{" + n + "}" for n in unknown)
            raise ConfigError(
                f"topic {self.text!r} uses {names}, which is not one of: {', '.join(sorted(known))}"
            )

    def __str__(self) -> str:
        return self.text


def _level(value: object) -> str:
    text = str(value)
    for char in "/+#\x00":
        text = text.replace(char, "_")
    return text


def result_fields(result: Result) -> dict[str, object]:
    """What a topic template can use: the result's outputs, then its own fields (which win)."""
    fields: dict[str, object] = dict(result.outputs)
    fields.update(
        source=result.source,
        sequence=result.sequence,
        position=result.position,
        captured_at=result.captured_at,
        model=result.model,
        model_version=result.model_version,
    )
    return fields


@dataclass(frozen=True)
class MqttMessage:
    """One message to publish, or one received: topic, payload, QoS, retain, user properties.

    >>> MqttMessage(Topic("a/b"), b"{}", user_properties=(("key", "k-1"),)).qos
    1
    """

    topic: Topic
    payload: bytes
    qos: int = 1
    retain: bool = False
    user_properties: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ValueError(f"QoS is 0, 1 or 2, got {self.qos!r}")
        if not isinstance(self.payload, bytes):
            raise ValueError(f"a payload is bytes, got {type(self.payload).__name__}")

    def property(self, name: str) -> str | None:
        """The first user property called ``name``, or None."""
        return next((v for k, v in self.user_properties if k == name), None)


def to_url(url: MqttUrl | str) -> MqttUrl:
    """``url`` as an :class:`MqttUrl`; a malformed string is a :class:`ConfigError`."""
    if isinstance(url, MqttUrl):
        return url
    try:
        return MqttUrl.parse(url)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def _new_client(
    url: MqttUrl, client_id: str | None, timeout: float, *, reconnect: bool
) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"fogline-{secrets.token_hex(6)}",
        protocol=paho.MQTTv5,
        reconnect_on_failure=reconnect,
    )
    client.connect_timeout = timeout
    if url.username is not None:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set_context(ssl.create_default_context())
    return client


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves it untyped


def _stop_loop(client: paho.Client) -> None:
    # paho's thread clears its own handle when it ends, maybe between loop_stop's check and join.
    with contextlib.suppress(AttributeError):
        client.loop_stop()


class MqttPublisher:
    """Publish to one broker and return only once the broker has every message.

    Connects on the first :meth:`publish`, and again on the next one after
    the connection dropped, so a broker that comes back is used without a
    restart. For QoS 1 and 2 ``publish`` waits for the PUBACK / PUBCOMP (QoS 0:
    until written to the socket) and raises :class:`TransportError` when the
    broker is unreachable, refuses, disconnects or does not answer within
    ``timeout`` seconds: it never drops a message silently. Several messages
    in one call are sent back to back and then awaited together.

    >>> publisher = MqttPublisher("mqtt://127.0.0.1:1")  # nothing listens on port 1
    >>> publisher.publish(MqttMessage(Topic("a/b"), b"{}"))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fogline.errors.TransportError: cannot connect to mqtt://127.0.0.1:1: ...
    >>> publisher.close()
    """

    def __init__(
        self, url: MqttUrl | str, *, client_id: str | None = None, timeout: float = 10.0
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {timeout}")
        self.url = to_url(url)
        self.timeout = timeout
        # No reconnecting in paho's thread: it ends with the connection, and publish reconnects.
        self._client = _new_client(self.url, client_id, timeout, reconnect=False)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._lock = threading.Lock()  # one connect at a time
        self._connected = threading.Event()
        self._connack = threading.Event()
        self._refusal: ReasonCode | None = None
        self._reasons: dict[int, ReasonCode] = {}  # mid -> PUBACK reason, set by paho's thread
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(self, *messages: MqttMessage) -> None:
        """Send ``messages`` in order and wait for the broker's acknowledgement of each."""
        self._connect()
        publish_acknowledged(
            self._client, self.url, messages, self.timeout, self._connected, self._reasons
        )

    def _connect(self) -> None:
        with self._lock:
            if self._closed:
                raise TransportError(f"{self.url}: the publisher is closed")
            if self._connected.is_set():
                return
            _stop_loop(self._client)  # the loop thread of a dropped connection ends by itself
            self._connack.clear()
            self._refusal = None
            try:
                self._client.connect(self.url.host, self.url.port, keepalive=30)
            except (OSError, ValueError) as exc:
                raise TransportError(f"cannot connect to {self.url}: {exc}") from exc
            self._client.loop_start()
            if not self._connack.wait(self.timeout):
                self._client.disconnect()
                _stop_loop(self._client)
                raise TransportError(f"{self.url}: no CONNACK within {self.timeout:g} s")
            if self._refusal is not None:
                _stop_loop(self._client)
                raise TransportError(f"{self.url} refused the connection: {self._refusal}")
            log.info("connected to %s", self.url)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._refusal = reason
        else:
            self._connected.set()
        self._connack.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if self._connected.is_set() and not self._closed:
            log.warning("disconnected from %s: %s", self.url, reason)
        self._connected.clear()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        self._reasons[mid] = reason

    def close(self) -> None:
        """Disconnect and stop paho's thread; later publishes raise :class:`TransportError`."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._connected.is_set():
                self._client.disconnect()
            _stop_loop(self._client)

    def __enter__(self) -> MqttPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_acknowledged(
    client: paho.Client,
    url: MqttUrl,
    messages: Sequence[MqttMessage],
    timeout: float,
    connected: threading.Event,
    reasons: dict[int, ReasonCode],
) -> None:
    """Publish ``messages`` in order on ``client`` and wait until the broker acknowledged each.

    ``reasons`` is where the client's ``on_publish`` keeps each PUBACK's
    reason code by message id (paho calls it before it marks the message
    published). Raises :class:`TransportError` when a message cannot be
    sent, the connection drops first, ``timeout`` passes, or the broker
    refuses one (an ACL): the caller keeps the messages and sends them again.
    """
    sent = []
    for message in messages:
        try:
            info = client.publish(
                message.topic.value,
                message.payload,
                message.qos,
                message.retain,
                _publish_properties(message),
            )
        except (ValueError, OSError) as exc:
            raise TransportError(f"{url}: cannot publish to {message.topic}: {exc}") from exc
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise TransportError(
                f"{url}: cannot publish to {message.topic}: {paho.error_string(info.rc)}"
            )
        sent.append((message, info))
    deadline = time.monotonic() + timeout
    for message, info in sent:
        while not info.is_published():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TransportError(
                    f"{url}: no acknowledgement for {message.topic} within {timeout:g} s"
                )
            if not connected.is_set():
                raise TransportError(
                    f"{url}: connection lost before {message.topic} was acknowledged"
                )
            try:
                info.wait_for_publish(min(left, 0.1))
            except (RuntimeError, ValueError) as exc:
                raise TransportError(f"{url}: publish to {message.topic} failed: {exc}") from exc
        reason = reasons.pop(info.mid, None)
        if reason is not None and reason.is_failure:
            raise TransportError(f"{url}: the broker refused {message.topic}: {reason}")


def _publish_properties(message: MqttMessage) -> Properties | None:
    if not message.user_properties:
        return None
    props = _properties(PacketTypes.PUBLISH)
    props.UserProperty = list(message.user_properties)
    return props


class MqttSubscriber:
    """Receive the messages on ``topic`` into a bounded, thread-safe queue; :meth:`get` takes them.

    paho's thread connects in the background, reconnects after a drop and
    subscribes again each time. ``session_expiry > 0`` (seconds) with a fixed
    ``client_id`` keeps a persistent session, so QoS 1 messages published
    while this client was away are delivered when it is back. When the queue
    holds ``maxsize`` messages the oldest is dropped (counted in ``dropped``).
    ``error`` says why the broker refused the connection or subscription, for
    reasons that retrying cannot fix (credentials, ACL).
    """

    def __init__(
        self,
        url: MqttUrl | str,
        topic: TopicFilter | str,
        *,
        qos: int = 1,
        client_id: str | None = None,
        session_expiry: int = 0,
        maxsize: int = 1024,
        timeout: float = 10.0,
    ) -> None:
        self.url = to_url(url)
        try:
            self.topic = topic if isinstance(topic, TopicFilter) else TopicFilter(topic)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        if qos not in (0, 1, 2) or maxsize < 1 or session_expiry < 0:
            raise ConfigError(f"bad subscriber options: qos={qos}, maxsize={maxsize}")
        self.qos = qos
        self.dropped = 0
        self.error: str | None = None
        self._queue: queue.Queue[MqttMessage] = queue.Queue(maxsize)
        self._subscribed = threading.Event()
        self._client = _new_client(self.url, client_id, timeout, reconnect=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(min_delay=1, max_delay=4)
        props = None
        if session_expiry:
            props = _properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        self._client.connect_async(
            self.url.host, self.url.port, 30, clean_start=not session_expiry, properties=props
        )
        self._client.loop_start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Whether the broker confirmed the subscription within ``timeout`` seconds."""
        return self._subscribed.wait(timeout)

    def get(self, timeout: float | None = None) -> MqttMessage | None:
        """The next message, or None when none came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("%s refused the connection: %s", self.url, reason)
            if reason.value in _CONFIG_REASONS:
                self.error = f"{self.url} refused the connection: {reason}"
            return
        client.subscribe(self.topic.value, qos=self.qos)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:
            self.error = f"{self.url} refused the subscription to {self.topic}: {refused[0]}"
        else:
            self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = Topic(message.topic)
        except (UnicodeDecodeError, ValueError):
            self.dropped += 1  # a topic that is not UTF-8 cannot be named in an item
            return
        user = getattr(message.properties, "UserProperty", None) or []
        received = MqttMessage(
            topic, bytes(message.payload), message.qos, bool(message.retain), tuple(user)
        )
        while True:
            try:
                self._queue.put_nowait(received)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def close(self) -> None:
        """Disconnect and stop paho's thread (messages not yet taken are discarded)."""
        self._client.disconnect()
        _stop_loop(self._client)

    def __enter__(self) -> MqttSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _from_str(parse: Callable[[str], object]) -> BeforeValidator:
    return BeforeValidator(lambda value: parse(value) if isinstance(value, str) else value)


#: Pydantic field types: parsed from YAML strings, written back as strings (no password).
BrokerUrl = Annotated[MqttUrl, _from_str(MqttUrl.parse), PlainSerializer(str)]
TopicTemplateField = Annotated[TopicTemplate, _from_str(TopicTemplate), PlainSerializer(str)]
TopicFilterField = Annotated[TopicFilter, _from_str(TopicFilter), PlainSerializer(str)]
