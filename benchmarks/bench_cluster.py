"""Distributed intelligence, measured in one run on this machine.

    python benchmarks/bench_cluster.py [--quick] [--only NAME ...]

Each section is a module ``benchmarks/_cluster_<name>.py`` with one function,
``run(quick: bool) -> list[str]``: it prints its progress and details, and
returns its result lines (each figure beside its anchor or target), which
are printed again together at the end. The MQTT sections start their own
Mosquitto on loopback (``make broker`` installs it).
"""

from __future__ import annotations

from _sections import run_sections

#: Section modules, in the order they run.
SECTIONS = [
    "_cluster_nodes",  # 1, 2, 3 nodes; fast + slow node: credit dispatch against round-robin
    "_cluster_kill",  # kill -9 of one of three nodes half-way through 10,000 items
    "_cluster_offload",  # the digits cascade: small model locally, a teacher behind fogline serve
    "_cluster_variants",  # a step in load: SLO violations with variant switching against one variant
    "_cluster_zmq",  # zmq PUSH/PULL against one MQTT hop, 1 KiB and 600 KiB
]


def main() -> None:
    run_sections(__doc__.splitlines()[0], "_cluster_", SECTIONS)


if __name__ == "__main__":
    main()
