"""Energy meters: joules over a span of work, measured where the device can, estimated where not.

Three meters, one interface (:class:`EnergyMeter`: ``read()`` gives the joules
counted since the meter opened, and ``span()`` measures a block):

* :class:`RaplMeter` reads the CPU packages' energy counters that Linux
  exposes through powercap (``/sys/class/powercap/intel-rapl:N/energy_uj``;
  AMD's RAPL package domains appear under the same names on recent kernels).
  A counter wraps at ``max_energy_range_uj``; the meter adds the wrap back.
  The package counter counts every process on it (and idle power); the meter
  attributes to this process its share by CPU time, as Kepler and Scaphandre
  do: over each span between two reads, the package's joules times this
  process's CPU time over the host's total CPU time (all CPUs, idle included,
  from ``/proc/stat`` through psutil). Two releases on one device thus report
  two shares, not the package twice; what no process used (idle) is in no
  release's figure. Limit: the counter is sampled only when read (no thread),
  so it must be read at least once per wrap (``max_energy_range_uj``, often
  262,143 J, at the package's peak power: ~22 min at 200 W, ~11 min at 400 W;
  ``RaplMeter.max_read_interval_s`` assumes :data:`RAPL_PEAK_WATTS`); a span
  longer than that between reads, e.g. a server not scraped for that long,
  undercounts by whole wraps. A Prometheus scrape every 15-60 s is far inside it.
* :class:`NvmlMeter` reads a GPU's total energy counter through NVML
  (``nvidia-ml-py``, the ``gpu`` extra, imported only when asked for): for
  work that runs on the GPU; the host CPU is not in it.
* :class:`CpuTimeMeter` estimates: the CPU time this process spent (user +
  system, all its threads) times a declared power per busy core,
  ``FOGLINE_CPU_WATTS`` or :data:`DEFAULT_CPU_WATTS`. It is an estimate and
  says so; idle, uncore and memory power are not in it.

:func:`open_meter` picks the best meter the device has and records why the
others were passed over (``meter.why``), so a figure is never mistaken for
what it is not. Every :class:`Energy` carries ``measured`` and a ``label``.

CodeCarbon does this job for training runs, but it loads pandas and numpy,
which this package (loaded by the controller and the agent) must not, and it
tracks a run rather than exposing a counter a scrape can read; the counters
themselves are a few sysfs files and one NVML call.

Concurrency: a meter may be read from several threads (a benchmark and a
Prometheus scrape); reads are serialised by a lock.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fogline.errors import ConfigError, DataError

#: Where Linux exposes power-capping zones (RAPL among them).
POWERCAP_ROOT = Path("/sys/class/powercap")
#: The environment variable that declares the power of one busy CPU core, in watts.
CPU_WATTS_ENV = "FOGLINE_CPU_WATTS"
#: Watts per busy core when nothing is declared: a desktop-class x86 core at full load,
#: its package's TDP divided by its cores (65 W / 6 cores ≈ 11 W, rounded down to 10).
#: A server core draws less (280 W / 64 cores ≈ 4.4 W), an Arm edge core far less (~1-2 W):
#: declare the device's own figure with ``FOGLINE_CPU_WATTS``.
DEFAULT_CPU_WATTS = 10.0
#: The peak package power assumed when a zone does not declare one, for the longest safe
#: interval between two reads of a RAPL counter (one wrap at this power).
RAPL_PEAK_WATTS = 400.0

#: ``() -> (this process's CPU seconds, the host's total CPU seconds)``: what a RAPL
#: reading is shared by (:func:`cpu_share_clock`; a test passes its own).
CpuClock = Callable[[], tuple[float, float]]


@dataclass(frozen=True)
class Energy:
    """Joules spent over ``seconds`` of work, and whether they were measured or estimated.

    ``source`` is the meter (``rapl``, ``nvml`` or ``cpu-time``), ``detail``
    what it read (``package-0``, ``CPU time x 10 W per core``), ``note`` why
    this meter and not a better one (empty when none was passed over).

    >>> e = Energy(0.5, 2.0, "cpu-time", False, "CPU time x 10 W per core")
    >>> e.label, e.watts, e.per(100)
    ('estimated (CPU time x 10 W per core)', 0.25, 0.005)
    """

    joules: float
    seconds: float
    source: str
    measured: bool
    detail: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.joules < 0 or self.seconds < 0:
            raise ValueError(
                f"energy and time cannot be negative: {self.joules} J, {self.seconds} s"
            )

    @property
    def kind(self) -> str:
        """``measured`` or ``estimated``."""
        return "measured" if self.measured else "estimated"

    @property
    def label(self) -> str:
        return f"{self.kind} ({self.detail})"

    @property
    def watts(self) -> float:
        """Mean power over the span (0 for an empty span)."""
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    def per(self, items: int) -> float:
        """Joules per item when ``items`` items were done in the span."""
        return self.joules / items if items > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "joules": float(f"{self.joules:.6g}"),
            "seconds": round(self.seconds, 6),
            "watts": float(f"{self.watts:.4g}"),
            "source": self.source,
            "measured": self.measured,
            "label": self.label,
            "note": self.note,
        }


@dataclass
class Span:
    """A block of work being measured; ``energy`` is set when the block ends."""

    meter: EnergyMeter
    start_joules: float
    start_time: float
    energy: Energy | None = field(default=None)

    def stop(self) -> Energy:
        """End the span (once); later calls return the same figure."""
        if self.energy is None:
            self.energy = self.meter.since(self.start_joules, self.start_time)
        return self.energy


class EnergyMeter(ABC):
    """Counts joules from when it opened: ``read()`` is monotonic, ``span()`` measures a block.

    Subclasses implement ``_read()``; ``why`` says which better meters were
    passed over and why (set by :func:`open_meter`).
    """

    source: str
    measured: bool
    detail: str

    def __init__(self) -> None:
        self.why = ""
        self._lock = threading.Lock()

    @abstractmethod
    def _read(self) -> float:
        """Joules counted since this meter opened."""

    def read(self) -> float:
        """Joules counted since this meter opened (thread-safe, never decreasing)."""
        with self._lock:
            return self._read()

    def since(self, joules: float, when: float) -> Energy:
        """The energy from an earlier ``(read(), time.perf_counter())`` until now."""
        now_joules, now = self.read(), time.perf_counter()
        return Energy(
            max(0.0, now_joules - joules),
            max(0.0, now - when),
            self.source,
            self.measured,
            self.detail,
            self.why,
        )

    def start(self) -> Span:
        """Start measuring; ``span.stop()`` gives the :class:`Energy` since."""
        return Span(self, self.read(), time.perf_counter())

    @contextmanager
    def span(self) -> Iterator[Span]:
        """Measure the block: ``span.energy`` is set when it ends."""
        running = self.start()
        try:
            yield running
        finally:
            running.stop()

    def close(self) -> None:  # noqa: B027 - optional: only NVML holds anything
        """Release what the meter holds (NVML's handle)."""


def cpu_watts(value: str | float | None = None) -> float:
    """The declared watts per busy core: ``value``, else ``FOGLINE_CPU_WATTS``, else the default.

    >>> cpu_watts("4.5")
    4.5
    """
    raw = value if value is not None else os.environ.get(CPU_WATTS_ENV)
    if raw is None or raw == "":
        return DEFAULT_CPU_WATTS
    try:
        watts = float(raw)
    except ValueError:
        raise ConfigError(f"{CPU_WATTS_ENV}={raw!r}: expected watts per core, a number") from None
    if not 0 < watts < 1000:
        raise ConfigError(f"{CPU_WATTS_ENV}={raw!r}: expected watts per core in (0, 1000)")
    return watts


def process_cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used.

    ``time.process_time`` reads the kernel's per-process CPU clock to the
    nanosecond; ``os.times`` would count in 10 ms clock ticks.
    """
    return time.process_time()


class CpuTimeMeter(EnergyMeter):
    """An estimate: this process's CPU time times a declared power per busy core.

    >>> meter = CpuTimeMeter(watts_per_core=4.0)
    >>> meter.measured, meter.detail
    (False, 'CPU time x 4 W per core')
    """

    source = "cpu-time"
    measured = False

    def __init__(self, watts_per_core: float | None = None) -> None:
        super().__init__()
        self.watts_per_core = cpu_watts(watts_per_core)
        self.detail = f"CPU time x {self.watts_per_core:g} W per core"
        self._start = process_cpu_seconds()

    def _read(self) -> float:
        return (process_cpu_seconds() - self._start) * self.watts_per_core


@dataclass
class _Counter:
    """One powercap energy counter and what has been added up from it."""

    path: Path
    wrap_uj: int
    last_uj: int
    total_uj: int = 0

    def advance(self) -> int:
        """Read the counter; the microjoules since the last read (raises DataError)."""
        try:
            raw = int(self.path.read_text().strip())
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc
            raise DataError(f"RAPL counter {self.path} cannot be read: {reason}") from exc
        # A counter below its last value wrapped at max_energy_range_uj. Once only: a counter
        # that wrapped twice between two reads cannot be told from one that wrapped once
        # (see the module's note: read at least every RaplMeter.max_read_interval_s).
        step = raw - self.last_uj if raw >= self.last_uj else self.wrap_uj - self.last_uj + raw
        self.total_uj += step
        self.last_uj = raw
        return step


def rapl_zones(root: Path = POWERCAP_ROOT) -> list[tuple[str, Path]]:
    """``(name, folder)`` of the RAPL package zones under ``root`` (none: an empty list).

    Top-level zones only (``intel-rapl:0``, not its ``core``/``dram`` subzones,
    which are inside or beside the package); zones named ``package-N`` when
    there are any, else every top-level zone (``psys`` on a laptop).
    """
    try:
        folders = sorted(p for p in root.iterdir() if p.name.count(":") == 1 and "rapl" in p.name)
    except OSError:
        return []
    zones = []
    for folder in folders:
        try:
            zones.append((folder.joinpath("name").read_text().strip(), folder))
        except OSError:
            continue
    packages = [(name, folder) for name, folder in zones if name.startswith("package")]
    return packages or zones


def cpu_share_clock() -> tuple[float, float]:
    """This process's CPU seconds (user + system) and the host's total CPU seconds.

    Both from the kernel's clock-tick accounting through psutil (``/proc/self/stat``
    and ``/proc/stat``: every CPU, idle and I/O wait included), so their ratio over
    a span is this process's share of the host's CPU time.
    """
    import psutil

    own = psutil.Process().cpu_times()
    return own.user + own.system, sum(psutil.cpu_times())


class RaplMeter(EnergyMeter):
    """Measured: the CPU packages' RAPL energy, this process's share of it by CPU time.

    ``share`` gives ``(process CPU s, host CPU s)`` (default :func:`cpu_share_clock`);
    ``share=None`` counts the whole package (every process, idle included), e.g.
    for a device-wide figure. Raises :class:`~fogline.errors.ConfigError` when
    ``root`` holds no RAPL zone or its counters cannot be read (kernels patched
    for CVE-2020-8694 let only root read ``energy_uj``); a counter that stops
    being readable later raises :class:`~fogline.errors.DataError` naming it.

    >>> RaplMeter.SHARE_DETAIL
    "this process's CPU-time share"
    """

    source = "rapl"
    measured = True
    SHARE_DETAIL = "this process's CPU-time share"

    def __init__(
        self, root: Path | str = POWERCAP_ROOT, *, share: CpuClock | None = cpu_share_clock
    ) -> None:
        super().__init__()
        root = Path(root)
        zones = rapl_zones(root)
        if not zones:
            why = "absent" if not root.exists() else "holds no RAPL zone"
            raise ConfigError(f"no RAPL energy counter: {root} {why}")
        counters: list[_Counter] = []
        for name, folder in zones:
            try:
                wrap = int(folder.joinpath("max_energy_range_uj").read_text().strip())
                counters.append(_Counter(folder / "energy_uj", wrap, 0))
                counters[-1].last_uj = int(counters[-1].path.read_text().strip())
            except (OSError, ValueError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else exc
                raise ConfigError(f"RAPL {name} ({folder}) cannot be read: {reason}") from exc
        self._counters = counters
        self._share = share
        self._cpu = share() if share is not None else (0.0, 0.0)
        self._shared_uj = 0.0
        self.detail = "RAPL " + "+".join(name for name, _ in zones)
        if share is not None:
            self.detail += f", {self.SHARE_DETAIL}"
        self.max_read_interval_s = min(c.wrap_uj for c in counters) / 1e6 / RAPL_PEAK_WATTS

    def _read(self) -> float:
        step_uj = sum(counter.advance() for counter in self._counters)
        if self._share is None:
            return sum(c.total_uj for c in self._counters) / 1e6
        own, host = self._share()
        own_step, host_step = own - self._cpu[0], host - self._cpu[1]
        self._cpu = (own, host)
        if host_step > 0:
            self._shared_uj += step_uj * min(1.0, max(0.0, own_step / host_step))
        return self._shared_uj / 1e6


class NvmlMeter(EnergyMeter):
    """Measured: a GPU's total energy counter through NVML (Volta and newer).

    Raises :class:`~fogline.errors.ConfigError` when ``nvidia-ml-py`` is not
    installed, NVML does not start (no driver, no GPU) or the GPU has no
    energy counter.
    """

    source = "nvml"
    measured = True

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        try:
            nvml: Any = importlib.import_module("pynvml")
        except ImportError as exc:
            raise ConfigError("no NVML: nvidia-ml-py is not installed (fogline[gpu])") from exc
        try:
            nvml.nvmlInit()
        except Exception as exc:  # pynvml.NVMLError and its generated subclasses
            raise ConfigError(f"no NVML: {exc}") from exc
        try:
            self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(self._handle)
            self._start_mj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception as exc:
            nvml.nvmlShutdown()
            raise ConfigError(f"no NVML energy counter on GPU {index}: {exc}") from exc
        self._nvml = nvml
        name = name.decode() if isinstance(name, bytes) else str(name)
        self.detail = f"NVML GPU {index} {name}"

    def _read(self) -> float:
        if self._nvml is None:
            raise DataError(f"{self.detail}: the meter is closed")
        try:
            now = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except Exception as exc:  # pynvml.NVMLError (GPU lost, driver reset...)
            raise DataError(f"{self.detail}: energy counter cannot be read: {exc}") from exc
        return (now - self._start_mj) / 1000.0

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None


def runs_on_gpu(device: str) -> bool:
    """Whether an engine's ``device`` (an execution provider's name) is an NVIDIA GPU.

    >>> runs_on_gpu("CUDAExecutionProvider"), runs_on_gpu("CPUExecutionProvider")
    (True, False)
    """
    return any(word in device.lower() for word in ("cuda", "tensorrt"))


def open_meter(
    device: str = "cpu",
    *,
    root: Path | str = POWERCAP_ROOT,
    gpu_index: int = 0,
    watts_per_core: float | None = None,
) -> EnergyMeter:
    """The best energy meter for work on ``device``, with ``why`` the better ones were not used.

    Work on an NVIDIA GPU: NVML; else the CPU's RAPL counters under ``root``;
    else the CPU-time estimate. Each meter passed over adds its reason to
    ``why``, e.g. ``"no RAPL energy counter: /sys/class/powercap absent"``;
    GPU work metered on the host says ``host CPU only`` in its label.
    """
    reasons: list[str] = []
    candidates: list[Any] = []
    if runs_on_gpu(device):
        candidates.append(lambda: NvmlMeter(gpu_index))
    candidates.append(lambda: RaplMeter(root))
    for make in candidates:
        try:
            meter: EnergyMeter = make()
        except ConfigError as exc:
            reasons.append(str(exc))
            continue
        break
    else:
        meter = CpuTimeMeter(watts_per_core)
    meter.why = "; ".join(reasons)
    if runs_on_gpu(device) and not isinstance(meter, NvmlMeter):
        # Work on the GPU metered on the host: the label must not pass it off as the whole.
        meter.detail += ", host CPU only"
    return meter
