"""The energy counter a pipeline run and the server export, read from any energy meter.

The meter (a :class:`fogline.power.EnergyMeter`, which this package does not
import: it only needs what :class:`Meter` names) is read when Prometheus
scrapes, so metering costs nothing per item. A meter that cannot be read (a
RAPL file gone, a GPU lost: :class:`~fogline.errors.FoglineError`) costs the
scrape its energy sample only, never the process's other metrics; it is
logged once, not on every scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from fogline.errors import FoglineError
from fogline.metrics._names import ENERGY_JOULES, ESTIMATED, MEASURED

log = logging.getLogger(__name__)


class Meter(Protocol):
    """What the collector reads: joules since the meter opened, and where they come from."""

    @property
    def source(self) -> str: ...
    @property
    def measured(self) -> bool: ...
    @property
    def detail(self) -> str: ...
    def read(self) -> float: ...


class EnergyCollector:
    """A ``prometheus_client`` collector: :data:`ENERGY_JOULES` from ``meter``, with ``labels``.

    >>> class Fixed:
    ...     source, measured, detail = "cpu-time", False, "CPU time x 10 W per core"
    ...     def read(self):
    ...         return 1.5
    >>> family = next(EnergyCollector(Fixed(), {"pipeline": "p"}).collect())
    >>> family.samples[0].labels["kind"], family.samples[0].value
    ('estimated', 1.5)
    """

    def __init__(self, meter: Meter, labels: Mapping[str, str] | None = None) -> None:
        self.meter = meter
        self.labels = dict(labels or {})
        self._failed = False

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        meter = self.meter
        family = CounterMetricFamily(
            ENERGY_JOULES,
            "Joules the process's work used since it started (measured or estimated).",
            labels=[*self.labels, "source", "kind", "detail"],
        )
        kind = MEASURED if meter.measured else ESTIMATED
        try:
            joules = meter.read()
        except FoglineError as exc:
            if not self._failed:
                log.warning("energy not exported: %s", exc)
            self._failed = True
            yield family  # the family without its sample: the scrape keeps everything else
            return
        family.add_metric([*self.labels.values(), meter.source, kind, meter.detail], joules)
        yield family
