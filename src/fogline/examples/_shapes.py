"""The bundled shapes detector's data, decoding and mAP@0.5 (numpy; no torch needed).

Scenes are 64x64 grey images holding up to five rectangles, circles,
triangles and elongated ellipses, drawn by :func:`skimage.draw.random_shapes`
one call per shape so each shape's pixels are known: its box is the tight box
of those pixels (the labels ``random_shapes`` returns are off for triangles
cut by the border). Ellipses are distractors, never labelled: the detector
must tell a circle from them. Shapes never touch. The background is a random
grey with a gradient, half the scenes are inverted (light shapes on dark),
and every scene gets Gaussian noise. Everything is drawn from fixed seeds, so the sets are the
same on every machine.

A scene's labels are an ``(n, 5)`` float32 array: ``class, x1, y1, x2, y2``
in pixels (``x2``/``y2`` exclusive, the edge after the last pixel). A
:class:`~fogline.data.Dataset` holds them as an object array, one entry per
image. The detector's output is YOLOv5's layout, which fogline's ``yolo``
stage decodes too: ``[batch, cells, 5 + classes]`` rows of ``cx, cy, w, h,
objectness, class scores``, boxes in input pixels, scores sigmoided.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from fogline.errors import DataError

_HERE = Path(__file__).parent / "shapes"
#: The classes, in the order of the model's class scores.
SHAPES_LABELS = ("rectangle", "circle", "triangle")
#: Scenes are square grey images of this many pixels a side.
SHAPES_SIZE = 64
#: How many scenes each split holds, and the seed it is drawn from.
_SPLITS = {"train": (3000, 0), "eval": (500, 1)}
_MIN_PIXELS = 24  # a shape cut by the border to fewer pixels is drawn again


class Detections(NamedTuple):
    """One image's detections, best first: boxes ``(k, 4)`` x1, y1, x2, y2, scores, class ids."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def shapes_model_path() -> Path:
    """The bundled detector: ``images`` [batch,1,64,64] 0..1 → ``detections`` [batch,64,8]."""
    return _HERE / "model.onnx"


def shapes_scene(
    rng: np.random.Generator, *, noise: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scene: the image (64, 64) uint8, its labels (n, 5) and each pixel's owner.

    The owner is the row of the pixel's shape in the labels, -2 for an
    ellipse (a distractor) and -1 for the background.

    >>> image, labels, owner = shapes_scene(np.random.default_rng(0))
    >>> image.shape, labels.shape[1], int(owner.max()) == len(labels) - 1
    ((64, 64), 5, True)
    """
    from skimage.draw import random_shapes

    size = SHAPES_SIZE
    owner = np.full((size, size), -1, np.int16)
    ink = np.zeros((size, size), np.float32)
    labels: list[list[float]] = []
    distractors = 0
    wanted = int(rng.integers(1, 6))
    for _ in range(20 * wanted):
        if len(labels) + distractors == wanted:
            break
        kind = int(rng.integers(len(SHAPES_LABELS) + 1))  # the last: an ellipse, not labelled
        drawn, _ = random_shapes(  # type: ignore[no-untyped-call]
            (size, size),
            max_shapes=1,
            min_size=8,
            max_size=28,
            num_channels=1,
            channel_axis=None,
            shape=(*SHAPES_LABELS, "ellipse")[kind],
            intensity_range=(0, 100),
            rng=rng,
        )
        mask = drawn != 255
        if mask.sum() < _MIN_PIXELS or (owner[_grow(mask)] != -1).any():
            continue  # too little of it shows, or it would touch a shape already there
        if kind == len(SHAPES_LABELS):
            if _elongation(mask) < 1.5:
                continue  # a round ellipse would be a circle: keep the classes apart
            owner[mask] = -2
            distractors += 1
        else:
            owner[mask] = len(labels)
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            labels.append([kind, cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        ink[mask] = drawn[mask]
    # A grey background with a gradient; the shapes 40 to 230 grey levels darker.
    level = rng.uniform(140, 230)
    slope = rng.uniform(-20, 20, 2)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    image = np.where(owner != -1, ink, level + slope[0] * xx + slope[1] * yy)
    if rng.random() < 0.5:
        image = 255.0 - image
    if noise:
        image = image + rng.normal(0.0, rng.uniform(3, 18), image.shape)
    return (
        np.clip(np.rint(image), 0, 255).astype(np.uint8),
        np.array(labels, np.float32).reshape(-1, 5),
        owner,
    )


def _elongation(mask: np.ndarray) -> float:
    """How much longer a blob is than wide: the square root of its pixel covariance's eigenvalues' ratio."""
    rows, cols = np.nonzero(mask)
    low, high = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64)))
    return float(np.sqrt(high / max(low, 1e-9)))


def _grow(mask: np.ndarray) -> np.ndarray:
    """``mask`` and its 8 neighbours (one pixel of clearance between shapes)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    grown = out.copy()
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


@functools.cache
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        count, seed = _SPLITS[split]
    except KeyError:
        raise DataError(f"unknown shapes split {split!r}; use 'train' or 'eval'") from None
    try:
        import skimage  # noqa: F401
    except ImportError as exc:
        raise DataError(
            "the shapes example needs scikit-image: pip install 'fogline[examples]'"
        ) from exc
    rng = np.random.default_rng(seed)
    images = np.empty((count, 1, SHAPES_SIZE, SHAPES_SIZE), np.float32)
    labels = np.empty(count, object)
    for i in range(count):
        image, labels[i], _ = shapes_scene(rng)
        images[i, 0] = image / np.float32(255)
    images.flags.writeable = False
    return images, labels


def shapes_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)`` of the ``train`` (3000 scenes) or ``eval`` (500) split.

    ``images`` is float32 [n, 1, 64, 64] in 0..1; ``labels`` an object array
    of n ``(k, 5)`` arrays ``class, x1, y1, x2, y2``. Drawn once per process.

    >>> images, labels = shapes_split("eval")
    >>> images.shape, labels.shape, labels[0].shape[1]
    ((500, 1, 64, 64), (500,), 5)
    """
    images, labels = _split(split)
    return images, labels.copy()


def _batches(split: str, size: int, with_labels: bool = True) -> Iterator[dict[str, np.ndarray]]:
    images, labels = shapes_split(split)
    for start in range(0, len(images), size):
        batch = {"images": images[start : start + size]}
        if with_labels:
            batch["labels"] = labels[start : start + size]
        yield batch


def shapes_train() -> Iterator[dict[str, np.ndarray]]:
    """The 3000 training scenes with their boxes, in batches of 64."""
    return _batches("train", 64)


def shapes_eval() -> Iterator[dict[str, np.ndarray]]:
    """The 500 held-out scenes with their boxes, in batches of 50."""
    return _batches("eval", 50)


def shapes_calibration() -> Iterator[dict[str, np.ndarray]]:
    """256 training scenes in batches of 32, without labels, for INT8 calibration."""
    images, _ = shapes_split("train")
    for start in range(0, 256, 32):
        yield {"images": images[start : start + 32]}


def shapes_detections(
    output: np.ndarray, *, score: float = 0.001, iou: float = 0.5, limit: int = 100
) -> Detections:
    """One image's YOLOv5-layout rows ``(cells, 5 + classes)`` → its detections after NMS.

    A row's score is objectness x its best class score (the ``yolo`` stage's
    rule); rows under ``score`` are dropped, then per-class greedy NMS drops
    a box overlapping a better one of its class by IoU > ``iou``.

    >>> rows = np.array([[10, 10, 8, 8, 0.9, 0.1, 0.8], [11, 10, 8, 8, 0.6, 0.1, 0.9],
    ...                  [40, 40, 8, 8, 0.9, 0.7, 0.1]])
    >>> found = shapes_detections(rows)
    >>> found.boxes.tolist(), found.classes.tolist()
    ([[6.0, 6.0, 14.0, 14.0], [36.0, 36.0, 44.0, 44.0]], [1, 0])
    """
    rows = np.asarray(output, np.float32)
    class_scores = rows[:, 4:5] * rows[:, 5:]
    classes = class_scores.argmax(1)
    scores = class_scores.max(1)
    kept = np.flatnonzero(scores >= score)
    centre, extent = rows[kept, :2], rows[kept, 2:4] / 2
    boxes = np.concatenate([centre - extent, centre + extent], 1)
    order = _nms(boxes, scores[kept], classes[kept], iou, limit)
    return Detections(boxes[order], scores[kept][order], classes[kept][order])


def _nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, limit: int
) -> np.ndarray:
    """Indices greedy class-aware NMS keeps, best first (the pipeline's ``nms``, which
    ``fogline.examples`` may not import; a test holds the two to the same answers)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[order].astype(np.float64).T
    area = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    group = classes[order]
    keep: list[int] = []
    rest = np.arange(len(order))
    while rest.size and len(keep) < limit:
        i, rest = rest[0], rest[1:]
        keep.append(int(i))
        w = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        h = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = w * h
        rest = rest[(inter <= iou * (area[i] + area[rest] - inter)) | (group[rest] != group[i])]
    return order[np.asarray(keep, np.intp)]


