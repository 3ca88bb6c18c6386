"""Where results go: JSON lines, stdout, a shell command, MQTT, a webhook; and outbox transports."""

from fogline.pipeline.sinks._basic import (
    JsonlSink,
    JsonlSinkSpec,
    JsonlTransportSpec,
    ShellSink,
    ShellSinkSpec,
    StdoutSink,
    StdoutSinkSpec,
)
from fogline.pipeline.sinks._http import HttpSink, HttpSinkSpec, HttpTransport, HttpTransportSpec
from fogline.pipeline.sinks._mqtt import MqttSink, MqttSinkSpec, MqttTransport, MqttTransportSpec
from fogline.pipeline.sinks._outbox import DEFAULT_OUTBOX_TOPIC, outbox_encoder
from fogline.pipeline.sinks._zmq import ZmqSink, ZmqSinkSpec

SPECS = (JsonlSinkSpec, StdoutSinkSpec, ShellSinkSpec, MqttSinkSpec, HttpSinkSpec, ZmqSinkSpec)
TRANSPORT_SPECS = (JsonlTransportSpec, MqttTransportSpec, HttpTransportSpec)

__all__ = [
    "DEFAULT_OUTBOX_TOPIC",
    "SPECS",
    "TRANSPORT_SPECS",
    "HttpSink",
    "HttpSinkSpec",
    "HttpTransport",
    "HttpTransportSpec",
    "JsonlSink",
    "JsonlSinkSpec",
    "JsonlTransportSpec",
    "MqttSink",
    "MqttSinkSpec",
    "MqttTransport",
    "MqttTransportSpec",
    "ShellSink",
    "ShellSinkSpec",
    "StdoutSink",
    "StdoutSinkSpec",
    "ZmqSink",
    "ZmqSinkSpec",
    "outbox_encoder",
]
