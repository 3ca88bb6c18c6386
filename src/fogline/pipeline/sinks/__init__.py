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

SPECS = (JsonlSinkSpec, StdoutSinkSpec, ShellSinkSpec)
TRANSPORT_SPECS = (JsonlTransportSpec,)

__all__ = [
    "SPECS",
    "TRANSPORT_SPECS",
    "JsonlSink",
    "JsonlSinkSpec",
    "JsonlTransportSpec",
    "ShellSink",
    "ShellSinkSpec",
    "StdoutSink",
    "StdoutSinkSpec",
]
