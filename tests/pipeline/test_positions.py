"""Every result says which input it came from: its position, in the store, each sink and the outbox.

Real inputs (PNG files, a CSV file, an MJPG video, all written here), the
real digits model on ONNX Runtime, real SQLite. The digits are real too, so
a result's label checks that the position it carries is its own input's and
not a neighbour's.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fogline.examples import PIXEL_SCALE, digits_stream
from fogline.pipeline import Pipeline, Snapshot, load_spec, plan
from fogline.store import read_deduplicated
from support.digits_pipeline import digits_spec, write_spec

#: Grey levels 0..16 become 0..240 in a PNG or a video frame.
BRIGHTNESS = 15
#: From an image of grey 0..240 (8x8, or a multiple) back to what the model was trained on.
FROM_IMAGE = [
    {"type": "resize", "size": [8, 8], "interpolation": "area"},
    {"type": "colour", "to": "gray"},
    {"type": "normalize", "scale": PIXEL_SCALE / BRIGHTNESS},
    {"type": "layout", "to": "chw"},
]


def run(folder: Path, spec: dict[str, Any]) -> Snapshot:
    checked = plan(load_spec(write_spec(folder, spec)))
    pipeline = Pipeline(checked)
    try:
        return pipeline.run()
    finally:
        pipeline.close()
        checked.model.engine.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def stored(db: Path) -> list[tuple[str | None, dict[str, Any]]]:
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT position, outputs FROM results ORDER BY id").fetchall()
    return [(position, json.loads(outputs)) for position, outputs in rows]


def digit_pngs(folder: Path, count: int) -> dict[str, str]:
    """``count`` held-out digits as PNGs in a folder per label; {relative path: label}."""
    pixels, labels = digits_stream()
    written = {}
    for i in range(count):
        name = f"{labels[i]}/{i:03d}.png"
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        grey = pixels[i].astype(np.uint8) * BRIGHTNESS
        assert cv2.imwrite(str(folder / name), cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
        written[name] = str(labels[i])
    return written


def test_each_image_result_names_its_file_in_the_sinks_the_store_and_the_outbox(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare: 60 real digits as PNG files, one folder per label
    files = digit_pngs(tmp_path / "scans", 60)
    chosen = sorted(files)[7]
    spec = digits_spec(
        sources=[{"type": "images", "name": "scanner", "path": "scans"}],
        preprocess=FROM_IMAGE,
        sinks=[
            {"type": "jsonl", "name": "all", "path": "all.jsonl"},
            {
                "type": "jsonl",
                "name": "one",
                "path": "one.jsonl",
                "when": f'position == "{chosen}"',
            },
            {"type": "stdout", "name": "say", "format": "{position} is a {label}"},
        ],
        store={"path": "results.db", "sync": True},
        outbox={"transport": {"type": "jsonl", "path": "outbox.jsonl"}},
    )

    # Execute
    snapshot = run(tmp_path, spec)

    # Assert: each file once, everywhere, and the label read from it beside its name
    assert snapshot.total("processed") == len(files)
    sunk = lines(tmp_path / "all.jsonl")
    assert sorted(r["position"] for r in sunk) == sorted(files)
    right = sum(files[r["position"]] == r["outputs"]["label"] for r in sunk)
    assert right >= 0.9 * len(files)  # a position on the wrong result would be right ~10%
    assert [r["position"] for r in lines(tmp_path / "one.jsonl")] == [chosen]
    said = [
        line for line in capsys.readouterr().out.splitlines() if line.endswith(tuple("0123456789"))
    ]
    assert sorted(line.split(" is a ")[0] for line in said) == sorted(files)
    rows = stored(tmp_path / "results.db")
    by_position = {r["position"]: r["outputs"] for r in sunk}
    assert {position: outputs["label"] for position, outputs in rows} == {
        position: outputs["label"] for position, outputs in by_position.items()
    }
    delivered = read_deduplicated(tmp_path / "outbox.jsonl")
    assert sorted(m["result"]["position"] for m in delivered) == sorted(files)
    assert all(
        by_position[m["result"]["position"]]["label"] == m["result"]["outputs"]["label"]
        for m in delivered
    )


def test_csv_results_carry_their_line_and_skipped_lines_keep_the_count(tmp_path: Path) -> None:
    # Prepare: six digits as CSV rows, the third row malformed (line 4 of the file)
    pixels, labels = digits_stream()
    header = ",".join(f"p{i}" for i in range(64)) + ",label"
    body = [",".join(str(v) for v in pixels[i].ravel()) + f",{labels[i]}" for i in range(6)]
    body[2] = "1,2,oops" + ",0" * 62
    (tmp_path / "log.csv").write_text("\n".join([header, *body]) + "\n")
    spec = digits_spec(
        sources=[
            {"type": "csv", "name": "log", "path": "log.csv", "speed": 0, "label_column": "label"}
        ],
        preprocess=[
            {"type": "normalize", "scale": PIXEL_SCALE},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
        sinks=[{"type": "jsonl", "name": "all", "path": "all.jsonl"}],
    )

    # Execute
    run(tmp_path, spec)

    # Assert
    expected = [f"log.csv:{n}" for n in (2, 3, 5, 6, 7)]
    assert sorted(r["position"] for r in lines(tmp_path / "all.jsonl")) == expected
    assert sorted(position for position, _ in stored(tmp_path / "results.db")) == expected


def test_video_results_carry_their_frame_number(tmp_path: Path) -> None:
    # Prepare: twelve digits as the frames of a real MJPG video, upscaled so JPEG keeps them
    pixels, _ = digits_stream()
    writer = cv2.VideoWriter(
        str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32)
    )
    for i in range(12):
        grey = cv2.resize(pixels[i] * BRIGHTNESS, (32, 32), interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
    writer.release()
    spec = digits_spec(
        sources=[{"type": "video", "name": "cam", "path": "clip.avi"}],
        preprocess=FROM_IMAGE,
        sinks=[{"type": "jsonl", "name": "all", "path": "all.jsonl"}],
        store={"path": "results.db", "sync": True},
        outbox={"transport": {"type": "jsonl", "path": "outbox.jsonl"}},
    )

    # Execute
    run(tmp_path, spec)

    # Assert: the frame number, not only the sequence, in the sink, the store and the outbox
    frames = [f"clip.avi#frame {n}" for n in range(12)]
    sunk = lines(tmp_path / "all.jsonl")
    assert sorted((r["sequence"], r["position"]) for r in sunk) == list(enumerate(frames))
    assert sorted(p for p, _ in stored(tmp_path / "results.db")) == sorted(frames)
    delivered = read_deduplicated(tmp_path / "outbox.jsonl")
    assert sorted(m["result"]["position"] for m in delivered) == sorted(frames)


def test_a_source_without_positions_of_its_own_gives_name_and_sequence(tmp_path: Path) -> None:
    spec = digits_spec(
        sources=[{"type": "synthetic", "name": "load", "shape": [1, 8, 8], "count": 5}],
        sinks=[{"type": "jsonl", "name": "all", "path": "all.jsonl"}],
    )

    run(tmp_path, spec)

    assert sorted(r["position"] for r in lines(tmp_path / "all.jsonl")) == [
        f"load#{n}" for n in range(5)
    ]
