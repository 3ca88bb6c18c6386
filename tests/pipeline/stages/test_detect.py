"""Detection: NMS invariants, YOLO v5/v8 and SSD decoding with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fogline.errors import ConfigError, ItemError
from fogline.model import Signature, TensorSpec
from fogline.pipeline._item import Item
from fogline.pipeline.stages import NmsSpec, SsdSpec, YoloSpec, nms


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return 0.0 if union <= 0 else w * h / union


@st.composite
def detections(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 25))
    coords = st.floats(0, 100, allow_nan=False)
    corner = draw(hnp.arrays(np.float64, (n, 2), elements=coords))
    extent = draw(hnp.arrays(np.float64, (n, 2), elements=st.floats(0, 40)))
    scores = draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1), unique=True))
    classes = draw(hnp.arrays(np.int64, n, elements=st.integers(0, 2)))
    return np.concatenate((corner, corner + extent), axis=1), scores, classes


@given(detections(), st.floats(0.05, 0.95), st.booleans())
def test_nms_invariants(
    found: tuple[np.ndarray, np.ndarray, np.ndarray], threshold: float, aware: bool
) -> None:
    # Prepare
    boxes, scores, classes = found
    groups = classes if aware else np.zeros_like(classes)
    # Execute
    keep = nms(boxes, scores, threshold, classes if aware else None)
    # Assert: a subset, best first, no kept pair of one class overlapping too much
    assert len(set(keep.tolist())) == len(keep) and set(keep.tolist()) <= set(range(len(boxes)))
    assert (np.diff(scores[keep]) <= 0).all()
    for i, a in enumerate(keep):
        for b in keep[i + 1 :]:
            if groups[a] == groups[b]:
                assert _iou(boxes[a], boxes[b]) <= threshold + 1e-9
    # ... and every dropped box was dropped by a better kept box of its class
    for d in set(range(len(boxes))) - set(keep.tolist()):
        assert any(
            groups[k] == groups[d]
            and scores[k] >= scores[d]
            and _iou(boxes[k], boxes[d]) > threshold - 1e-9
            for k in keep
        )


def test_nms_limit_and_empty() -> None:
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]], float)
    assert nms(boxes, np.array([0.1, 0.3, 0.2]), limit=2).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0)).tolist() == []


def _sig(*shape: int | str) -> Signature:
    return Signature((), (TensorSpec("out", "float32", shape),))


# Four candidates in model pixels (cx, cy, w, h) for two classes:
#   0: (50, 50, 20, 20) class 1 at 0.9         -> kept
#   1: (52, 50, 20, 20) class 1 at 0.8         -> suppressed by 0 (IoU 0.82)
#   2: (50, 50, 20, 20) class 0 at 0.7         -> kept: another class
#   3: (10, 10, 4, 4)   class 0 at 0.1         -> under the score threshold
CENTRES = np.array([[50, 50, 20, 20], [52, 50, 20, 20], [50, 50, 20, 20], [10, 10, 4, 4]], float)
CLASS_SCORES = np.array([[0.05, 0.9], [0.1, 0.8], [0.7, 0.2], [0.1, 0.05]])
# letterboxed from a 200 x 100 source into 100 x 100: model = src * 0.5 + (0, 25),
# so box 0, [40, 40, 60, 60] in the model, is [80, 30, 120, 70] in the source
META = {"geometry": (0.5, 0.5, 0.0, 25.0), "source_size": (200, 100)}
EXPECTED = [
    {"label": "dog", "score": 0.9, "box": [80.0, 30.0, 120.0, 70.0]},
    {"label": "cat", "score": 0.7, "box": [80.0, 30.0, 120.0, 70.0]},
]


def test_yolo_v8_decodes_a_known_tensor() -> None:
    out = np.concatenate((CENTRES, CLASS_SCORES), axis=1).T.astype(np.float32)  # (4 + C, N)
    spec = YoloSpec(type="yolo", format="v8", labels=["cat", "dog"], score=0.25, iou=0.5)
    assert spec.check(_sig(1, 6, 4), frozenset()) == {"detections"}
    item = spec.build(_sig(1, 6, 4))(Item("cam", 0, 0.0, None, dict(META), {"out": out}))
    assert item.result["detections"] == EXPECTED


def test_yolo_v5_multiplies_objectness() -> None:
    objectness = np.array([[1.0], [1.0], [1.0], [1.0]])
    rows = np.concatenate((CENTRES, objectness, CLASS_SCORES), axis=1).astype(np.float32)
    rows[2, 4] = 0.5  # class 0's box: 0.5 * 0.7 = 0.35
    spec = YoloSpec(type="yolo", format="v5", labels=["cat", "dog"])
    item = spec.build(_sig(1, 4, 7))(Item("cam", 0, 0.0, None, dict(META), {"out": rows}))
    assert [d["score"] for d in item.result["detections"]] == [0.9, 0.35]
    unaware = YoloSpec(type="yolo", format="v5", class_aware=False).build(_sig(1, 4, 7))
    item = unaware(Item("cam", 0, 0.0, None, dict(META), {"out": rows}))
    assert [(d["label"], d["score"]) for d in item.result["detections"]] == [("1", 0.9)]


def test_yolo_clips_to_the_source_and_caps_the_count() -> None:
    out = np.array([[5, 5, 20, 20, 0.9], [80, 80, 10, 10, 0.8], [40, 40, 4, 4, 0.7]], np.float32)
    spec = YoloSpec(type="yolo", format="v5", max_detections=2)
    item = spec.build(_sig(1, 3, 5))(  # one class only: 5 + 1 columns would be v5 proper
        Item("cam", 0, 0.0, None, {"source_size": (50, 50)}, {"out": np.insert(out, 4, 1, 1)})
    )
    assert [d["box"] for d in item.result["detections"]] == [[0, 0, 15, 15], [50, 50, 50, 50]]


def test_yolo_check_refuses_the_wrong_format_and_label_count() -> None:
    with pytest.raises(ConfigError, match="other format"):
        YoloSpec(type="yolo", format="v5").check(_sig(1, 8400, 4), frozenset())
    with pytest.raises(ConfigError, match="80 classes, but 2 labels"):
        YoloSpec(type="yolo", labels=["a", "b"]).check(_sig(1, 84, 8400), frozenset())
    with pytest.raises(ConfigError, match="expected"):
        YoloSpec(type="yolo").check(_sig(1, 84), frozenset())
    with pytest.raises(ItemError, match="shape"):
        YoloSpec(type="yolo").build(_sig(1, 84, 10))(
            Item("cam", 0, 0.0, None, outputs={"out": np.zeros((3,))})
        )


def test_ssd_normalized_yx_boxes_map_to_source_pixels() -> None:
    sig = Signature(
        (),
        (
            TensorSpec("boxes", "float32", (1, 3, 4)),
            TensorSpec("scores", "float32", (1, 3)),
            TensorSpec("classes", "float32", (1, 3)),
        ),
    )
    spec = SsdSpec(
        type="ssd",
        boxes="boxes",
        scores="scores",
        classes="classes",
        labels=["bg", "person", "car"],
    )
    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.5, 0.6]])
    outputs = {
        "boxes": boxes,
        "scores": np.array([0.9, 0.3, 0.8]),
        "classes": np.array([1.0, 2.0, 2.0]),
    }
    # resized from 400 x 200 (w x h) to 100 x 100
    meta = {"geometry": (0.25, 0.5, 0.0, 0.0), "source_size": (400, 200), "model_size": (100, 100)}
    assert spec.check(sig, frozenset()) == {"detections"}
    item = spec.build(sig)(Item("cam", 0, 0.0, None, meta, outputs))
    assert item.result["detections"] == [
        {"label": "person", "score": 0.9, "box": [80.0, 20.0, 240.0, 100.0]},
        {"label": "car", "score": 0.8, "box": [80.0, 20.0, 240.0, 100.0]},
    ]
    item = spec.build(sig)(Item("cam", 0, 0.0, None, {}, outputs))  # no size: stays normalized
    assert item.result["detections"][0]["box"] == [0.2, 0.1, 0.6, 0.5]


def test_nms_stage_keeps_labels_apart() -> None:
    item = Item("cam", 0, 0.0, None)
    item.result["detections"] = [
        {"label": "a", "score": 0.9, "box": [0, 0, 10, 10]},
        {"label": "b", "score": 0.8, "box": [0, 0, 10, 10]},
        {"label": "a", "score": 0.7, "box": [1, 0, 10, 10]},
    ]
    kept = NmsSpec(type="nms").build(Signature((), ()))(item).result["detections"]
    assert [(d["label"], d["score"]) for d in kept] == [("a", 0.9), ("b", 0.8)]
    item.result["detections"] = [{"label": "a", "box": [0, 0, 1, 1]}] * 2
    with pytest.raises(ItemError, match="malformed"):
        NmsSpec(type="nms").build(Signature((), ()))(item)
