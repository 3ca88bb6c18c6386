"""The agent reads a child's energy counter into each report: joules and joules per item.

The child's Prometheus text is written here by ``prometheus_client`` with the
collector the pipeline and the server register (:class:`fogline.metrics.EnergyCollector`)
over a real :class:`~fogline.power.RaplMeter` reading a folder laid out like
powercap (a stand-in for the kernel's files, which this VM lacks), so the
joules between two scrapes are known; the release kinds read it, and two
scrapes become one period's figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from fogline.fleet.agent._telemetry import metrics_between
from fogline.fleet.agent.kinds import kind_for
from fogline.metrics import PIPELINE_ITEMS, SERVE_REQUESTS, EnergyCollector
from fogline.power import CpuTimeMeter, RaplMeter


class Child:
    """A child's metrics: its item counter and its energy counter over a powercap folder."""

    def __init__(self, powercap: Path, items: str, labels: list[str]) -> None:
        zone = powercap / "intel-rapl:0"
        zone.mkdir(parents=True)
        (zone / "name").write_text("package-0\n")
        (zone / "max_energy_range_uj").write_text("262143328850\n")
        self.counter = zone / "energy_uj"
        self.counter.write_text("5000000\n")
        self.registry = CollectorRegistry()
        self.items = Counter(items, "items", labels, registry=self.registry)
        self.cpu = [0.0, 0.0]  # this process's and the host's CPU seconds
        self.meter = RaplMeter(powercap, share=lambda: (self.cpu[0], self.cpu[1]))
        self.registry.register(EnergyCollector(self.meter))

    def spend(self, microjoules: int, share: float = 0.5) -> None:
        """The package counts ``microjoules`` while the child has ``share`` of the host's CPU."""
        now = int(self.counter.read_text())
        self.counter.write_text(f"{now + microjoules}\n")
        self.cpu = [self.cpu[0] + 4.0 * share, self.cpu[1] + 4.0]

    def text(self) -> str:
        return generate_latest(self.registry).decode()


@pytest.mark.parametrize(
    ("kind", "series", "labels", "done"),
    [
        ("pipeline", PIPELINE_ITEMS, ["pipeline", "source", "outcome"], ["p", "cam", "processed"]),
        ("serve", SERVE_REQUESTS, ["model", "version", "outcome"], ["digits", "1", "success"]),
    ],
)
def test_two_scrapes_give_the_periods_joules_per_item_and_how_they_were_measured(
    tmp_path: Path, kind: str, series: str, labels: list[str], done: list[str]
) -> None:
    # Prepare
    child = Child(tmp_path / "powercap", series, labels)
    read = kind_for(kind).scrape
    child.items.labels(*done).inc(10)
    child.spend(1_000_000)
    before = read(child.text())

    # Execute: 40 items while the package spends 8 J, a quarter of the host's CPU time the child's
    child.items.labels(*done).inc(40)
    child.spend(8_000_000, share=0.25)
    period = metrics_between(before, read(child.text()), 10.0)

    # Assert: the child's share of the package, labelled as a share
    assert period.items == 40
    assert period.joules == pytest.approx(8.0 * 0.25)
    assert period.joules_per_item == pytest.approx(8.0 * 0.25 / 40)
    assert period.energy == "measured (RAPL package-0, this process's CPU-time share)"
    assert period.energy_measured is True


def test_a_meter_that_fails_costs_the_scrape_its_energy_sample_only(tmp_path: Path) -> None:
    child = Child(tmp_path / "powercap", PIPELINE_ITEMS, ["outcome"])
    child.items.labels("processed").inc(7)
    child.counter.unlink()  # the RAPL file is gone (a module unloaded, permissions changed)

    scraped = kind_for("pipeline").scrape(child.text())
    period = metrics_between(None, scraped, 10.0)

    assert period.items == 7  # the release's other metrics still arrive
    assert (period.joules, period.energy) == (None, None)


def test_a_restarted_child_counts_its_energy_from_zero(tmp_path: Path) -> None:
    old = Child(tmp_path / "old", PIPELINE_ITEMS, ["outcome"])
    old.items.labels("processed").inc(100)
    old.spend(9_000_000)
    before = kind_for("pipeline").scrape(old.text())
    new = Child(tmp_path / "new", PIPELINE_ITEMS, ["outcome"])  # counters start again
    new.items.labels("processed").inc(5)
    new.spend(500_000, share=1.0)

    period = metrics_between(before, kind_for("pipeline").scrape(new.text()), 10.0)

    assert (period.items, period.joules) == (5, pytest.approx(0.5))


def test_an_estimate_says_so_and_a_child_without_the_counter_sends_no_energy() -> None:
    registry = CollectorRegistry()
    items = Counter(PIPELINE_ITEMS, "items", ["outcome"], registry=registry)
    items.labels("processed").inc(3)
    plain = kind_for("pipeline").scrape(generate_latest(registry).decode())
    registry.register(EnergyCollector(CpuTimeMeter(watts_per_core=5.0)))
    metered = kind_for("pipeline").scrape(generate_latest(registry).decode())

    silent = metrics_between(None, plain, 10.0)
    estimated = metrics_between(None, metered, 10.0)

    assert (silent.joules, silent.joules_per_item, silent.energy) == (None, None, None)
    assert estimated.energy == "estimated (CPU time x 5 W per core)"
    assert estimated.energy_measured is False
