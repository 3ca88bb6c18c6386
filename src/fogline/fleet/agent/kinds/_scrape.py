"""Reading a child's Prometheus text: which series of a kind mean items, errors, drops, latency.

Every kind's child exports the same energy counter (:data:`fogline.metrics.ENERGY_JOULES`),
read here too.

The text is parsed with ``prometheus_client``'s own parser; a kind names its
series (:class:`Series`, with the names of :mod:`fogline.metrics`) and gets
the cumulative numbers of one scrape (:class:`~fogline.fleet.agent._telemetry.Scrape`),
which telemetry turns into per-period deltas.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from fogline.fleet.agent._telemetry import Scrape
from fogline.metrics import ENERGY_JOULES, MEASURED


@dataclass(frozen=True)
class Series:
    """Which series of a child's metrics mean what: a counter by outcome and a latency histogram.

    >>> jobs = Series("fogline_jobs", ("done",), ("lost",), (), "fogline_job_seconds")
    >>> jobs.where is None  # every series of the histogram counts
    True
    """

    counter: str
    items: tuple[str, ...]  # the counter's ``outcome`` labels that count as items done
    errors: tuple[str, ...]
    drops: tuple[str, ...]
    histogram: str
    where: tuple[str, str] | None = None  # the histogram's label and value to keep


def read_scrape(text: str, series: Series) -> Scrape:
    """Read a child's Prometheus ``text`` into a :class:`Scrape`, by ``series``.

    >>> text = '''# TYPE fogline_jobs counter
    ... fogline_jobs_total{outcome="done"} 8
    ... fogline_jobs_total{outcome="lost"} 2
    ... '''
    >>> jobs = Series("fogline_jobs", ("done",), ("lost",), (), "fogline_job_seconds")
    >>> read_scrape(text, jobs).items, read_scrape(text, jobs).errors
    (8.0, 2.0)
    """
    items = errors = drops = 0.0
    joules: float | None = None
    energy: str | None = None
    measured: bool | None = None
    buckets: dict[float, float] = {}
    where = series.where
    counter, bucket = f"{series.counter}_total", f"{series.histogram}_bucket"
    for family in text_string_to_metric_families(text):
        for sample in family.samples:  # by sample name: family names vary with the writer
            if sample.name == counter:
                outcome = sample.labels.get("outcome", "")
                if outcome in series.items:
                    items += sample.value
                elif outcome in series.errors:
                    errors += sample.value
                elif outcome in series.drops:
                    drops += sample.value
            elif sample.name == f"{ENERGY_JOULES}_total":
                joules = (joules or 0.0) + sample.value
                kind, detail = sample.labels.get("kind", ""), sample.labels.get("detail", "")
                energy, measured = f"{kind} ({detail})", kind == MEASURED
            elif sample.name == bucket:
                if where is not None and sample.labels.get(where[0]) != where[1]:
                    continue
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Scrape(
        items,
        errors,
        drops,
        tuple(sorted(buckets.items())),
        joules=joules,
        energy=energy,
        energy_measured=measured,
    )
