"""Privacy and security on the device, measured in one run on this machine.

    python benchmarks/bench_privacy.py [--quick] [--only NAME ...]

Each section is a module ``benchmarks/_privacy_<name>.py`` with one function,
``run(quick: bool) -> list[str]``: it prints its progress and details, and
returns its result lines (each figure beside its anchor or target), which
are printed again together at the end.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import time

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--only", nargs="*", help="section names (store, models, ...) to run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    lines: list[str] = []
    for name in SECTIONS:
        short = name.removeprefix("_privacy_")
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
