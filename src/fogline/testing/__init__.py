"""What fogline's tests and benchmarks use to stand in for a fleet: the simulated devices.

:class:`SimulatedFleet` runs N devices in one process, each with its own
MQTT 5 session and real TUF-verified installs, for the rollout tests and
``benchmarks/bench_fleet.py``; it leaves out each device's inference.
:class:`LocalFleet` runs the real thing as processes: a broker, ``fogline
controller`` and one ``fogline agent`` per device, each of which can be
killed with ``SIGKILL`` and started again.
"""

from fogline.testing._local_fleet import LocalFleet, free_port, wait_until
from fogline.testing._simulator import (
    SimulatedDevice,
    SimulatedFleet,
    SimulationStats,
    installer_factory,
)

__all__ = [
    "LocalFleet",
    "SimulatedDevice",
    "SimulatedFleet",
    "SimulationStats",
    "free_port",
    "installer_factory",
    "wait_until",
]
