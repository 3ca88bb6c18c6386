"""Distributed intelligence, measured in one run on this machine.

    python benchmarks/bench_cluster.py [--quick] [--only NAME ...]

Each section is a module ``benchmarks/_cluster_<name>.py`` with one function,
``run(quick: bool) -> list[str]``: it prints its progress and details, and
returns its result lines (each figure beside its anchor or target), which
are printed again together at the end. The MQTT sections start their own
Mosquitto on loopback (``make broker`` installs it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time

#: Section modules, in the order they run.
SECTIONS = [
    "_cluster_nodes",  # 1, 2, 3 nodes; fast + slow node: credit dispatch against round-robin
    "_cluster_kill",  # kill -9 of one of three nodes half-way through 10,000 items
    "_cluster_offload",  # the digits cascade: small model locally, a teacher behind fogline serve
    "_cluster_variants",  # a step in load: SLO violations with variant switching against one variant
    "_cluster_zmq",  # zmq PUSH/PULL against one MQTT hop, 1 KiB and 600 KiB
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--only", nargs="*", help="section names (nodes, kill, ...) to run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    lines: list[str] = []
    for name in SECTIONS:
        short = name.removeprefix("_cluster_")
        if args.only and short not in args.only:
            continue
        started = time.perf_counter()
        lines += importlib.import_module(name).run(args.quick)
        print(f"   ({short}: {time.perf_counter() - started:.0f} s)")
    print("\nSummary")
    for line in lines:
        print(f"  {line}")


if __name__ == "__main__":
    main()
