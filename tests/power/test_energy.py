"""Energy meters: reading powercap counters (and their wrap-around), the choice of meter, the estimate.

The powercap folders here stand in for the kernel's files (this machine, a
VM, has no /sys/class/powercap): the tests are about how fogline reads them,
adds a wrapped counter back and chooses between meters, not about the kernel.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from fogline.errors import ConfigError, DataError
from fogline.power import (
    CPU_WATTS_ENV,
    DEFAULT_CPU_WATTS,
    RAPL_PEAK_WATTS,
    CpuTimeMeter,
    Energy,
    NvmlMeter,
    RaplMeter,
    cpu_watts,
    open_meter,
)


def zone(root: Path, folder: str, name: str, energy_uj: int, max_uj: int) -> Path:
    """A powercap zone laid out as Linux lays it out: name, energy_uj, max_energy_range_uj."""
    path = root / folder
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


def set_counter(path: Path, energy_uj: int) -> None:
    (path / "energy_uj").write_text(f"{energy_uj}\n")


def burn_cpu(seconds: float) -> None:
    """Spend about ``seconds`` of this thread's CPU time."""
    start = time.process_time()
    total = 0
    while time.process_time() - start < seconds:
        total += sum(range(1000))


def test_rapl_adds_the_packages_and_skips_their_subzones(tmp_path: Path) -> None:
    # Prepare: two packages, each with a core subzone that is part of its package
    package0 = zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, 262_143_328_850)
    zone(tmp_path, "intel-rapl:0:0", "core", 500_000, 262_143_328_850)
    package1 = zone(tmp_path, "intel-rapl:1", "package-1", 7_000_000, 262_143_328_850)
    meter = RaplMeter(tmp_path, share=None)  # the whole packages

    # Execute: both packages count some microjoules, the subzone counts too (and must not add)
    with meter.span() as span:
        set_counter(package0, 1_000_000 + 2_500_000)
        set_counter(package1, 7_000_000 + 1_250_000)
        set_counter(tmp_path / "intel-rapl:0:0", 9_999_999)

    # Assert
    assert span.energy is not None
    assert span.energy.joules == pytest.approx((2_500_000 + 1_250_000) / 1e6)
    assert span.energy.measured and span.energy.source == "rapl"
    assert span.energy.label == "measured (RAPL package-0+package-1)"


def test_rapl_adds_back_a_counter_that_wrapped(tmp_path: Path) -> None:
    # Prepare: a counter close to its range
    max_uj = 65_532_610_987
    near_top = max_uj - 300_000
    package = zone(tmp_path, "intel-rapl:0", "package-0", near_top, max_uj)
    meter = RaplMeter(tmp_path, share=None)
    start = meter.read()

    # Execute: it passes the top and starts again from zero, then goes on
    after_wrap = 200_000
    set_counter(package, after_wrap)
    wrapped = meter.read()
    set_counter(package, after_wrap + 1_000_000)
    later = meter.read()

    # Assert: the energy is what the counter went through, never negative
    assert wrapped - start == pytest.approx((max_uj - near_top + after_wrap) / 1e6)
    assert later - wrapped == pytest.approx(1_000_000 / 1e6)
    # one wrap between reads is the limit: the interval it allows is the range at the peak power
    assert meter.max_read_interval_s == pytest.approx(max_uj / 1e6 / RAPL_PEAK_WATTS)


class Clock:
    """CPU seconds that a test moves: this process's and the host's (all CPUs)."""

    def __init__(self) -> None:
        self.own, self.host = 10.0, 1000.0

    def __call__(self) -> tuple[float, float]:
        return self.own, self.host

    def spend(self, own: float, host: float) -> None:
        self.own, self.host = self.own + own, self.host + host


def test_rapl_gives_this_process_its_cpu_time_share_of_the_package(tmp_path: Path) -> None:
    # Prepare: a package read by two releases' processes on one device
    package = zone(tmp_path, "intel-rapl:0", "package-0", 0, 262_143_328_850)
    first_clock, second_clock = Clock(), Clock()
    first = RaplMeter(tmp_path, share=first_clock)
    second = RaplMeter(tmp_path, share=second_clock)

    # Execute: 8 J over a span where the host spent 4 CPU s: 1 s the first, 2 s the second;
    # then 2 J where the first spent nothing
    first_clock.spend(1.0, 4.0)
    second_clock.spend(2.0, 4.0)
    set_counter(package, 8_000_000)
    got_first, got_second = first.read(), second.read()
    first_clock.spend(0.0, 4.0)
    set_counter(package, 10_000_000)
    idle_first = first.read()

    # Assert: each its share, the two together less than the package (the rest was idle/other)
    assert got_first == pytest.approx(8.0 * 1.0 / 4.0)
    assert got_second == pytest.approx(8.0 * 2.0 / 4.0)
    assert got_first + got_second < 8.0
    assert idle_first == pytest.approx(got_first)
    assert first.start().stop().label == (
        "measured (RAPL package-0, this process's CPU-time share)"
    )


