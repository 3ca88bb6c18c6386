"""The committed example models (examples/vibration, examples/shapes) against fresh data.

Each model is loaded by ONNX Runtime, its signature checked against what its
README and pipeline.yaml promise, and run on data the example's own
``make_data.py`` draws now with seeds the training never used. Nothing is
retrained here.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import yaml

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VIBRATION = EXAMPLES / "vibration"
SHAPES = EXAMPLES / "shapes"


def load(path: Path) -> ModuleType:
    """Import an example's script by path (examples/ is not a package)."""
    name = f"example_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def signature(model: Path) -> tuple[list[tuple[str, str, list]], list[tuple[str, str, list]]]:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    describe = lambda args: [(a.name, a.type, list(a.shape)) for a in args]  # noqa: E731
    return describe(session.get_inputs()), describe(session.get_outputs())


def run(model: Path, name: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x})[0]


def stage(pipeline: Path, section: str, kind: str) -> dict:
    spec = yaml.safe_load(pipeline.read_text())
    return next(s for s in spec[section] if s["type"] == kind)


# --- vibration ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vibration() -> tuple[ModuleType, ModuleType]:
    return load(VIBRATION / "make_data.py"), load(VIBRATION / "features.py")


def test_vibration_model_has_the_documented_signature() -> None:
    inputs, outputs = signature(VIBRATION / "model.onnx")
    stats = np.load(VIBRATION / "stats.npz")

    assert inputs == [("features", "tensor(float)", ["batch", 48])]
    assert outputs == [("score", "tensor(float)", ["batch"])]
    assert stats["mean"].shape == stats["std"].shape == (16, 3)
    assert stats["mean"].dtype == stats["std"].dtype == np.float32
    assert (stats["std"] > 0).all()


def test_vibration_csv_is_what_make_data_generates(vibration) -> None:
    make_data, _ = vibration
    committed = np.genfromtxt(VIBRATION / "vibration.csv", delimiter=",", names=True, dtype=None)

    t, accel, fault = make_data.generate()

    # Written with 3 decimals; a libm differing in the last bit may round the other way.
    assert np.allclose(committed["t"], t, atol=6e-4)
    for axis, column in enumerate(("ax", "ay", "az")):
        assert np.allclose(committed[column], accel[:, axis], atol=6e-4)
    assert ((committed["state"] == "fault") == fault).all()


def test_vibration_model_separates_a_fresh_fault_from_normal(vibration) -> None:
    # Prepare: 30 s of a machine the model never heard, developing a fault from 15 s
    make_data, features = vibration
    t, accel, fault = make_data.generate(30.0, 15.0, seed=4242)
    stats = np.load(VIBRATION / "stats.npz")
    x = features.scale(features.features(accel), stats["mean"], stats["std"])
    labels = fault[features.window_ends(t.size)]
    threshold = stage(VIBRATION / "pipeline.yaml", "postprocess", "anomaly")["threshold"]

    # Execute
    scores = run(VIBRATION / "model.onnx", "features", x)

    # Assert: fault windows score far higher; the pipeline's threshold splits the two
    normal, faulty = scores[~labels], scores[labels]
    assert faulty.mean() > 20 * normal.mean()
    assert (normal > threshold).mean() < 0.01
    assert (faulty > threshold).mean() > 0.95


# --- shapes -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes() -> ModuleType:
    return load(SHAPES / "make_data.py")


def decode(output: np.ndarray, score: float, iou: float) -> list[tuple[int, float, np.ndarray]]:
    """One image's YOLOv5 output [n, 5 + C] → (class, score, x1y1x2y2) after class-aware NMS."""
    conf = output[:, 4:5] * output[:, 5:]
    cls, best = conf.argmax(1), conf.max(1)
    boxes = np.concatenate(
        [output[:, :2] - output[:, 2:4] / 2, output[:, :2] + output[:, 2:4] / 2], 1
    )
    kept: list[tuple[int, float, np.ndarray]] = []
    for i in np.argsort(-best):
        if best[i] < score:
            break
        if all(c != cls[i] or box_iou(b, boxes[i]) < iou for c, _, b in kept):
            kept.append((int(cls[i]), float(best[i]), boxes[i]))
    return kept


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def detect(frames: list[np.ndarray], shapes: ModuleType) -> list[list[tuple[int, np.ndarray]]]:
    """Letterbox, normalise, run, decode with pipeline.yaml's settings; boxes in frame pixels."""
    yolo = stage(SHAPES / "pipeline.yaml", "postprocess", "yolo")
    boxed = [shapes.letterbox(f, (96, 96)) for f in frames]
    x = np.stack([b for b, _ in boxed]).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    outputs = run(SHAPES / "model.onnx", "images", x)
    found = []
    for output, (_, (sx, sy, tx, ty)) in zip(outputs, boxed, strict=True):
        dets = decode(output, yolo["score"], yolo["iou"])
        back = np.array([sx, sy, sx, sy]), np.array([tx, ty, tx, ty])
        found.append([(c, (box - back[1]) / back[0]) for c, _, box in dets])
    return found


def matched(found: list[tuple[int, np.ndarray]], truth: list[tuple[int, np.ndarray]]) -> int:
    """How many ground-truth boxes a detection of the same class covers at IoU ≥ 0.5."""
    free = list(range(len(found)))
    hits = 0
    for cls, box in truth:
        for i in free:
            if found[i][0] == cls and box_iou(found[i][1], box) >= 0.5:
                free.remove(i)
                hits += 1
                break
    return hits


def test_shapes_model_has_the_documented_signature() -> None:
    inputs, outputs = signature(SHAPES / "model.onnx")
    yolo = stage(SHAPES / "pipeline.yaml", "postprocess", "yolo")

    assert inputs == [("images", "tensor(float)", ["batch", 3, 96, 96])]
    assert outputs == [("detections", "tensor(float)", ["batch", 144, 5 + len(yolo["labels"])])]
    assert yolo["labels"] == ["square", "circle", "triangle"]


def test_shapes_model_finds_the_shapes_in_fresh_scenes(shapes) -> None:
    # Prepare: 40 scenes drawn now, with a seed training never used
    rng = np.random.default_rng(2024)
    scenes = [shapes.scene(rng) for _ in range(40)]

    # Execute
    found = detect([image for image, _, _ in scenes], shapes)

    # Assert: most objects found at IoU >= 0.5 with the right class, few false alarms
    truth = [list(zip(classes, boxes, strict=True)) for _, boxes, classes in scenes]
    hits = sum(matched(f, t) for f, t in zip(found, truth, strict=True))
    objects, detections = sum(map(len, truth)), sum(map(len, found))
    assert hits / objects >= 0.85, f"recall {hits}/{objects}"
    assert hits / detections >= 0.85, f"precision {hits}/{detections}"


def test_shapes_model_follows_the_demo_video(shapes) -> None:
    # Prepare: every 5th frame of the committed MJPG video and its ground truth
    truth = json.loads((SHAPES / "scenes.json").read_text())
    labels = truth["labels"]
    capture = cv2.VideoCapture(str(SHAPES / "scenes.avi"))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(frame[..., ::-1]))
    capture.release()
    assert len(frames) == len(truth["frames"]) == 100
    picked = range(0, 100, 5)

    # Execute
    found = detect([frames[i] for i in picked], shapes)

    # Assert
    expected = [
        [(labels.index(o["label"]), np.array(o["box"])) for o in truth["frames"][i]] for i in picked
    ]
    hits = sum(matched(f, t) for f, t in zip(found, expected, strict=True))
    objects = sum(map(len, expected))
    assert hits / objects >= 0.85, f"recall {hits}/{objects}"
