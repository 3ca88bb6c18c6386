"""The runner the sectioned benchmarks share: ``--quick``, ``--only``, a summary at the end.

A sectioned benchmark (``bench_cluster.py``, ``bench_monitor.py``, ``bench_privacy.py``)
is a list of modules ``benchmarks/<prefix><name>.py``, each with one function
``run(quick: bool) -> list[str]`` that prints its progress and returns its result lines;
the lines are printed again together at the end.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time


def run_sections(description: str, prefix: str, sections: list[str]) -> None:
    """Parse the command line and run the chosen ``sections`` (module names) in order."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--only", nargs="*", help="section names to run (the module name after the prefix)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a benchmark's alarms are its data, not news
    lines: list[str] = []
    for name in sections:
        short = name.removeprefix(prefix)
        if args.only and short not in args.only:
            continue
        started = time.perf_counter()
        lines += importlib.import_module(name).run(args.quick)
        print(f"   ({short}: {time.perf_counter() - started:.0f} s)")
    print("\nSummary")
    for line in lines:
        print(f"  {line}")
