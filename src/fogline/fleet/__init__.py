"""The control plane: a controller and device agents talking MQTT 5 through a standard broker.

Releases are signed TUF metadata over content-addressed files
(:mod:`fogline.security`); the controller keeps the registry, rollouts and
telemetry; each agent converges its device to the desired state it reads
from the broker. Topics and message bodies are in :mod:`._protocol`.
"""

from fogline.fleet._protocol import (
    DEFAULT_PREFIX,
    Command,
    DesiredState,
    DeviceState,
    DeviceTopics,
    Metrics,
    Presence,
    ReleaseStatus,
    Telemetry,
    check_device_id,
    device_filter,
    parse_device_topic,
)
from fogline.transport.mqtt import (
    BrokerConfig,
    Credentials,
    LocalBroker,
    PasswordFile,
    acl_lines,
    device_credentials,
    reload_broker,
)

__all__ = [
    "DEFAULT_PREFIX",
    "Agent",
    "AgentConfig",
    "BrokerConfig",
    "Command",
    "Credentials",
    "DesiredState",
    "DeviceState",
    "DeviceTopics",
    "LocalBroker",
    "Metrics",
    "PasswordFile",
    "Presence",
    "ReleaseInstaller",
    "ReleaseStatus",
    "StagedRelease",
    "Telemetry",
    "acl_lines",
    "check_device_id",
    "device_credentials",
    "device_filter",
    "parse_device_topic",
    "reload_broker",
]

# The agent and the installer need the 'fleet' extra (python-tuf); a device or a
# tool that only speaks the protocol should not, so they load on first use.
_LAZY = {
    "Agent": "fogline.fleet._agent",
    "AgentConfig": "fogline.fleet._agent",
    "ReleaseInstaller": "fogline.fleet._installer",
    "StagedRelease": "fogline.fleet._installer",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fogline.fleet' has no attribute {name!r}")
