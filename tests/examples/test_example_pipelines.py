"""The example pipelines under examples/ check and run as shipped (copied to a scratch folder)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from fogline.pipeline import Pipeline, load_spec, plan

EXAMPLES = Path(__file__).parents[2] / "examples"


def run_example(name: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    folder = tmp_path / name
    shutil.copytree(
        EXAMPLES / name, folder, ignore=shutil.ignore_patterns("results.db*", "*.jsonl")
    )
    checked = plan(load_spec(folder / "pipeline.yaml"))
    pipeline = Pipeline(checked)
    try:
        snapshot = pipeline.run()
    finally:
        pipeline.close()
        checked.model.engine.close()
    return snapshot, folder


def outputs(folder: Path) -> list[dict]:
    with sqlite3.connect(folder / "results.db") as conn:
        return [
            json.loads(text) for (text,) in conn.execute("SELECT outputs FROM results ORDER BY id")
        ]


def test_the_vibration_pipeline_raises_the_alarm_only_after_the_fault_starts(tmp_path: Path):
    snapshot, folder = run_example("vibration", tmp_path)

    per = snapshot.counts["pump-1"]
    assert per["produced"] == 20_000
    windows = (20_000 - 256) // 128 + 1
    assert per["processed"] == windows and per["held"] == 20_000 - windows
    results = outputs(folder)
    alarms = [i for i, r in enumerate(results) if r["alarm"]]
    assert alarms, "the developing fault must raise the alarm"
    # the fault starts at 12 s: window i ends at row 256 + 128 i (1 kHz), so no alarm before ~i = 92
    assert min(alarms) * 128 + 256 >= 12_000
    alerts = (folder / "alerts.jsonl").read_text().splitlines()
    assert len(alerts) == len(alarms) == snapshot.sinks["alerts"]["written"]


def test_the_shapes_pipeline_finds_the_shapes_in_source_pixels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    snapshot, folder = run_example("shapes", tmp_path)

    assert snapshot.counts["cam-1"]["processed"] == 100
    truth = json.loads((folder / "scenes.json").read_text())
    frames = truth["frames"] if isinstance(truth, dict) else truth
    results = outputs(folder)
    found = matched = 0
    for result, expected in zip(results, frames, strict=False):
        objects = expected["objects"] if isinstance(expected, dict) else expected
        for obj in objects:
            found += 1
            box = obj["box"]
            if any(
                d["label"] == obj["label"] and _iou(d["box"], box) >= 0.5
                for d in result["detections"]
            ):
                matched += 1
    assert found > 0 and matched / found > 0.9
    printed = [line for line in capsys.readouterr().out.splitlines() if '"circle"' in line]
    assert len(printed) == snapshot.sinks["console"]["written"] > 0


def _iou(a: list[float], b: list[float]) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
