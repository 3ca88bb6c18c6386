"""What fogline's tests and benchmarks use to stand in for a fleet: the simulated devices.

:class:`SimulatedFleet` runs N devices in one process, each with its own
MQTT 5 session and real TUF-verified installs, for the rollout tests and
``benchmarks/bench_fleet.py``; it leaves out each device's inference.
"""

from fogline.testing._simulator import (
    SimulatedDevice,
    SimulatedFleet,
    SimulationStats,
    installer_factory,
)

__all__ = ["SimulatedDevice", "SimulatedFleet", "SimulationStats", "installer_factory"]
