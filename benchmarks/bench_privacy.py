"""Privacy and security on the device, measured in one run on this machine.

    python benchmarks/bench_privacy.py [--quick] [--only NAME ...]

Each section is a module ``benchmarks/_privacy_<name>.py`` with one function,
``run(quick: bool) -> list[str]``: it prints its progress and details, and
returns its result lines (each figure beside its anchor or target), which
are printed again together at the end.
"""

from __future__ import annotations

from _sections import run_sections

#: Section modules, in the order they run.
SECTIONS = [
    "_privacy_store",  # the digits pipeline with the store encrypted (SQLCipher) against plain
    "_privacy_models",  # model load time: sealed (decrypted in memory) against plain
    "_privacy_audit",  # the audit log's cost per event; verifying a long log
    "_privacy_fuzz",  # atheris: executions per second and in total, per target
    "_privacy_mtls",  # mutual TLS at the broker: connect time and messages per second vs plain
    "_privacy_egress",  # the egress gate per result; blurring faces per frame
]


def main() -> None:
    run_sections(__doc__.splitlines()[0], "_privacy_", SECTIONS)


if __name__ == "__main__":
    main()
