"""``fogline bench`` prints joules per inference beside latency, labelled measured or estimated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def bench(model: Path, *args: str, watts: str = "7") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", "bench", str(model), "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "FOGLINE_CPU_WATTS": watts},
    )


def test_bench_json_carries_energy_per_item_and_its_label(digits_model: Path) -> None:
    result = bench(digits_model, "--batch", "1,4", "--duration", "0.2", "--json")

    assert result.returncode == 0, result.stderr
    for row in json.loads(result.stdout)["results"]:
        energy = row["energy"]
        assert row["joules_per_item"] == pytest.approx(
            energy["joules"] / (row["batch"] * row["runs"]), rel=1e-3
        )
        assert row["joules_per_item"] > 0
        if energy["measured"]:  # a machine with readable RAPL counters
            assert energy["label"].startswith("measured (RAPL ")
        else:  # this VM has no powercap: the declared 7 W per core and why
            assert energy["label"] == "estimated (CPU time x 7 W per core)"
            assert "no RAPL energy counter" in energy["note"]


def test_bench_refuses_a_bad_declared_power(digits_model: Path) -> None:
    result = bench(digits_model, "--duration", "0.05", watts="a lot")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "FOGLINE_CPU_WATTS" in result.stderr and "Traceback" not in result.stderr
