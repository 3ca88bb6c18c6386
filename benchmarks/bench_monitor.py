"""Monitoring and continual learning, measured in one run on this machine.

    python benchmarks/bench_monitor.py [--quick] [--only NAME ...]

Each section is a module ``benchmarks/_monitor_<name>.py`` with one function,
``run(quick: bool) -> list[str]``: it prints its progress and details, and
returns its result lines (each figure beside its anchor or target), which
are printed again together at the end. Add a section with one line in
``SECTIONS``.
"""

from __future__ import annotations

from _sections import run_sections

#: Section modules, in the order they run.
SECTIONS = [
    "_monitor_drift",  # drift detectors on bundled data sets; their cost in the digits pipeline
    "_monitor_online",  # an online anomaly detector in the pipeline against River alone
    "_monitor_labels",  # late labels joined over HTTP: their cost in the digits pipeline
    "_monitor_recovery",  # capture -> late labels -> fine-tune -> gate -> swap after a change
]


def main() -> None:
    run_sections(__doc__.splitlines()[0], "_monitor_", SECTIONS)


if __name__ == "__main__":
    main()
