"""The one way fogline makes a paho client, and what every session does with one.

:func:`new_client` is MQTT 5 with the URL's credentials and, for
``mqtts://``, TLS verified against the URL's CA (its ``client_tls``, else
``FOGLINE_TLS_CA``, else the system's store), presenting the client
certificate either names (mutual TLS). The helpers around
it are what each session (publisher, subscriber, agent, controller,
simulator) needs and should not write again: CONNECT properties with a
session expiry, a refusal that retrying cannot fix, publish-and-wait for the
PUBACK, a received paho message as an :class:`MqttMessage`, and stopping
paho's thread without racing it.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import MutableMapping, Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fogline.errors import ConfigError, Refused, TimedOut, TransportError, Unreachable
from fogline.security import ClientTls
from fogline.transport.mqtt._values import MqttMessage, MqttUrl, Topic

log = logging.getLogger(__name__)

#: CONNACK/SUBACK reasons that retrying cannot fix: bad protocol, client id, credentials, ACL.
CONFIG_REASONS = frozenset({0x84, 0x85, 0x86, 0x87, 0x8C, 0x8F})
_MAX_CLIENT_ID_BYTES = 65535


def new_client(
    url: MqttUrl,
    *,
    client_id: str | None = None,
    timeout: float = 10.0,
    reconnect: bool = True,
    manual_ack: bool = False,
) -> paho.Client:
    """A paho client (callback API 2, MQTT 5) for ``url``, not yet connected.

    ``client_id`` None makes a random ``fogline-<hex>`` (a throwaway
    session); a fixed one is what a persistent session is found by. The
    URL's user name and password log in; ``mqtts://`` turns on TLS with a
    host name check, trusting the URL's ``client_tls`` CA (else
    ``$FOGLINE_TLS_CA``, else the system's store) and presenting its client
    certificate, if any (a broker with ``require_certificate`` needs one). ``timeout`` bounds the TCP
    connect; ``reconnect`` lets paho's thread reconnect after a drop.
    ``manual_ack`` leaves a received QoS 1/2 message unacknowledged until
    ``client.ack(mid, qos)`` (a session that acknowledges a message only once
    its work is done). The socket sends small packets at once (TCP_NODELAY):
    a PUBACK or a short reply otherwise waits up to ~40 ms for Nagle's
    algorithm and the peer's delayed ACK.

    >>> new_client(MqttUrl("broker.local"), client_id="cam-7").protocol == paho.MQTTv5
    True
    >>> new_client(MqttUrl("broker.local"), client_id="")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: an MQTT client id is 1 to 65535 bytes of UTF-8 without NUL, got ''
    """
    if timeout <= 0:
        raise ConfigError(f"timeout must be positive, got {timeout}")
    if client_id is None:
        client_id = f"fogline-{secrets.token_hex(6)}"
    elif not _valid_client_id(client_id):
        raise ConfigError(
            f"an MQTT client id is 1 to {_MAX_CLIENT_ID_BYTES} bytes of UTF-8 without NUL, "
            f"got {client_id!r}"
        )
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5,
        reconnect_on_failure=reconnect,
        manual_ack=manual_ack,
    )
    client.on_socket_open = _no_delay
    client.connect_timeout = timeout
    if url.username is not None:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        settings = url.client_tls or ClientTls.from_env() or ClientTls()
        client.tls_set_context(settings.context())
    return client


def _no_delay(client: paho.Client, userdata: object, sock: object) -> None:
    # paho's hook for a new socket (a session with an external loop sets its own instead).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]


def _valid_client_id(client_id: str) -> bool:
    try:
        size = len(client_id.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    return 0 < size <= _MAX_CLIENT_ID_BYTES and "\x00" not in client_id


def connect_properties(session_expiry: int) -> Properties:
    """CONNECT properties asking the broker to keep the session ``session_expiry`` seconds."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    props.SessionExpiryInterval = session_expiry
    return props


def is_config_refusal(reason: ReasonCode) -> bool:
    """Whether a CONNACK or SUBACK ``reason`` is one that retrying cannot fix (credentials, ACL)."""
    return reason.value in CONFIG_REASONS


def connect_refusal(url: object, reason: ReasonCode) -> tuple[bool, str | None]:
    """Whether a CONNACK refused, and the error a session keeps when retrying cannot fix it.

    A refusal is logged; one that only retrying may fix (the broker busy) gives no error.
    """
    if not reason.is_failure:
        return False, None
    log.warning("%s refused the connection: %s", url, reason)
    return True, f"{url} refused the connection: {reason}" if is_config_refusal(reason) else None


