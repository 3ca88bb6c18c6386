"""Whether the device runs on mains power, and its battery level, from Linux's power_supply class.

The kernel lists each power supply as a folder under
``/sys/class/power_supply`` with small text files: ``type`` (``Mains``,
``USB``, ``Battery``, ``UPS``, ``Wireless``), ``online`` (1 or 0, for an
external supply), ``capacity`` (percent) and ``status`` (``Charging``,
``Discharging``, ``Full``, ``Not charging``) for a battery, and ``scope``
(``Device`` for a peripheral's battery, a mouse's, which says nothing about
this machine's power). The folder is a parameter, so a test (or a device
whose /sys is mounted elsewhere) gives its own.

The rules, in order:

* no supply listed (a desktop, a server, most single-board computers and
  containers): on mains, and the reading says it assumed so;
* an external supply that is ``online``: on mains;
* a battery that is ``Discharging``, or external supplies that are all
  offline: on battery;
* only batteries, none discharging (``Full``, ``Charging``): on mains.

The battery level is the mean ``capacity`` of the system's batteries.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["POWER_SUPPLY", "PowerState", "read_power_supply"]

#: Where Linux lists the power supplies.
POWER_SUPPLY = Path("/sys/class/power_supply")

_EXTERNAL = frozenset({"Mains", "USB", "UPS", "Wireless"})


@dataclass(frozen=True)
class PowerState:
    """What the power supply said: on mains or not, the battery level (None: no battery).

    ``assumed`` is set when nothing was listed and mains was taken as given;
    :meth:`describe` says it in a sentence.

    >>> PowerState(on_mains=False, battery_percent=38.0).describe()
    'on battery (38 %)'
    >>> PowerState(on_mains=True, battery_percent=None, assumed="/sys/class/power_supply").describe()
    'on mains power (no power supply listed under /sys/class/power_supply: taken as mains)'
    """

    on_mains: bool
    battery_percent: float | None = None
    #: The folder that listed no power supply, when mains was assumed.
    assumed: str | None = None

    def describe(self) -> str:
        if self.assumed is not None:
            return f"on mains power (no power supply listed under {self.assumed}: taken as mains)"
        level = "" if self.battery_percent is None else f" ({self.battery_percent:.0f} %)"
        return f"on mains power{level}" if self.on_mains else f"on battery{level}"


def _read(folder: Path, name: str) -> str | None:
    try:
        return (folder / name).read_text(encoding="ascii", errors="replace").strip()
    except OSError:  # absent for this kind of supply, or unreadable: the kernel did not say
        return None


def read_power_supply(root: Path = POWER_SUPPLY) -> PowerState:
    """Read the power supplies listed under ``root``; see the module docstring for the rules."""
    try:
        folders = sorted(p for p in Path(root).iterdir() if p.is_dir())
    except OSError:  # no such folder: not Linux, or a container without /sys
        folders = []
    external: list[bool] = []  # online, per external supply
    discharging = False
    levels: list[float] = []
    for folder in folders:
        kind = _read(folder, "type")
        if kind in _EXTERNAL:
            external.append(_read(folder, "online") == "1")
        elif kind == "Battery":
            if _read(folder, "scope") == "Device":  # a peripheral's battery
                continue
            if _read(folder, "status") == "Discharging":
                discharging = True
            capacity = _read(folder, "capacity")
            with contextlib.suppress(ValueError):
                levels.append(max(0.0, min(100.0, float(capacity or ""))))
    level = sum(levels) / len(levels) if levels else None
    if not external and level is None and not discharging:
        return PowerState(on_mains=True, assumed=str(root))
    if any(external):
        return PowerState(on_mains=True, battery_percent=level)
    on_battery = discharging or bool(external)
    return PowerState(on_mains=not on_battery, battery_percent=level)
