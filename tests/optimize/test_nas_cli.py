"""``fogline optimize --nas`` as a user runs it: a family file in the working folder, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DATA = [
    "--train",
    "fogline.examples:digits_train",
    "--eval",
    "fogline.examples:digits_eval",
]
FAST = ["--duration", "0.05", "--threads", "1", "--batch", "8", "--no-sensitivity"]
#: A user's own family: the bundled digits family cut down to two networks.
FAMILY = """
from fogline.examples.digits_nas import DigitsFamily


class Tiny(DigitsFamily):
    space = {"width": (4, 16), "depth": (1,), "kernel": (3,), "resolution": (6,)}


class One(Tiny):
    space = {"width": (4,), "depth": (1,), "kernel": (3,), "resolution": (8,)}


family, one = Tiny(), One()
not_a_family = 42
"""


def fogline(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={
            **os.environ,
            "COLUMNS": "200",  # a wide terminal: table cells stay whole
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        },
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "tinyfamily.py").write_text(FAMILY)
    return tmp_path


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_nas_searches_trains_the_chosen_and_reports_the_front(workdir):
    result = fogline(
        "optimize",
        "--nas",
        "tinyfamily:family",
        *DATA,
        "--latency-budget-ms",
        "1000",
        "--search-epochs",
        "2",
        "--final-epochs",
        "3",
        "--variants",
        "ort-fp32",
        "--out",
        "out",
        *FAST,
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr
    assert "architecture search" in result.stdout and "chosen" in result.stdout
    report = json.loads((workdir / "out" / "report.json").read_text())
    nas = report["nas"]
    assert nas["family"] == "tinyfamily:family" and nas["latency_budget_ms"] == 1000
    assert len(nas["candidates"]) == 2 and nas["batch"] == 8
    assert all(c["status"] == "ok" and c["latency_ms"]["p50"] > 0 for c in nas["candidates"])
    assert nas["chosen"] in [c["knobs"] for c in nas["candidates"]]
    assert nas["front"] and nas["chosen"] in nas["front"]
    # the chosen network, trained fully, is the baseline of the usual variant search
    baseline = report["variants"][0]
    assert baseline["name"] == "ort-fp32" and baseline["accuracy"] == pytest.approx(
        nas["final_metric"], abs=0.01
    )
    model = workdir / "out" / "model.onnx"
    assert model.is_file() and (workdir / "out" / "fogline.yaml").is_file()
    from fogline.model import load_engine

    assert load_engine(model).signature.inputs[0].shape[1:] == (1, 6, 6)  # resolution 6
    page = (workdir / "out" / "report.html").read_text()
    assert "Architecture search" in page and page.count("<svg") == 2


def test_nas_without_a_candidate_inside_the_budget_names_the_fastest(workdir):
    result = fogline(
        "optimize",
        "--nas",
        "tinyfamily:one",
        *DATA,
        "--latency-budget-ms",
        "0.000001",
        "--search-epochs",
        "1",
        "--out",
        "out",
        *FAST,
        cwd=workdir,
    )
    assert_clean_error(result, "no candidate runs within 1e-06 ms at batch 8", "the fastest")
    assert "architecture search" in result.stdout  # the candidates are shown before the error
    assert not (workdir / "out").exists()


def test_an_object_that_is_not_a_family_is_one_line_and_exit_2(workdir):
    # the other bad specs (no colon, no such module) are test_nas.py's load_family test
    result = fogline(
        "optimize",
        "--nas",
        "tinyfamily:not_a_family",
        *DATA,
        "--latency-budget-ms",
        "1",
        "-o",
        "out",
        cwd=workdir,
    )
    assert_clean_error(result, "int is not a fogline.optimize.Family (it lacks space")


def test_nas_needs_its_data_and_budget_and_no_model(workdir):
    missing = fogline("optimize", "--nas", "tinyfamily:family", *DATA, "-o", "o", cwd=workdir)
    assert_clean_error(missing, "--latency-budget-ms")
    both = fogline(
        "optimize", "m.onnx", "--nas", "tinyfamily:family", *DATA, "-o", "o", cwd=workdir
    )
    assert_clean_error(both, "give no MODEL")