def closed_before_connack(url: MqttUrl) -> TransportError:
    """The error for a connection the broker closed before answering CONNECT.

    Over TLS that is a broker requiring a client certificate (mutual TLS)
    that got none, or one it does not trust: :class:`Refused`, since
    retrying cannot fix it. Without TLS the broker may be shedding load.
    """
    if url.tls:
        return Refused(
            f"{url} closed the connection before answering: it requires a client certificate "
            "from its CA (mutual TLS) and got none or one it does not trust; give the device's "
            "certificate (enrolment, --tls-cert/--tls-key or FOGLINE_TLS_CERT/KEY)"
        )
    return Unreachable(f"{url} closed the connection before answering CONNECT")


def subscription_refusal(url: object, what: object, reasons: list[ReasonCode]) -> str | None:
    """The error for a SUBACK that refused a subscription to ``what``, else ``None``."""
    refused = [r for r in reasons if r.is_failure]
    return f"{url} refused the subscription to {what}: {refused[0]}" if refused else None


def stop_loop(client: paho.Client) -> None:
    """Stop paho's network thread; harmless when it already ended."""
    # paho's thread clears its own handle when it ends, maybe between loop_stop's check and join.
    with contextlib.suppress(AttributeError):
        client.loop_stop()


def received(message: paho.MQTTMessage) -> MqttMessage:
    """A message paho delivered, as an :class:`MqttMessage`; ``ValueError`` for a bad topic."""
    try:
        topic = Topic(message.topic)
    except UnicodeDecodeError as exc:
        raise ValueError(f"a topic that is not UTF-8: {exc}") from exc
    props = message.properties
    user = getattr(props, "UserProperty", None) if props else None
    expiry = getattr(props, "MessageExpiryInterval", None) if props else None
    return MqttMessage(
        topic,
        bytes(message.payload),
        message.qos,
        bool(message.retain),
        tuple(user or ()),
        None if expiry is None else int(expiry),
    )


def publish_queued(client: paho.Client, message: MqttMessage) -> bool:
    """Hand ``message`` to paho without waiting for its acknowledgement.

    True when it is sent, or queued until the connection is back; False
    (logged as a warning) when paho refused it, as a full queue does. For a
    retained message whose latest version is sent again on every connect
    (presence, state, desired state), where nobody waits for the PUBACK.
    """
    try:
        info = client.publish(
            message.topic.value,
            message.payload,
            message.qos,
            message.retain,
            _publish_properties(message),
        )
    except (ValueError, OSError) as exc:
        log.warning("cannot publish to %s: %s", message.topic, exc)
        return False
    if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
        log.warning("cannot publish to %s: %s", message.topic, paho.error_string(info.rc))
        return False
    return True


def publish_acknowledged(
    client: paho.Client,
    url: MqttUrl,
    messages: Sequence[MqttMessage],
    timeout: float,
    connected: threading.Event,
    reasons: MutableMapping[int, ReasonCode],
) -> None:
    """Publish ``messages`` in order on ``client`` and wait until the broker acknowledged each.

    ``connected`` is set while the client is connected; ``reasons`` is where
    the client's ``on_publish`` keeps each PUBACK's failing reason code by
    message id (paho calls it before it marks the message published). Raises
    :class:`Unreachable` when the client is not connected or the connection
    drops first, :class:`TimedOut` when ``timeout`` passes, :class:`Refused`
    when the broker refuses one (an ACL, a quota), :class:`TransportError`
    when paho cannot send one: the caller keeps the messages and sends them
    again.
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
            failure = Unreachable if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN else TransportError
            raise failure(f"{url}: cannot publish to {message.topic}: {paho.error_string(info.rc)}")
        sent.append((message, info))
    deadline = time.monotonic() + timeout
    for message, info in sent:
        while not info.is_published():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimedOut(
                    f"{url}: no acknowledgement for {message.topic} within {timeout:g} s"
                )
            if not connected.is_set():
                raise Unreachable(f"{url}: connection lost before {message.topic} was acknowledged")
            try:
                info.wait_for_publish(min(left, 0.1))
            except (RuntimeError, ValueError) as exc:
                raise TransportError(f"{url}: publish to {message.topic} failed: {exc}") from exc
        reason = reasons.pop(info.mid, None)
        if reason is not None and reason.is_failure:
            raise Refused(f"{url}: the broker refused {message.topic}: {reason}")


def _publish_properties(message: MqttMessage) -> Properties | None:
    if not message.user_properties and message.expiry_s is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if message.user_properties:
        props.UserProperty = list(message.user_properties)
    if message.expiry_s is not None:
        props.MessageExpiryInterval = message.expiry_s
    return props
