"""Fuzzing: each atheris target in ``fuzz/`` for a fixed time; executions per second and in total.

Each target runs alone (one process, one core) for ``SECONDS`` (quick: 2 s,
full: 30 s) from its committed seeds (``fuzz/corpus/<target>/``), new inputs
kept in a scratch folder, as ``make fuzz`` runs it. Reported per target: the
executions libFuzzer counted (``-print_final_stats``), in total and per
second of the run (its own rate reads 0 for runs this short), and crashes
found: libFuzzer stops at the first, so 0 or 1; after the fixes kept in
``fuzz/regressions/`` it should be 0. What an execution costs differs by
target: opening a model creates an ONNX Runtime session, a spec is YAML
parsed and validated by pydantic, a gRPC request is a protobuf parse; the
figures compare a target with itself across changes, not targets with each
other. Anchor: OSS-Fuzz's guidance that a target should manage hundreds of
executions per second or more.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
TARGETS = ("model", "spec", "oip_http", "oip_grpc", "mqtt", "release")


def _one(target: str, seconds: int, scratch: Path) -> tuple[int, float, int, float]:
    """(executions, executions per second, crashes, wall seconds) of one target's run."""
    work = scratch / target
    work.mkdir()
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable, str(FUZZ / f"{target}.py"), str(work), str(FUZZ / "corpus" / target),
            f"-max_total_time={seconds}", f"-artifact_prefix={scratch}/{target}-",
            "-print_final_stats=1",
        ],
        capture_output=True, text=True, timeout=seconds + 300,
    )  # fmt: skip
    wall = time.perf_counter() - started
    output = done.stdout + done.stderr
    executions = re.search(r"stat::number_of_executed_units: (\d+)", output)
    crashes = len(list(scratch.glob(f"{target}-*")))
    if done.returncode != 0 and not crashes:
        raise RuntimeError(f"{target} exited {done.returncode}:\n{output[-2000:]}")
    count = int(executions.group(1)) if executions else 0
    return count, count / seconds, crashes, wall


def run(quick: bool) -> list[str]:
    seconds = 2 if quick else 30
    print(f"\nFuzzing: each target {seconds} s from its seeds")
    lines = []
    total_crashes = 0
    with tempfile.TemporaryDirectory(prefix="fogline-bench-fuzz-") as folder:
        for target in TARGETS:
            executions, rate, crashes, wall = _one(target, seconds, Path(folder))
            total_crashes += crashes
            print(
                f"   {target:9s} {rate:9,.0f} exec/s  {executions:11,d} executions  "
                f"{crashes} crash(es)  ({wall:.0f} s with start-up)"
            )
            lines.append(
                f"fuzz {target}: {rate:,.0f} executions/s, {executions:,d} in {seconds} s, "
                f"{crashes} crashes (target: 0; OSS-Fuzz: hundreds of exec/s or more)"
            )
    lines.append(f"fuzz: {total_crashes} crashes in {len(TARGETS)} targets (target: 0)")
    return lines
