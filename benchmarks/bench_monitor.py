"""Monitoring and continual learning, measured in one run on this machine.

    python benchmarks/bench_monitor.py [--quick] [--only NAME ...]

Each section is a module ``benchmarks/_monitor_<name>.py`` with one function,
``run(quick: bool) -> list[str]``: it prints its progress and details, and
returns its result lines (each figure beside its anchor or target), which
are printed again together at the end. Add a section with one line in
``SECTIONS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time

#: Section modules, in the order they run.
SECTIONS = [
    "_monitor_drift",  # drift detectors on bundled data sets; their cost in the digits pipeline
    "_monitor_online",  # an online anomaly detector in the pipeline against River alone
    "_monitor_labels",  # late labels joined over HTTP: their cost in the digits pipeline
    "_monitor_recovery",  # capture -> late labels -> fine-tune -> gate -> swap after a change
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--only", nargs="*", help="section names (drift, ...) to run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a benchmark's alarms are its data, not news
    lines: list[str] = []
    for name in SECTIONS:
        if args.only and name.removeprefix("_monitor_") not in args.only:
            continue
        started = time.perf_counter()
        lines += importlib.import_module(name).run(args.quick)
        print(f"   ({name.removeprefix('_monitor_')}: {time.perf_counter() - started:.0f} s)")
    print("\nSummary")
    for line in lines:
        print(f"  {line}")


if __name__ == "__main__":
    main()
