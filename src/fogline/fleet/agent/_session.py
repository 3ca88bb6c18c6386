"""The agent's one MQTT 5 session: presence, desired state, commands and rounds in, state out.

One client from :func:`fogline.transport.mqtt.new_client` (so TLS for
``mqtts://`` and the URL's credentials) whose client id is the device id, with a persistent
session (clean start off, a session expiry interval) so commands sent while
the device is away wait for it at the broker. Its last will is
``Presence(online=False)``, retained, QoS 1 on the presence topic; on every
connect it publishes ``Presence(online=True)`` (retained), subscribes to its
``desired`` (retained) and ``command`` topics at QoS 1, and publishes its
latest state again (retained), so the controller sees the truth after a
broker restart or a long absence. In a second SUBSCRIBE it takes its
federated ``fl-round`` and ``fl-ack`` topics (both retained, QoS 1) and hands
their raw payloads to ``on_round`` and ``on_ack``; ``on_rounds_ready`` hears
each time that subscription is granted (the retained round and acknowledgement
follow). A broker whose ACL refuses those topics leaves the device out of
federated runs, said once as an event, and everything else goes on. paho reconnects on its own thread with a
backoff between ``reconnect_min`` and ``reconnect_max`` seconds.

Bodies are validated with the protocol's pydantic models; one that does not
validate is logged and dropped, never applied. A refusal that retrying
cannot fix (bad user name or password, not authorised) is kept in
:attr:`AgentSession.error` for the agent to report; paho goes on retrying
(the broker's password file may change), but a publish while refused raises
:class:`~fogline.errors.Refused` rather than
:class:`~fogline.errors.Unreachable`, so a caller can tell the two apart.

Concurrency: callbacks run on paho's network thread; ``on_desired``,
``on_command``, ``on_round``, ``on_ack`` and ``on_rounds_ready`` must return
quickly (the agent only hands them to its convergence and round threads). :meth:`AgentSession.publish_state` and
:meth:`~AgentSession.publish_and_wait` may be called from any thread.

Telemetry goes over this same connection (:meth:`~AgentSession.publish_and_wait`
is what the outbox transport calls): one connection per device, so a broker
that takes the user name as the client id (``use_username_as_clientid``)
does not make two connections of one device end each other.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from fogline.errors import ConfigError, Refused, TransportError, Unreachable
from fogline.protocol import (
    Command,
    DesiredState,
    DeviceState,
    DeviceTopics,
    Presence,
    privacy_topic,
)
from fogline.transport.mqtt import (
    MqttMessage,
    MqttUrl,
    Topic,
    closed_before_connack,
    connect_properties,
    is_config_refusal,
    new_client,
    publish_acknowledged,
    publish_queued,
    stop_loop,
)

log = logging.getLogger(__name__)

#: How long the broker keeps the session (and queued commands) of an absent device: 7 days.
DEFAULT_SESSION_EXPIRY = 7 * 24 * 3600


class AgentSession:
    """The MQTT connection of one device; see the module docstring.

    >>> session = AgentSession(MqttUrl("127.0.0.1", 1), DeviceTopics("fogline", "cam-7"))
    >>> session.connected, session.topics.presence
    (False, 'fogline/devices/cam-7/presence')
    """

    def __init__(
        self,
        url: MqttUrl,
        topics: DeviceTopics,
        *,
        on_desired: Callable[[DesiredState], None] = lambda desired: None,
        on_command: Callable[[Command], None] = lambda command: None,
        on_event: Callable[[str], None] = lambda line: None,
        on_round: Callable[[bytes], None] = lambda payload: None,
        on_ack: Callable[[bytes], None] = lambda payload: None,
        on_rounds_ready: Callable[[], None] = lambda: None,
        on_offer_ack: Callable[[bytes], None] = lambda payload: None,
        on_privacy: Callable[[bytes], None] | None = None,
        session_expiry: int = DEFAULT_SESSION_EXPIRY,
        keepalive: int = 30,
        reconnect_min: int = 1,
        reconnect_max: int = 30,
        timeout: float = 10.0,
    ) -> None:
        if session_expiry < 1:
            raise ConfigError(f"session_expiry must be at least 1 s, got {session_expiry}")
        if not 0 < reconnect_min <= reconnect_max:
            raise ConfigError(
                f"reconnect backoff needs 0 < min <= max, got {reconnect_min}, {reconnect_max}"
            )
        self.url = url
        self.topics = topics
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.error: str | None = None
        self._config_refused = False  # the last CONNACK refused credentials or the ACL
        self._on_desired = on_desired
        self._on_command = on_command
        self._on_event = on_event
        self._on_round = on_round
        self._on_ack = on_ack
        self._on_rounds_ready = on_rounds_ready
        self._round_topics = (topics.topic("fl-round"), topics.topic("fl-ack"))
        self._on_offer_ack = on_offer_ack
        self._offer_ack_topic = topics.topic("offer-ack")
        # The fleet's default egress policy: one retained topic every device reads.
        self._on_privacy = on_privacy
        self._privacy_topic = privacy_topic(topics.prefix)
        self._privacy_mid: int | None = None
        self._rounds_mid: int | None = None  # the SUBSCRIBE of the round topics
        self._rounds_mid_offer: int | None = None  # the SUBSCRIBE of the offer-ack topic
        self._rounds_refused = False
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self._state: DeviceState | None = None
        self._started = False
        self._closed = False
        self._client = new_client(url, client_id=topics.device_id, timeout=timeout)
        self._client.reconnect_delay_set(min_delay=reconnect_min, max_delay=reconnect_max)
        self._client.will_set(
            topics.presence, Presence(online=False).model_dump_json(), qos=1, retain=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._refused: dict[int, ReasonCode] = {}  # mid -> a failing PUBACK reason

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Connect in the background; paho retries until the broker answers."""
        if self._started:
            return
        self._started = True
        props = connect_properties(self.session_expiry)
        try:
            self._client.connect_async(
                self.url.host, self.url.port, self.keepalive, clean_start=False, properties=props
            )
        except OSError as exc:
            raise Unreachable(f"cannot connect to {self.url}: {exc}") from exc
        except ValueError as exc:  # paho's own check of the host, port or keepalive
            raise TransportError(f"cannot connect to {self.url}: {exc}") from exc
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        """Whether the session is connected and subscribed within ``timeout`` seconds."""
        return self._subscribed.wait(timeout) and self._connected.is_set()

    def publish_state(self, state: DeviceState) -> None:
        """Publish ``state`` retained at QoS 1 now, or on the next connect when offline.

        Only the latest state matters (it is retained), so a state published
        while offline is not queued: the newest one is sent on reconnect.
        """
        with self._lock:
            self._state = state
        if self._connected.is_set():
            self._publish(self.topics.state, state.model_dump_json(), retain=True)

    def publish_and_wait(self, messages: Sequence[MqttMessage], timeout: float = 10.0) -> None:
        """Publish ``messages`` in order on this session and wait for every acknowledgement.

        Raises a :class:`TransportError` when offline (:class:`Refused` when
        the broker refused this device's credentials or ACL on connect,
        :class:`Unreachable` otherwise), when the connection drops before the
        broker acknowledged, after ``timeout`` seconds, or when the broker
        refuses one (an ACL): the caller (the outbox) sends them again.
        """
        if not self._connected.is_set():
            offline = Refused if self._config_refused else Unreachable
            raise offline(f"{self.url}: not connected")
        publish_acknowledged(
            self._client, self.url, messages, timeout, self._connected, self._refused
        )

    def close(self, timeout: float = 5.0) -> None:
        """Say offline (retained), disconnect cleanly, stop paho's thread."""
        if self._closed:
            return
        self._closed = True
        if self._connected.is_set():
            info = self._client.publish(
                self.topics.presence, Presence(online=False).model_dump_json(), 1, True
            )
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout)
            self._client.disconnect()
        stop_loop(self._client)

    def __enter__(self) -> AgentSession:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- paho's thread -------------------------------------------------------------

    def _publish(self, topic: str, payload: str, *, retain: bool) -> None:
        publish_queued(self._client, MqttMessage(Topic(topic), payload.encode(), 1, retain))

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._config_refused = is_config_refusal(reason)
            if self._config_refused:
                self.error = f"{self.url} refused the connection: {reason}"
            self._on_event(f"broker {self.url} refused the connection: {reason}")
            return
        self.error = None
        self._config_refused = False
        self._connected.set()
        self._on_event(f"connected to {self.url}")
        self._publish(self.topics.presence, Presence(online=True).model_dump_json(), retain=True)
        client.subscribe([(self.topics.desired, 1), (self.topics.command, 1)])
        _, self._rounds_mid = client.subscribe([(topic, 1) for topic in self._round_topics])
        _, self._rounds_mid_offer = client.subscribe(self._offer_ack_topic, 1)
        if self._on_privacy is not None:
            _, self._privacy_mid = client.subscribe(self._privacy_topic, 1)
        with self._lock:
            state = self._state
        if state is not None:
            self._publish(self.topics.state, state.model_dump_json(), retain=True)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:  # only failures are kept: nobody waits for a state's PUBACK
            self._refused[mid] = reason

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        self._subscribed.clear()
        if was and not self._closed:
            self._on_event(f"disconnected from {self.url}: {reason}; reconnecting")
        elif not was and not self._closed and self.url.tls and self.error is None:
            # Closed before CONNACK over TLS: a certificate the broker does not take (mTLS).
            self.error = str(closed_before_connack(self.url))
            self._on_event(self.error)

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        refused = [r for r in reasons if r.is_failure]
        if mid == self._privacy_mid:
            if refused:  # a broker whose ACL predates fleet policies: devices keep their own
                self._on_event(f"{self.url} refused the fleet policy topic ({refused[0]})")
            return
        if mid == self._rounds_mid_offer:
            if refused:  # a broker whose ACL predates offers: fine-tunes are not offered
                self._on_event(f"{self.url} refused this device's offer-ack topic ({refused[0]})")
            return
        if mid == self._rounds_mid:
            if not refused:
                self._on_rounds_ready()
            elif not self._rounds_refused:  # said once: retrying cannot change the ACL
                self._rounds_refused = True
                self._on_event(
                    f"{self.url} refused this device's federated round topics ({refused[0]}): "
                    "it takes no part in federated runs"
                )
            return
        if refused:
            self.error = (
                f"{self.url} refused the subscription to this device's topics: {refused[0]}"
            )
            self._on_event(self.error)
        else:
            self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            if message.topic == self.topics.desired:
                if not message.payload:  # a cleared retained message: nothing is desired
                    return
                self._on_desired(DesiredState.model_validate_json(message.payload))
            elif message.topic == self.topics.command:
                self._on_command(Command.model_validate_json(message.payload))
            elif message.topic == self._round_topics[0]:
                self._on_round(bytes(message.payload))  # empty: the round was withdrawn
            elif message.topic == self._round_topics[1]:
                self._on_ack(bytes(message.payload))
            elif message.topic == self._offer_ack_topic:
                self._on_offer_ack(bytes(message.payload))
            elif message.topic == self._privacy_topic and self._on_privacy is not None:
                self._on_privacy(bytes(message.payload))
        except (ValidationError, UnicodeDecodeError, ValueError) as exc:
            log.warning("dropped a malformed message on %s: %s", message.topic, exc)
            self._on_event(f"dropped a malformed message on {message.topic}")
