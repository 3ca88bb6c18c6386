"""The device agent: one MQTT session, convergence to the desired state, releases, telemetry.

It reads its desired state from the broker (:mod:`fogline.protocol`,
:mod:`fogline.transport.mqtt`), verifies and installs signed releases
(:class:`ReleaseInstaller`, python-tuf), checks their health, runs them as
child processes and reports their metrics. It is the only part of the
fleet that touches the data plane (``model``, ``pipeline``, ``serve``), and
only in :mod:`.kinds`: one module per release kind (how to health-check it,
the child that runs it, the metrics it reports), so a new kind is one new
module.

Concurrency: paho's network thread hands messages to the converger's own
thread; the supervisor, telemetry reporter and outbox sender each run on a
thread of their own.
"""

from fogline.fleet.agent._agent import Agent, AgentConfig
from fogline.fleet.agent._enrol import DeviceLogin, read_credentials
from fogline.fleet.agent._installer import ReleaseInstaller, StagedRelease

__all__ = [
    "Agent",
    "AgentConfig",
    "DeviceLogin",
    "ReleaseInstaller",
    "StagedRelease",
    "read_credentials",
]
