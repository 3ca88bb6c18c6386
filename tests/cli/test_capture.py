"""``fogline capture list|export`` as a user runs them, on a store a real digits pipeline filled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fogline.data import load_dataset
from fogline.examples import PIXEL_SCALE, digits_model_path, digits_stream
from fogline.model import open_model
from fogline.pipeline import Pipeline, load_spec, plan
from fogline.store import Capture, ResultStore, StoredLabel
from support.digits_pipeline import LABELS, write_spec


def fogline(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fogline", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def pipeline(capture: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "digits",
        "sources": [
            {"type": "dataset", "name": "scanner", "function": "fogline.examples:digits_stream"}
        ],
        "preprocess": [
            {"type": "normalize", "scale": PIXEL_SCALE},
            {"type": "reshape", "shape": [1, 8, 8]},
        ],
        "model": {"path": str(digits_model_path().parent), "max_batch": 16},
        "postprocess": [{"type": "classify", "labels": LABELS, "min_score": 0.9}],
        "capture": capture,
    }


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A store with the digits the model was least sure of, all but two with late labels."""
    folder = tmp_path_factory.mktemp("run")
    checked = plan(load_spec(write_spec(folder, pipeline({"when": "score < 0.95"}))))
    runner = Pipeline(checked)
    try:
        runner.run(max_items=400)
    finally:
        runner.close()
        checked.model.engine.close()
    _, truth = digits_stream()
    db = folder / "results.db"
    with ResultStore(db) as store:
        records = store.captures()
        labels = {
            r.capture.item_id: int(truth[int(str(r.capture.position).rsplit("#", 1)[1])])
            for r in records[2:]
        }
        store.put_labels(StoredLabel(item, str(label), 1.0) for item, label in labels.items())
    assert len(records) >= 6
    return db, labels


def test_list_shows_the_newest_captures_with_their_late_labels(captured):
    db, labels = captured

    table = fogline("capture", "list", db, "--limit", "3")
    rows = fogline("capture", "list", db, "--json")

    assert table.returncode == 0, table.stderr
    for column in ("id", "item id", "when", "reason", "answer", "label", "bytes"):
        assert column in table.stdout
    assert "score < 0.95" in table.stdout
    assert f"3 shown of {len(labels) + 2} captures" in table.stdout
    listed = [json.loads(line) for line in rows.stdout.splitlines()]
    assert len(listed) == len(labels) + 2 and [r["id"] for r in listed] == sorted(
        r["id"] for r in listed
    )
    for row in listed:
        assert row["shape"] == [1, 8, 8] and row["dtype"] == "float32"
        assert row["answer"]["score"] < 0.95
        expected = labels.get(row["item_id"])
        assert row["label"] == (None if expected is None else str(expected))


def test_export_round_trips_into_load_dataset_with_the_late_labels(captured, tmp_path: Path):
    db, labels = captured
    out = tmp_path / "hard.npz"

    result = fogline("capture", "export", db, "--out", out, "--labelled-only")

    assert result.returncode == 0, result.stderr
    assert f"pixels [{len(labels)}, 1, 8, 8], labels [{len(labels)}]" in result.stdout
    signature = open_model(digits_model_path().parent).engine.signature
    data = load_dataset(str(out), signature)
    assert data.size == len(labels)
    assert data.array("pixels").shape == (len(labels), 1, 8, 8)
    assert data.array("pixels").dtype == np.float32
    assert data.labels is not None and data.labels.dtype == np.int64
    with ResultStore(db) as store:
        kept = store.captures(labelled_only=True)
    assert data.labels.tolist() == [labels[r.capture.item_id] for r in kept]
    np.testing.assert_array_equal(data.array("pixels")[0], kept[0].capture.array())


def test_export_of_partly_labelled_captures_leaves_labels_out_and_says_so(captured, tmp_path):
    db, labels = captured
    out = tmp_path / "all.npz"

    result = fogline("capture", "export", db, "--out", out)

    assert result.returncode == 0, result.stderr
    assert f"{len(labels)} of {len(labels) + 2} captures have a late label" in result.stdout
    with np.load(out) as npz:
        assert sorted(npz.files) == ["pixels"] and len(npz["pixels"]) == len(labels) + 2


def test_bad_exports_fail_cleanly_and_write_nothing(tmp_path: Path):
    out = tmp_path / "out" / "data.npz"
    with ResultStore(tmp_path / "empty.db"):
        pass
    mixed = tmp_path / "mixed.db"
    with ResultStore(mixed) as store:
        store.add_captures(
            Capture.of(
                np.zeros(shape, np.float32),
                item_id=f"i{n}",
                source="s",
                captured_at=1.0,
                model="m",
                model_version="1",
                reason="r",
                input_name="pixels",
                answer={},
            )
            for n, shape in enumerate([(1, 8, 8), (1, 8, 8), (1, 16, 16)])
        )

    assert_clean_error(
        fogline("capture", "export", tmp_path / "nowhere.db", "--out", out), "no such store"
    )
    assert_clean_error(
        fogline("capture", "export", tmp_path / "empty.db", "--out", out), "no captures"
    )
    assert_clean_error(
        fogline("capture", "export", mixed, "--out", out),
        "differ in shape",
        "[1, 8, 8] float32 (captures 1…2, 2 of them)",
        "[1, 16, 16] float32 (captures 3)",
    )
    assert_clean_error(fogline("capture", "list", mixed, "--since", "soon"), "--since 'soon'")
    assert not (tmp_path / "nowhere.db").exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_check_refuses_a_capture_condition_on_an_unknown_field(tmp_path: Path):
    path = write_spec(tmp_path, pipeline({"when": "confidence < 0.5"}))

    assert_clean_error(fogline("check", path), "capture.when:", "uses confidence")
