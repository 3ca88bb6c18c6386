"""Broker URLs, topics, topic filters and templates, messages: frozen value objects.

They raise ``ValueError`` like every fogline value object, so pydantic specs
report them as validation errors; the pydantic field types at the end parse
them from YAML strings. Nothing here touches the network.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from pydantic import BeforeValidator, PlainSerializer

from fogline.errors import ConfigError
from fogline.security import ClientTls

_MAX_TOPIC_BYTES = 65535
_SHARE = "$share/"


@dataclass(frozen=True)
class MqttUrl:
    """Where a broker is: ``mqtt://[user:password@]host[:port]``, or ``mqtts://`` for TLS.

    The password never appears in ``str()`` or ``repr()``. ``client_tls``
    says which CA to trust and which client certificate to present over
    ``mqtts://`` (mutual TLS); None takes ``FOGLINE_TLS_CA/CERT/KEY`` or the
    system's trust store. It travels with the URL (``dataclasses.replace``
    keeps it) but is no part of its text.

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
    client_tls: ClientTls | None = field(default=None, repr=False, compare=False)

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

    An MQTT 5 shared subscription ``$share/GROUP/filter`` hands each message
    to one subscriber of the group only (load balancing); :attr:`group` and
    :attr:`topics` name its parts.

    >>> str(TopicFilter("sensors/+/vibration/#"))
    'sensors/+/vibration/#'
    >>> shared = TopicFilter.shared("workers", "jobs/#")
    >>> str(shared), shared.group, shared.topics
    ('$share/workers/jobs/#', 'workers', 'jobs/#')
    >>> TopicFilter("sensors/#/x")
    Traceback (most recent call last):
    ...
    ValueError: '#' must be the last level of a topic filter: 'sensors/#/x'
    """

    value: str

    def __post_init__(self) -> None:
        _check_topic_text(self.value, "a topic filter")
        rest = self.value
        if rest.startswith(_SHARE):
            group, _, rest = rest[len(_SHARE) :].partition("/")
            if not group or any(c in group for c in "+#"):
                raise ValueError(
                    f"a shared subscription is $share/GROUP/filter with a GROUP "
                    f"without '+' or '#': {self.value!r}"
                )
            if not rest:
                raise ValueError(
                    f"a shared subscription needs a filter after its group: {self.value!r}"
                )
        levels = rest.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"'#' must be the last level of a topic filter: {self.value!r}")
            if "+" in level and level != "+":
                raise ValueError(f"'+' must be a whole level of a topic filter: {self.value!r}")

    @classmethod
    def shared(cls, group: str, topics: TopicFilter | str) -> TopicFilter:
        """The shared subscription of ``group`` to ``topics``."""
        return cls(f"{_SHARE}{group}/{topics}")

    @property
    def group(self) -> str | None:
        """The share group of a shared subscription, or None."""
        if not self.value.startswith(_SHARE):
            return None
        return self.value[len(_SHARE) :].partition("/")[0]

    @property
    def topics(self) -> str:
        """The filter itself, without a ``$share/GROUP/`` in front."""
        if not self.value.startswith(_SHARE):
            return self.value
        return self.value[len(_SHARE) :].partition("/")[2]

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class TopicTemplate:
    """A topic with ``{field}`` placeholders, filled from a mapping of values.

    A field fills exactly one level: ``/``, ``+``, ``#`` and NUL in its value
    become ``_``. :meth:`check` tells at load time whether every field is known.

    >>> template = TopicTemplate("fogline/{source}/{label}")
    >>> sorted(template.fields)
    ['label', 'source']
    >>> str(template.render({"source": "cam/0", "label": 7}))
    'fogline/cam_0/7'
    >>> template.check({"source", "sequence"})
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: topic 'fogline/{source}/{label}' uses {label}, which is not one of: sequence, source
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


@dataclass(frozen=True)
class MqttMessage:
    """One message to publish, or one received: topic, payload, QoS, retain, user properties.

    ``expiry_s`` is the MQTT 5 message expiry interval: published, the broker
    discards the message (a retained one too) after that many seconds;
    received, the seconds it had left when the broker sent it (None: none set).

    >>> MqttMessage(Topic("a/b"), b"{}", user_properties=(("key", "k-1"),)).qos
    1
    """

    topic: Topic
    payload: bytes
    qos: int = 1
    retain: bool = False
    user_properties: tuple[tuple[str, str], ...] = ()
    expiry_s: int | None = None

    def __post_init__(self) -> None:
        if self.expiry_s is not None and self.expiry_s < 0:
            raise ValueError(f"a message expiry is at least 0 s, got {self.expiry_s!r}")
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


def json_payload(value: Any) -> bytes:
    """``value`` as compact JSON bytes; arrays and scalars with ``tolist()`` (numpy) become lists.

    >>> json_payload({"a": [1, 2.5], "b": None})
    b'{"a":[1,2.5],"b":null}'
    """
    return json.dumps(value, separators=(",", ":"), default=_jsonable).encode()


def _jsonable(value: object) -> object:
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays, without importing numpy
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _from_str(parse: Callable[[str], object]) -> BeforeValidator:
    return BeforeValidator(lambda value: parse(value) if isinstance(value, str) else value)


#: Pydantic field types: parsed from YAML strings, written back as strings (no password).
BrokerUrl = Annotated[MqttUrl, _from_str(MqttUrl.parse), PlainSerializer(str)]
TopicTemplateField = Annotated[TopicTemplate, _from_str(TopicTemplate), PlainSerializer(str)]
TopicFilterField = Annotated[TopicFilter, _from_str(TopicFilter), PlainSerializer(str)]
