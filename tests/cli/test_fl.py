"""``fogline fl simulate`` as a real process: history.json, a model.onnx ONNX Runtime runs, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from fogline.examples import digits_split
from fogline.model import Manifest

FIELDS = {
    "round",
    "accuracy",
    "loss",
    "participants",
    "bytes_up",
    "bytes_down",
    "seconds",
    "epsilon",
}


def fogline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", *args], capture_output=True, text=True, timeout=120
    )


def test_simulate_writes_the_history_and_a_model_that_classifies_at_the_recorded_accuracy(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    done = fogline(
        "fl", "simulate", "--task", "fogline.examples:digits_task", "--clients", "10",
        "--rounds", "5", "--secagg", "--dp-noise", "0.3", "--dp-clip", "2.0", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "federated simulation" in done.stdout
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history] == [1, 2, 3, 4, 5]
    assert all(set(r) == FIELDS for r in history)
    assert history[-1]["epsilon"] > history[0]["epsilon"] > 0
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    X, y = digits_split("eval")
    (probabilities,) = session.run(None, {"pixels": X.reshape(len(X), 64)})
    accuracy = float((probabilities.argmax(axis=1) == y).mean())
    assert accuracy == pytest.approx(history[-1]["accuracy"], abs=1e-6)
    assert accuracy > 0.3  # chance is 0.1; this much noise costs accuracy (0.51 measured)
    manifest = Manifest.read(out)
    manifest.verify(out)
    assert manifest.inputs[0].name == "pixels"


def test_the_torch_task_exports_a_model_onnx_runtime_runs(tmp_path: Path) -> None:
    # torch is in the dev extra (fogline[train]): this runs in every `make test`, never skips.
    out = tmp_path / "torch"
    done = fogline(
        "fl", "simulate", "--task", "fogline.examples:digits_torch_task", "--clients", "5",
        "--rounds", "3", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    history = json.loads((out / "history.json").read_text())
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    X, y = digits_split("eval")
    (logits,) = session.run(None, {"pixels": X})
    assert float((np.argmax(logits, axis=1) == y).mean()) == pytest.approx(
        history[-1]["accuracy"], abs=1e-3
    )
    assert history[-1]["accuracy"] > 0.6


def test_an_epsilon_budget_stops_the_run_and_still_writes_history_model_and_privacy(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    done = fogline(
        "fl", "simulate", "--task", "fogline.examples:digits_task", "--clients", "10",
        "--rounds", "20", "--fraction", "0.3", "--dp-noise", "1.0", "--dp-clip", "1.0",
        "--dp-mode", "distributed", "--secagg", "--epsilon-budget", "5", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # epsilon after 3 rounds is 4.905 and after 4 is 5.455 (rdp; q 0.3, z 1, delta 1e-5)
    assert "stopped before round 4: it would take ε above the budget 5; spent ε = 4.905" in (
        done.stdout.replace("\n", " ")
    )
    history = json.loads((out / "history.json").read_text())
    assert [r["round"] for r in history] == [1, 2, 3]
    privacy = json.loads((out / "privacy.json").read_text())
    assert privacy["rounds"] == 3 and privacy["epsilon"] == history[-1]["epsilon"]
    assert (out / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "fogline.examples:digits_eval"], "must return a dict"),
        (["--task", "fogline.examples:nope"], "cannot import"),
        (["--strategy", "fedsgd"], "unknown strategy"),
        (["--strategy", "krum", "--secagg"], "krum"),
        (["--secagg", "--secagg-bits", "4"], "--secagg-bits 4"),
        (["--split", "dirichlet:zero"], "--split"),
        (["--malicious", "0.2:bitflip"], "--malicious"),
        (["--dp-noise", "1.0"], "--dp-clip"),
        (["--epsilon-budget", "3"], "--epsilon-budget needs --dp-noise and --dp-clip"),
        (["--dp-noise", "1", "--dp-clip", "1", "--dp-mode", "local"], "--dp-mode"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    base = ["--task", "fogline.examples:digits_task", "--clients", "4", "--rounds", "1"]
    done = fogline("fl", "simulate", *base, *args, "--out", str(out))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


HIDE_TORCH = """
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
        return None
sys.meta_path.insert(0, Hide())
from fogline.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_without_torch_the_numpy_task_runs_and_the_torch_task_names_the_extra(
    tmp_path: Path,
) -> None:
    def run(task: str, out: Path) -> subprocess.CompletedProcess[str]:
        args = ["fl", "simulate", "--task", task, "--clients", "3", "--rounds", "1"]
        return subprocess.run(
            [sys.executable, "-c", HIDE_TORCH, *args, "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert run("fogline.examples:digits_task", tmp_path / "numpy").returncode == 0
    done = run("fogline.examples:digits_torch_task", tmp_path / "torch")
    assert done.returncode == 2
    assert "pip install 'fogline[train]'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "torch").exists()
