"""``fogline optimize --nas`` as a user runs it: a family file in the working folder.

One real process for the whole run; the refusals run in-process through
``fogline.cli.main`` (the "nothing fits the budget" case is test_nas.py's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fogline.cli import main

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
    assert "val accuracy" in result.stdout and "on the eval data" in result.stdout
    report = json.loads((workdir / "out" / "report.json").read_text())
    nas = report["nas"]
    assert nas["family"] == "tinyfamily:family" and nas["latency_budget_ms"] == 1000
    # ranked on a fifth of --train held out; --eval only judged the chosen network
    assert nas["val_items"] > 0 and nas["train_items"] > 4 * nas["val_items"] - 4
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


@pytest.fixture
def inside(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """In-process runs from the working folder that holds the family file."""
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.setenv("COLUMNS", "200")
    return workdir


def refused(capsys: pytest.CaptureFixture[str], *args: str, fragments: tuple[str, ...]) -> None:
    assert main(["optimize", *args]) == 2
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())  # a long message may wrap
    assert "Traceback" not in captured.err + captured.out
    assert captured.err.strip().startswith("error:") and len(captured.err.strip().splitlines()) <= 3
    for fragment in fragments:
        assert fragment in err, captured.err


def test_an_object_that_is_not_a_family_is_one_line_and_exit_2(inside, capsys):
    # the other bad specs (no colon, no such module) are test_nas.py's load_family test
    refused(
        capsys,
        *("--nas", "tinyfamily:not_a_family", *DATA, "--latency-budget-ms", "1", "-o", "out"),
        fragments=("int is not a fogline.optimize.Family (it lacks space",),
    )


def test_a_family_file_with_a_syntax_error_is_one_line_and_exit_2(inside, capsys):
    (inside / "typo_family.py").write_text("family = [\n")
    refused(
        capsys,
        *("--nas", "typo_family:family", *DATA, "--latency-budget-ms", "1", "-o", "out"),
        fragments=("cannot import 'typo_family'", "SyntaxError", "typo_family.py, line 1"),
    )
    assert not (inside / "out").exists()


def test_a_torch_factory_with_a_syntax_error_is_one_line_and_exit_2(inside, capsys):
    (inside / "typo_model.py").write_text("def build(:\n    pass\n")
    refused(
        capsys,
        *("--from-torch", "typo_model:build", "-c", "fogline.examples:digits_calibration"),
        *("-o", "out"),
        fragments=("cannot import 'typo_model'", "typo_model.py, line 1"),
    )


def test_nas_needs_its_data_and_budget_and_no_model(inside, capsys):
    refused(
        capsys, "--nas", "tinyfamily:family", *DATA, "-o", "o", fragments=("--latency-budget-ms",)
    )
    refused(
        capsys,
        *("m.onnx", "--nas", "tinyfamily:family", *DATA, "-o", "o"),
        fragments=("give no MODEL",),
    )
