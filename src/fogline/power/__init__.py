"""Energy and power: what an inference costs in joules, and when deferrable work may run.

Two roles, one package, no numpy (the controller and the agent load it):

* energy meters: joules over a span of work, read from the CPU's energy
  counters (Linux powercap / RAPL) where the device exposes them, from the
  GPU's (NVML) for work on a GPU, else estimated from CPU time and a declared
  power figure; every figure says whether it was measured or estimated;
* deferral: whether work that can wait (federated training, sync of
  non-urgent results, fine-tuning) may run now, from the power supply (on
  mains, battery level), a time window, or a carbon-intensity value the user
  provides (a file or an MQTT topic).
"""

from fogline.power._carbon import CarbonFeed, CarbonReading, parse_carbon, read_carbon_file
from fogline.power._deferral import Deferral, Verdict, describe_age
from fogline.power._deferral_policy import (
    CarbonRule,
    DeferPolicy,
    load_defer_policy,
    parse_defer_policy,
    window_minutes,
)
from fogline.power._energy import (
    CPU_WATTS_ENV,
    DEFAULT_CPU_WATTS,
    POWERCAP_ROOT,
    RAPL_PEAK_WATTS,
    CpuClock,
    CpuTimeMeter,
    Energy,
    EnergyMeter,
    NvmlMeter,
    RaplMeter,
    Span,
    cpu_share_clock,
    cpu_watts,
    open_meter,
    runs_on_gpu,
)
from fogline.power._power_supply import POWER_SUPPLY, PowerState, read_power_supply

__all__ = [
    "CPU_WATTS_ENV",
    "DEFAULT_CPU_WATTS",
    "POWERCAP_ROOT",
    "POWER_SUPPLY",
    "RAPL_PEAK_WATTS",
    "CarbonFeed",
    "CarbonReading",
    "CarbonRule",
    "CpuClock",
    "CpuTimeMeter",
    "DeferPolicy",
    "Deferral",
    "Energy",
    "EnergyMeter",
    "NvmlMeter",
    "PowerState",
    "RaplMeter",
    "Span",
    "Verdict",
    "cpu_share_clock",
    "cpu_watts",
    "describe_age",
    "load_defer_policy",
    "open_meter",
    "parse_carbon",
    "parse_defer_policy",
    "read_carbon_file",
    "read_power_supply",
    "runs_on_gpu",
    "window_minutes",
]
