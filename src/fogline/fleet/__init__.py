"""The control plane, as two roles: :mod:`fogline.fleet.controller` and :mod:`fogline.fleet.agent`.

They talk MQTT 5 through a standard broker (:mod:`fogline.transport.mqtt`)
in the messages of :mod:`fogline.protocol`; releases are signed TUF
metadata over content-addressed files (:mod:`fogline.security`).

This package loads neither role when it is imported: the controller must
start without the ML stack the agent's health checks use, and a tool that
only speaks the protocol needs neither. The names below load their role on
first use.
"""

__all__ = [
    "Agent",
    "AgentConfig",
    "Controller",
    "ControllerConfig",
    "ReleaseInstaller",
    "StagedRelease",
]

_ROLES = {
    "Agent": "fogline.fleet.agent",
    "AgentConfig": "fogline.fleet.agent",
    "ReleaseInstaller": "fogline.fleet.agent",
    "StagedRelease": "fogline.fleet.agent",
    "Controller": "fogline.fleet.controller",
    "ControllerConfig": "fogline.fleet.controller",
}


def __getattr__(name: str) -> object:
    if name in _ROLES:
        import importlib

        return getattr(importlib.import_module(_ROLES[name]), name)
    raise AttributeError(f"module 'fogline.fleet' has no attribute {name!r}")
