"""``fogline learn finetune`` as a real process: the gate's exit status, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fogline.cli import main
from fogline.examples import digits_model_path, digits_split
from fogline.model import Manifest
from fogline.power import Deferral, Verdict

BASE = digits_model_path().parent


def fogline(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def shift(images: np.ndarray) -> np.ndarray:
    moved = np.zeros_like(images)
    moved[..., 1:] = images[..., :-1]
    return moved


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("learn-data")
    X, y = digits_split("train")
    Xe, ye = digits_split("eval")
    arrays = {
        "captured": {"pixels": np.concatenate([shift(X[:300]), X[300:500]]), "labels": y[:500]},
        "holdout": {"pixels": shift(Xe), "labels": ye},
        "original": {"pixels": Xe, "labels": ye},
        "unlabelled": {"pixels": shift(X[:50])},
        "flat": {"pixels": X[:50].reshape(50, 64), "labels": y[:50]},
    }
    paths = {}
    for name, content in arrays.items():
        paths[name] = root / f"{name}.npz"
        np.savez(paths[name], **content)  # type: ignore[arg-type]
    return paths


def finetune_args(data: dict[str, Path], out: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "learn", "finetune", BASE,
        "--data", data["captured"], "--eval", data["holdout"], "--original", data["original"],
        "--epochs", "10", "--l2", "0.1", "--out", out, *extra,
    ]  # fmt: skip


def test_a_passing_candidate_exits_0_as_a_model_folder(
    data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "candidate"
    done = fogline(*finetune_args(data, out, "--max-forgetting", "0.05"))

    assert done.returncode == 0, done.stderr
    assert "gate passed" in done.stdout and "held-out new data" in done.stdout
    manifest = Manifest.read(out)
    manifest.verify(out)
    assert manifest.version == "1.1" and manifest.provenance is not None
    assert json.loads((out / "report.json").read_text())["passed"] is True


def test_a_failing_gate_exits_3_with_the_reports_only(
    data: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "candidate"
    done = fogline(*finetune_args(data, out, "--max-forgetting", "0"))

    assert done.returncode == 3, done.stderr
    assert "gate FAILED" in done.stdout and "Traceback" not in done.stderr
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".png") == [
        "report.json",
        "report.md",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--data": "missing.npz"}, "missing.npz: no such file"),
        ({"--data": "unlabelled"}, "holds no labels"),
        (
            {"--eval": "flat"},
            "input 'pixels' has shape [50, 64], the model expects [batch, 1, 8, 8]",
        ),
        ({"--original": None}, "give --original DATA"),
        ({"--layers": "all"}, "--from-torch"),
        ({"--layers": "some"}, "layers: 'some' is not one of last, all"),
        ({"--out": "exists"}, "already exists"),
        ({"MODEL": "nowhere"}, "not a model folder"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(
    data: dict[str, Path],
    tmp_path: Path,
    change: dict[str, str | None],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "exists").mkdir()
    options: dict[str, str | Path | None] = {
        "--data": data["captured"],
        "--eval": data["holdout"],
        "--original": data["original"],
        "--out": tmp_path / "out",
    }
    model: str | Path = BASE
    for key, value in change.items():
        if key == "MODEL":
            model = tmp_path / str(value)
        elif value in data:
            options[key] = data[str(value)]
        elif key == "--out":
            options[key] = tmp_path / str(value)
        else:
            options[key] = value
    args: list[str | Path] = ["learn", "finetune", model, "--epochs", "1"]
    for key, value in options.items():
        if value is not None:
            args += [key, value]

    # In this process (a new one per case would cost seconds each): an uncaught error
    # would raise here rather than return 2.
    status = main([str(a) for a in args])

    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert stderr.startswith("error: ") and "Traceback" not in stderr
    assert message in " ".join(stderr.split()), stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]
    assert list((tmp_path / "exists").iterdir()) == []


def test_without_eval_a_share_of_the_data_is_held_out_for_the_gate(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captured = tmp_path / "hard.npz"
    captured.write_bytes(data["captured"].read_bytes())
    args = ["learn", "finetune", BASE, "--data", captured, "--holdout", "0.2", "--seed", "3"]
    args += ["--original", data["original"], "--epochs", "2", "--out", tmp_path / "candidate"]

    status = main([str(a) for a in args])

    assert status in (0, 3), capsys.readouterr().err
    with (
        np.load(captured) as whole,
        np.load(tmp_path / "hard.train.npz") as train,
        np.load(tmp_path / "hard.holdout.npz") as held,
    ):
        assert (len(train["labels"]), len(held["labels"])) == (400, 100)
        # A split, not a copy: every captured item lands in exactly one part, with its label.
        rows = {
            (p.tobytes(), int(y)) for p, y in zip(whole["pixels"], whole["labels"], strict=True)
        }
        parts = [
            (p.tobytes(), int(y))
            for part in (train, held)
            for p, y in zip(part["pixels"], part["labels"], strict=True)
        ]
        assert len(parts) == 500 and set(parts) == rows
    report = json.loads((tmp_path / "candidate" / "report.json").read_text())
    assert (report["data"]["items"], report["holdout"]["items"]) == (400, 100)
    assert report["holdout"]["spec"] == str(tmp_path / "hard.holdout.npz")
    out = capsys.readouterr().out
    assert "400 to train on" in out and "100 held out for the gate" in out


def test_holdout_needs_an_npz_to_split(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["learn", "finetune", BASE, "--data", "fogline.examples:digits_eval"]
    args += ["--original", data["original"], "--out", tmp_path / "out"]

    assert main([str(a) for a in args]) == 2
    assert "give --eval HOLDOUT" in " ".join(capsys.readouterr().err.split())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "message"),
    [("unlabelled", "holds no labels"), ("out exists", "already exists")],
)
def test_a_split_that_cannot_go_on_writes_nothing(
    data: dict[str, Path],
    tmp_path: Path,
    case: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    captured = tmp_path / "hard.npz"
    source = data["unlabelled"] if case == "unlabelled" else data["captured"]
    captured.write_bytes(source.read_bytes())
    out = tmp_path / "out"
    if case == "out exists":
        out.mkdir()
    args = ["learn", "finetune", BASE, "--data", captured, "--original", data["original"]]

    assert main([str(a) for a in [*args, "--out", out]]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["hard.npz", *(["out"] if case == "out exists" else [])]
    )


def test_with_defer_it_waits_until_the_policy_allows_then_fine_tunes(
    data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: the grid is dirty now and gets clean in a moment
    grid = tmp_path / "grid.txt"
    grid.write_text("400")
    policy = tmp_path / "defer.yaml"
    policy.write_text("carbon: {file: grid.txt, max_g_per_kwh: 200}\ncheck_every_s: 0.1\n")
    args = finetune_args(data, tmp_path / "candidate", "--epochs", "1", "--defer", policy)
    check = Deferral.check

    def then_clean(self: Deferral, now: float | None = None) -> Verdict:
        verdict = check(self, now)
        grid.write_text("100")  # after the first look, whenever that comes on a loaded machine
        return verdict

    monkeypatch.setattr(Deferral, "check", then_clean)

    # Execute
    status = main([str(a) for a in args])

    # Assert: it said why it waited, then went on
    out = " ".join(capsys.readouterr().out.split())
    assert status in (0, 3), out
    waited = out.index(f"fine-tune waiting: carbon intensity 400 g/kWh > 200 (from {grid}")
    allowed = out.index(f"fine-tune allowed: carbon intensity 100 g/kWh <= 200 (from {grid}")
    assert waited < allowed < out.index("held-out new data")


def test_a_bad_defer_policy_exits_2_with_the_key(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "defer.yaml"
    policy.write_text("min_battery_percent: 140\n")

    status = main([str(a) for a in finetune_args(data, tmp_path / "out", "--defer", policy)])

    stderr = " ".join(capsys.readouterr().err.split())
    assert status == 2 and "Traceback" not in stderr
    assert f"{policy}: min_battery_percent: Input should be less than or equal to 100" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["out exists", "unlabelled", "no data"])
def test_with_defer_bad_inputs_exit_2_before_any_wait(
    data: dict[str, Path],
    tmp_path: Path,
    case: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a policy that would wait (a dirty grid), and one bad input each
    grid = tmp_path / "grid.txt"
    grid.write_text("400")
    policy = tmp_path / "defer.yaml"
    policy.write_text("carbon: {file: grid.txt, max_g_per_kwh: 200}\n")
    out = tmp_path / "out"
    if case == "out exists":
        out.mkdir()
    captured = {"unlabelled": data["unlabelled"], "no data": tmp_path / "missing.npz"}
    looked: list[str] = []

    def waited(self: Deferral, **kwargs: object) -> Verdict:
        looked.append("wait")
        raise AssertionError("it waited before checking its inputs")

    monkeypatch.setattr(Deferral, "wait", waited)
    args = ["learn", "finetune", BASE, "--data", captured.get(case, data["captured"])]

    # Execute
    args += ["--original", data["original"], "--out", out, "--defer", policy]
    status = main([str(a) for a in args])

    # Assert: a one-line error at once, no wait
    stderr = " ".join(capsys.readouterr().err.split())
    assert status == 2 and "Traceback" not in stderr, stderr
    assert looked == []
