"""Architecture search (``fogline optimize --nas``) on the bundled tasks, in one run on this machine.

    python benchmarks/bench_nas.py [--quick] [--only NAME ...]

Each section is a module ``benchmarks/_nas_<name>.py`` with one function,
``run(quick: bool) -> list[str]``: it searches its family, prints the
Pareto front and the search time, and returns its result lines (the chosen
network against the bundled one, PASS/FAIL against the issue's targets),
printed again together at the end. A section whose module is not there yet
is skipped with one line.
"""

from __future__ import annotations

from pathlib import Path

from _sections import run_sections

#: Section modules, in the order they run.
SECTIONS = [
    "_nas_digits",  # the digits family against the bundled DigitsNet (accuracy, latency)
    "_nas_shapes",  # the shapes family against the bundled detector (mAP@0.5, latency)
]


def main() -> None:
    here = Path(__file__).parent
    present = []
    for name in SECTIONS:
        if (here / f"{name}.py").is_file():
            present.append(name)
        else:
            print(f"skipped {name.removeprefix('_nas_')}: benchmarks/{name}.py is not there yet")
    run_sections(__doc__.splitlines()[0], "_nas_", present)


if __name__ == "__main__":
    main()
