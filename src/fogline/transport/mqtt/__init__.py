"""MQTT 5 for every fogline component: value objects, one client factory, publish, subscribe, broker admin.

* Value objects (frozen, self-validating, ``ValueError`` when malformed):
  :class:`MqttUrl`, :class:`Topic`, :class:`TopicFilter` (with MQTT 5 shared
  subscriptions, ``$share/GROUP/filter``), :class:`TopicTemplate` (rendered
  from a mapping), :class:`MqttMessage`; and the pydantic field types
  :data:`BrokerUrl`, :data:`TopicFilterField`, :data:`TopicTemplateField`.
* :func:`new_client`: the one way to make a paho client (MQTT 5, the URL's
  credentials, TLS for ``mqtts://``, client id rules), with
  :func:`connect_properties`, :func:`publish_acknowledged` (publish and wait
  for the PUBACK), :func:`publish_queued`, :func:`received`,
  :func:`is_config_refusal` and :func:`stop_loop` for sessions that need
  their own callbacks (the fleet's agent and controller, the simulator).
* :class:`MqttPublisher` and :class:`MqttSubscriber` for everything else.
* The local Mosquitto: :class:`BrokerConfig`, :class:`PasswordFile`, the ACL
  (:func:`acl_lines`), :class:`LocalBroker`.

Built on paho-mqtt 2 (callback API 2). Concurrency: each client's network
I/O and callbacks run on paho's own thread (``loop_start``) — or, for the
simulator, on an asyncio loop through paho's external-loop hooks — and
callbacks only record what arrived (events, queues, reason codes by message
id). A :class:`MqttPublisher`, a :class:`MqttSubscriber` or a session
built on :func:`new_client` is driven from one other thread at a time (its
``publish`` serialises connects behind a lock). Errors from paho and sockets
are mapped here: a :class:`~fogline.errors.TransportError` when a message
could not be delivered, as the most specific subclass:
:class:`~fogline.errors.Unreachable` (no connection, or a CONNACK saying
the broker is busy or unavailable), :class:`~fogline.errors.Refused` (a
CONNACK reason in :data:`CONFIG_REASONS`, or a PUBACK with a failure
reason: retrying cannot fix it), :class:`~fogline.errors.TimedOut` (no
CONNACK or PUBACK in time); :class:`~fogline.errors.ConfigError` for a bad
option. This package imports only
:mod:`fogline.errors` (and ``fogline._files`` for the broker's private
folder): never the store, the pipeline, numpy or ONNX.
"""

from fogline.transport.mqtt._acl import acl_lines
from fogline.transport.mqtt._broker import (
    BrokerConfig,
    LocalBroker,
    controller_url,
    device_credentials,
    mosquitto_binary,
    reload_broker,
)
from fogline.transport.mqtt._client import (
    CONFIG_REASONS,
    closed_before_connack,
    connect_properties,
    connect_refusal,
    is_config_refusal,
    new_client,
    publish_acknowledged,
    publish_queued,
    received,
    stop_loop,
    subscription_refusal,
)
from fogline.transport.mqtt._passwords import Credentials, PasswordFile
from fogline.transport.mqtt._publisher import MqttPublisher
from fogline.transport.mqtt._subscriber import MqttSubscriber
from fogline.transport.mqtt._values import (
    BrokerUrl,
    MqttMessage,
    MqttUrl,
    Topic,
    TopicFilter,
    TopicFilterField,
    TopicTemplate,
    TopicTemplateField,
    json_payload,
    to_url,
)

__all__ = [
    "CONFIG_REASONS",
    "BrokerConfig",
    "BrokerUrl",
    "Credentials",
    "LocalBroker",
    "MqttMessage",
    "MqttPublisher",
    "MqttSubscriber",
    "MqttUrl",
    "PasswordFile",
    "Topic",
    "TopicFilter",
    "TopicFilterField",
    "TopicTemplate",
    "TopicTemplateField",
    "acl_lines",
    "closed_before_connack",
    "connect_properties",
    "connect_refusal",
    "controller_url",
    "device_credentials",
    "is_config_refusal",
    "json_payload",
    "mosquitto_binary",
    "new_client",
    "publish_acknowledged",
    "publish_queued",
    "received",
    "reload_broker",
    "stop_loop",
    "subscription_refusal",
    "to_url",
]
