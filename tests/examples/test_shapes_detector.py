"""The shapes detector's scenes, decoding, mAP@0.5 and the architecture search's family.

The scenes are checked against the pixels they were drawn with, the mAP
against figures derived here from the predictions' construction, and the
family builds, trains, exports and scores a small candidate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import fogline.examples.shapes_torch as shapes_torch
from fogline.data import Dataset, load_dataset
from fogline.errors import DataError
from fogline.examples import (
    SHAPES_LABELS,
    SHAPES_SIZE,
    Detections,
    shapes_detections,
    shapes_map50,
    shapes_scene,
    shapes_split,
)
from fogline.model import Signature, TensorSpec, load_engine, torch_to_onnx
from fogline.optimize import Family
from fogline.pipeline.stages import nms

# --- the scenes -----------------------------------------------------------------------------------


def test_the_held_out_split_is_the_same_scenes_drawn_again_from_its_seed() -> None:
    images, labels = shapes_split("eval")
    rng = np.random.default_rng(1)
    for image, boxes in zip(images[:20], labels[:20], strict=True):
        again, again_boxes, _ = shapes_scene(rng)
        np.testing.assert_array_equal(image[0], again / np.float32(255))
        np.testing.assert_array_equal(boxes, again_boxes)
    assert all(b.shape[1] == 5 and b.dtype == np.float32 for b in labels)
    assert {int(c) for b in labels for c in b[:, 0]} == set(range(len(SHAPES_LABELS)))


def test_every_box_is_the_tight_box_of_its_shapes_pixels_and_the_class_fits_its_fill() -> None:
    rng = np.random.default_rng(2024)
    fills: dict[str, list[float]] = {name: [] for name in SHAPES_LABELS}
    for _ in range(60):
        image, labels, owner = shapes_scene(rng, noise=False)
        for row, (kind, x1, y1, x2, y2) in enumerate(labels.astype(int)):
            rows, cols = np.nonzero(owner == row)
            assert (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1) == (x1, y1, x2, y2)
            fills[SHAPES_LABELS[kind]].append(len(rows) / ((x2 - x1) * (y2 - y1)))
        # What was drawn is what the image shows: shapes and background never share a grey.
        ink, ground = image[owner != -1].astype(int), image[owner == -1].astype(int)
        if ink.size:
            assert ink.max() < ground.min() or ink.min() > ground.max()
    assert min(fills["rectangle"]) == 1.0
    # A disc fills pi/4 of its box (more when small and digitised), a triangle about half.
    assert all(math.pi / 4 - 0.05 < f < 0.97 for f in fills["circle"])
    assert all(0.4 < f < 0.7 for f in fills["triangle"])


def test_the_data_functions_load_through_fogline_with_one_label_per_image() -> None:
    signature = Signature(
        (TensorSpec("images", "float32", ("batch", 1, SHAPES_SIZE, SHAPES_SIZE)),), ()
    )
    data = load_dataset("fogline.examples:shapes_eval", signature)
    images, labels = shapes_split("eval")
    assert data.size == len(images) == len(data.labels)
    assert all(np.array_equal(a, b) for a, b in zip(data.labels, labels, strict=True))
    assert data.limit(7).labels is not None and len(data.limit(7).labels) == 7


# --- decoding and NMS -----------------------------------------------------------------------------


def test_the_decoder_turns_rows_into_corner_boxes_scored_objectness_times_class() -> None:
    rows = np.array(
        [
            [20, 30, 10, 6, 0.8, 0.1, 0.5, 0.25],  # class 1, score 0.4
            [50, 10, 4, 8, 0.5, 0.9, 0.2, 0.1],  # class 0, score 0.45
            [5, 5, 2, 2, 0.1, 0.05, 0.05, 0.05],  # under the threshold
        ],
        np.float32,
    )
    found = shapes_detections(rows, score=0.3)
    np.testing.assert_allclose(found.boxes, [[48, 6, 52, 14], [15, 27, 25, 33]])
    np.testing.assert_allclose(found.scores, [0.5 * 0.9, 0.8 * 0.5], rtol=1e-6)
    assert found.classes.tolist() == [0, 1]


def test_nms_keeps_what_the_pipelines_nms_keeps() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        rows = np.concatenate(
            [
                rng.uniform(10, 54, (64, 2)),
                rng.uniform(4, 30, (64, 2)),
                rng.uniform(0, 1, (64, 4)),
            ],
            1,
        ).astype(np.float32)
        found = shapes_detections(rows, score=0.05, iou=0.5)
        scores = rows[:, 4:5] * rows[:, 5:]
        kept = np.flatnonzero(scores.max(1) >= 0.05)
        boxes = np.concatenate(
            [rows[kept, :2] - rows[kept, 2:4] / 2, rows[kept, :2] + rows[kept, 2:4] / 2], 1
        )
        order = nms(boxes, scores.max(1)[kept], 0.5, scores.argmax(1)[kept])
        np.testing.assert_allclose(found.boxes, boxes[order])
        assert len(found.boxes) < len(kept)  # overlapping boxes of a class were dropped


# --- mAP@0.5 --------------------------------------------------------------------------------------


def exact(labels: np.ndarray, score: float = 0.9) -> Detections:
    return Detections(labels[:, 1:].copy(), np.full(len(labels), score), labels[:, 0].astype(int))


def coco_ap(recall: float) -> float:
    """COCO's AP for detections all right (precision 1) that reach ``recall``: the share of its
    101 recall points at or under it."""
    return float(np.mean(np.linspace(0, 1, 101) <= recall + 1e-9))


def test_map_is_one_for_the_truth_and_falls_as_derived_when_boxes_are_missed() -> None:
    _, labels = shapes_split("eval")
    labels = list(labels[:200])
    assert shapes_map50([exact(t) for t in labels], labels) == 1.0
    # Miss every third object of each class: recall drops; precision stays 1 until then.
    found, hits = [], np.zeros(len(SHAPES_LABELS))
    seen = np.zeros(len(SHAPES_LABELS), int)
    for t in labels:
        keep = []
        for row in t:
            c = int(row[0])
            keep.append(seen[c] % 3 != 2)
            hits[c] += keep[-1]
            seen[c] += 1
        found.append(exact(t[np.array(keep, bool).reshape(-1)]))
    expected = np.mean([coco_ap(h / n) for h, n in zip(hits, seen, strict=True)])
    assert shapes_map50(found, labels) == pytest.approx(expected)
    # False boxes scored under every true one come after them on the curve: nothing changes.
    padded = []
    for i, f in enumerate(found):
        decoy_class = i % len(SHAPES_LABELS)
        padded.append(
            Detections(
                np.concatenate([f.boxes, [[0.0, 0.0, 3.0, 3.0]]]),
                np.concatenate([f.scores, [0.1]]),
                np.concatenate([f.classes, [decoy_class]]),
            )
        )
    assert shapes_map50(padded, labels) == pytest.approx(expected)


def test_a_box_counts_only_at_iou_half_or_more_and_with_its_class() -> None:
    truth = [np.array([[0, 10, 10, 30, 30]], np.float32)]
    # Slid right by d, a 20 px square overlaps its place by IoU (20 - d) / (20 + d).
    for d, counts in ((6.0, True), (7.0, False)):  # IoU 0.54 and 0.48
        moved = Detections(np.array([[10 + d, 10, 30 + d, 30]]), np.array([0.9]), np.array([0]))
        assert shapes_map50([moved], truth) == pytest.approx(1.0 if counts else 0.0)
    wrong = Detections(np.array([[10.0, 10, 30, 30]]), np.array([0.9]), np.array([2]))
    assert shapes_map50([wrong], truth) == 0.0


# --- the family -----------------------------------------------------------------------------------


def test_the_family_builds_trains_exports_and_scores_a_small_candidate(tmp_path) -> None:
    family = shapes_torch.family
    assert isinstance(family, Family) and family.metric == "mAP@0.5"
    baseline = shapes_torch.ShapesFamily.baseline()
    assert all(baseline[k] in values for k, values in family.space.items())
    knobs = {k: min(values) for k, values in family.space.items()}
    model = family.build(knobs)
    side = int(knobs["resolution"])
    assert tuple(family.example_input(knobs).shape) == (1, 1, side, side)
    images, labels = shapes_split("eval")
    train = Dataset("few", ({"images": images[:32]},), labels=labels[:32])
    before = [p.detach().clone() for p in model.parameters()]
    family.fit(model, train, knobs, epochs=1, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    path = torch_to_onnx(model, family.example_input(knobs), tmp_path / "candidate.onnx")
    engine = load_engine(path)
    held = Dataset("held", ({"images": images[:50]},), labels=labels[:50])
    assert 0.0 <= family.score(engine, held, knobs) <= 1.0
    with pytest.raises(DataError, match="labels"):
        family.score(engine, Dataset("bare", ({"images": images[:4]},)), knobs)