def shapes_map50(found: Sequence[Detections], labels: Sequence[np.ndarray]) -> float:
    """COCO's mAP@0.5 of ``found`` against ``labels`` (one entry per image), from pycocotools.

    AP is the 101-point interpolated area under the precision-recall curve at
    IoU 0.5, up to 100 detections per image, averaged over the classes that
    have ground truth: the figure YOLO papers and tools call mAP@0.5.

    >>> truth = [np.array([[1, 10, 10, 30, 40]], np.float32)]
    >>> exact = Detections(np.array([[10.0, 10, 30, 40]]), np.array([0.9]), np.array([1]))
    >>> round(shapes_map50([exact], truth), 6)
    1.0
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise DataError("mAP needs pycocotools: pip install 'fogline[examples]'") from exc
    if len(found) != len(labels):
        raise DataError(f"{len(found)} images of detections but {len(labels)} of labels")
    truth: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for image, (detections, boxes) in enumerate(zip(found, labels, strict=True)):
        for row in np.asarray(boxes, np.float64).reshape(-1, 5):
            x, y, w, h = row[1], row[2], row[3] - row[1], row[4] - row[2]
            truth.append(
                {"id": len(truth) + 1, "image_id": image, "category_id": int(row[0]),
                 "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            )  # fmt: skip
        for (x1, y1, x2, y2), s, c in zip(*detections, strict=True):
            results.append(
                {"image_id": image, "category_id": int(c), "score": float(s),
                 "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]}
            )  # fmt: skip
    if not truth or not results:
        return 0.0
    ground = COCO()
    ground.dataset = {
        "images": [{"id": i} for i in range(len(labels))],
        "annotations": truth,
        "categories": [{"id": c} for c in range(len(SHAPES_LABELS))],
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        ground.createIndex()
        evaluation = COCOeval(ground, ground.loadRes(results), "bbox")
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.params.maxDets = [100]
        evaluation.params.areaRng = [[0.0, 1e10]]
        evaluation.params.areaRngLbl = ["all"]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][0, :, :, 0, 0]  # recall points x classes
    present = precision[0] > -1  # -1: a class with no ground truth
    return float(precision[:, present].mean()) if present.any() else 0.0