def test_rapl_share_from_the_kernel_counts_this_process_within_the_package(
    tmp_path: Path,
) -> None:
    package = zone(tmp_path, "intel-rapl:0", "package-0", 0, 262_143_328_850)
    meter = RaplMeter(tmp_path)  # psutil: /proc/self/stat over /proc/stat

    with meter.span() as span:
        burn_cpu(0.3)
        set_counter(package, 50_000_000)

    assert span.energy is not None
    assert 0 < span.energy.joules <= 50.0


def test_a_counter_that_cannot_be_read_later_is_a_data_error_naming_it(tmp_path: Path) -> None:
    package = zone(tmp_path, "intel-rapl:0", "package-0", 0, 1 << 32)
    meter = RaplMeter(tmp_path)
    (package / "energy_uj").unlink()

    with pytest.raises(DataError, match=str(package / "energy_uj")):
        meter.read()


def test_a_folder_without_rapl_falls_back_to_the_estimate_and_says_why(tmp_path: Path) -> None:
    zone(tmp_path, "dtpm:0", "dtpm", 0, 100)  # another powercap control type, not RAPL

    meter = open_meter("CPUExecutionProvider", root=tmp_path)

    assert isinstance(meter, CpuTimeMeter)
    assert not meter.measured
    assert f"{tmp_path} holds no RAPL zone" in meter.why
    with pytest.raises(ConfigError, match="absent"):
        RaplMeter(tmp_path / "missing")


def test_a_readable_rapl_folder_is_chosen_for_work_on_the_cpu(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 0, 1 << 32)

    meter = open_meter("CPUExecutionProvider", root=tmp_path)

    assert isinstance(meter, RaplMeter)
    assert meter.why == ""


def test_gpu_work_metered_on_the_host_says_host_cpu_only(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", "package-0", 0, 1 << 32)

    meter = open_meter("CUDAExecutionProvider", root=tmp_path)
    if isinstance(meter, NvmlMeter):
        pytest.skip("this machine has a GPU that NVML reads: nothing falls back")

    assert isinstance(meter, RaplMeter)
    assert meter.start().stop().label.endswith(", host CPU only)")
    assert "no NVML" in meter.why


def test_gpu_work_without_nvml_falls_back_with_a_clear_reason(tmp_path: Path) -> None:
    meter = open_meter("CUDAExecutionProvider", root=tmp_path / "no-powercap")
    if isinstance(meter, NvmlMeter):
        pytest.skip("this machine has a GPU that NVML reads: nothing falls back")

    energy = meter.start().stop()

    assert isinstance(meter, CpuTimeMeter)
    if importlib.util.find_spec("pynvml") is None:
        assert "no NVML: nvidia-ml-py is not installed" in energy.note
    else:
        assert "no NVML" in energy.note  # installed, but no driver or no GPU here
    assert "no RAPL energy counter" in energy.note
    assert energy.label.startswith("estimated (CPU time x ")
    assert energy.label.endswith(", host CPU only)")


def test_the_estimate_is_the_cpu_time_spent_times_the_declared_power() -> None:
    # Prepare: two meters that differ only in their declared power per core
    low, high = CpuTimeMeter(watts_per_core=3.0), CpuTimeMeter(watts_per_core=12.0)
    before = time.process_time()

    # Execute: spend CPU time inside both spans
    outer = high.start()
    inner = low.start()
    burn_cpu(0.3)
    at_low = inner.stop()
    at_high = outer.stop()
    after = time.process_time()

    # Assert: joules / watts is CPU time, inside what this process spent around the spans
    spent = after - before
    assert 0 < at_low.joules / 3.0 <= at_high.joules / 12.0 <= spent
    assert at_low.joules / 3.0 >= 0.2  # the spans held most of the 0.3 s of CPU burnt
    assert at_high.label == "estimated (CPU time x 12 W per core)"
    assert at_high.watts > 0


def test_idle_time_costs_nothing_in_the_estimate() -> None:
    meter = CpuTimeMeter(watts_per_core=10.0)

    with meter.span() as span:
        time.sleep(0.2)

    assert span.energy is not None
    assert span.energy.seconds >= 0.2
    assert span.energy.joules < 0.2 * 10.0 / 4  # far less than a busy core for that time


def test_the_declared_power_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CPU_WATTS_ENV, raising=False)
    assert cpu_watts() == DEFAULT_CPU_WATTS
    monkeypatch.setenv(CPU_WATTS_ENV, "2.5")
    assert CpuTimeMeter().watts_per_core == 2.5
    monkeypatch.setenv(CPU_WATTS_ENV, "lots")
    with pytest.raises(ConfigError, match=CPU_WATTS_ENV):
        CpuTimeMeter()
    with pytest.raises(ConfigError, match="in \\(0, 1000\\)"):
        cpu_watts(-1.0)


def test_an_energy_figure_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        Energy(-1.0, 1.0, "rapl", True, "RAPL package-0")


@pytest.mark.gpu
def test_nvml_counts_energy_on_a_gpu() -> None:
    try:
        meter = NvmlMeter(0)
    except ConfigError as exc:
        pytest.skip(f"no GPU energy counter here: {exc}")
    try:
        with meter.span() as span:
            time.sleep(1.0)  # an idle GPU still draws tens of watts; the counter moves
        assert span.energy is not None and span.energy.measured
        assert span.energy.joules > 0
        assert span.energy.label.startswith("measured (NVML GPU 0 ")
    finally:
        meter.close()
