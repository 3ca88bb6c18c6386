"""Object detection: decode YOLO and SSD outputs, and non-maximum suppression.

Decoders write ``result["detections"]``: ``[{label, score, box: [x1, y1, x2,
y2]}]`` in source-image pixels, best first. Boxes come out of the model in
its input's pixels; ``meta["geometry"]`` (set by resize, letterbox, crop)
maps them back, and ``meta["source_size"]`` clips them to the image.
All per-box work is vectorised; python only builds the final dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fogline.errors import ConfigError, ItemError
from fogline.model import Signature, TensorSpec
from fogline.pipeline._base import PostprocessSpec, Stage
from fogline.pipeline._item import Item
from fogline.pipeline.stages._common import (
    Fraction,
    Labels,
    PositiveInt,
    label_of,
    need,
    output_of,
    per_item,
    pick_output,
    to_source,
)


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou: float = 0.45,
    classes: np.ndarray | None = None,
    limit: int | None = None,
) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first.

    ``boxes`` is ``(N, 4)`` ``x1, y1, x2, y2``. A box is dropped when it
    overlaps a better kept box by IoU > ``iou``; with ``classes`` only boxes
    of the same class suppress each other (one pass does all classes).
    ``limit`` stops after that many boxes are kept.

    >>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
    >>> nms(boxes, np.array([0.9, 0.8, 0.7])).tolist()
    [0, 2]
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = np.asarray(boxes, np.float64)[order]
    group = None if classes is None else np.asarray(classes)[order]
    x1, y1, x2, y2 = (np.ascontiguousarray(c) for c in b.T)
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    keep: list[int] = []
    rest = np.arange(len(order))
    # One pass per kept box, each vectorised over the boxes still in the running.
    while rest.size and (limit is None or len(keep) < limit):
        i, rest = rest[0], rest[1:]
        keep.append(int(i))
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        union = area[i] + area[rest] - inter  # IoU <= iou without dividing by a 0 union
        apart = inter <= iou * union
        if group is not None:
            apart |= group[rest] != group[i]
        rest = rest[apart]
    return order[np.asarray(keep, np.intp)]


@dataclass(frozen=True, slots=True)
class _Decoded:
    """What every decoder ends with: boxes in model pixels, scores, class ids."""

    labels: tuple[str, ...] | None
    iou: float
    class_aware: bool
    limit: int

    def write(
        self,
        item: Item,
        boxes: np.ndarray,
        scores: np.ndarray,
        classes: np.ndarray,
        normalized: bool = False,
    ) -> Item:
        keep = nms(boxes, scores, self.iou, classes if self.class_aware else None, self.limit)
        boxes, decimals = boxes[keep], 2
        if normalized:
            size = item.meta.get("model_size") or item.meta.get("source_size")
            if size is None:  # nothing says how big the input was: stay in [0, 1]
                boxes, decimals = np.clip(boxes, 0.0, 1.0), 6
            else:
                boxes = boxes * np.array([size[0], size[1], size[0], size[1]], np.float64)
        if decimals == 2:
            boxes = to_source(boxes, item.meta)
        item.result["detections"] = [
            {"label": label_of(self.labels, c), "score": round(s, 6), "box": box}
            for c, s, box in zip(
                classes[keep].tolist(),
                scores[keep].tolist(),
                np.round(boxes, decimals).tolist(),
                strict=True,
            )
        ]
        return item


def _rank(spec: TensorSpec, rank: int, what: str) -> tuple[int | None, ...]:
    dims = per_item(spec)
    if len(dims) != rank:
        raise ConfigError(
            f"{what}: output {spec.name!r} has shape {spec.describe_shape()}; "
            f"expected [batch] + {rank} dims"
        )
    return dims


class YoloSpec(PostprocessSpec):
    """Decode YOLO boxes: ``v5`` rows ``(N, 5 + C)`` = cx, cy, w, h, objectness, class scores;
    ``v8`` columns ``(4 + C, N)`` = cx, cy, w, h, class scores (no objectness).

    Coordinates are in model-input pixels and scores are probabilities (as
    exported); a box's score is its best class score (times objectness for
    v5). Boxes under ``score`` are dropped, then NMS with ``iou`` (per
    class unless ``class_aware: false``) keeps at most ``max_detections``.

    >>> from fogline.model import TensorSpec
    >>> sig = Signature((), (TensorSpec("out", "float32", (1, 1, 7)),))
    >>> stage = YoloSpec(type="yolo", format="v5", labels=["a", "b"]).build(sig)
    >>> rows = np.array([[50, 40, 20, 10, 0.9, 0.1, 1.0]], np.float32)
    >>> stage(Item("cam", 0, 0.0, None, outputs={"out": rows})).result["detections"]
    [{'label': 'b', 'score': 0.9, 'box': [40.0, 35.0, 60.0, 45.0]}]
    """

    type: Literal["yolo"]
    output: str | None = None
    format: Literal["v5", "v8"] = "v8"
    labels: Labels = None
    score: Fraction = 0.25
    iou: Fraction = 0.45
    max_detections: PositiveInt = 100
    class_aware: bool = True

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        spec = pick_output(outputs, self.output, "yolo")
        dims = _rank(spec, 2, "yolo")
        width = dims[1] if self.format == "v5" else dims[0]
        fixed = 5 if self.format == "v5" else 4
        if width is not None:
            if width <= fixed:
                raise ConfigError(
                    f"yolo {self.format}: output {spec.name!r} {spec.describe_shape()} has no "
                    f"class scores; is it the other format?"
                )
            if self.labels is not None and len(self.labels) != width - fixed:
                raise ConfigError(
                    f"yolo {self.format}: output {spec.name!r} {spec.describe_shape()} scores "
                    f"{width - fixed} classes, but {len(self.labels)} labels are given"
                )
        return produced | {"detections"}

    def build(self, outputs: Signature) -> Stage:
        name = pick_output(outputs, self.output, "yolo").name
        decoded = _Decoded(self.labels, self.iou, self.class_aware, self.max_detections)
        return _Yolo(name, self.format == "v8", self.score, decoded)


@dataclass(frozen=True, slots=True)
class _Yolo:
    name: str
    v8: bool
    score: float
    decoded: _Decoded

    def __call__(self, item: Item) -> Item:
        out = output_of(item, self.name, "yolo")
        fixed = 4 if self.v8 else 5
        if out.ndim != 2 or out.shape[0 if self.v8 else 1] <= fixed:
            raise ItemError(
                f"yolo: output {self.name!r} has shape {list(out.shape)}", item.position
            )
        if self.v8:
            class_scores = out[4:]
            best = class_scores.max(axis=0)
            rows = np.flatnonzero(best >= self.score)
            classes = class_scores[:, rows].argmax(axis=0)
            scores = best[rows]
            centre = out[:4, rows].T
        else:
            cand = out[out[:, 4] >= self.score]  # a score is at most its objectness
            class_scores = cand[:, 5:] * cand[:, 4:5]
            classes = class_scores.argmax(axis=1)
            scores = class_scores[np.arange(len(cand)), classes]
            ok = scores >= self.score
            classes, scores, centre = classes[ok], scores[ok], cand[ok, :4]
        centre = centre.astype(np.float64)
        half = centre[:, 2:4] / 2
        boxes = np.concatenate((centre[:, :2] - half, centre[:, :2] + half), axis=1)
        return self.decoded.write(item, boxes, scores.astype(np.float64), classes)


class SsdSpec(PostprocessSpec):
    """Decode SSD-style outputs in the TensorFlow object-detection convention.

    ``boxes`` is ``(N, 4)`` ``[y1, x1, y2, x2]``, normalized to [0, 1] of
    the model input (``normalized: true``) or in its pixels; ``scores`` is
    ``(N,)`` (then ``classes`` ``(N,)`` gives the class ids, default 0) or
    ``(N, C)`` (the best class wins). Normalized boxes need the input size,
    which resize / letterbox / crop record; without one they stay in [0, 1].
    """

    type: Literal["ssd"]
    boxes: str
    scores: str
    classes: str | None = None
    labels: Labels = None
    normalized: bool = True
    score: Fraction = 0.5
    iou: Fraction = 0.45
    max_detections: PositiveInt = 100
    class_aware: bool = True

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        box_dims = _rank(pick_output(outputs, self.boxes, "ssd boxes"), 2, "ssd boxes")
        if box_dims[1] not in (None, 4):
            raise ConfigError(f"ssd boxes: output {self.boxes!r} must end in 4 coordinates")
        score_spec = pick_output(outputs, self.scores, "ssd scores")
        if len(per_item(score_spec)) not in (1, 2):
            raise ConfigError(
                f"ssd scores: output {self.scores!r} has shape {score_spec.describe_shape()}; "
                "expected [batch, N] or [batch, N, classes]"
            )
        if self.classes is not None:
            _rank(pick_output(outputs, self.classes, "ssd classes"), 1, "ssd classes")
        return produced | {"detections"}

    def build(self, outputs: Signature) -> Stage:
        decoded = _Decoded(self.labels, self.iou, self.class_aware, self.max_detections)
        return _Ssd(self.boxes, self.scores, self.classes, self.normalized, self.score, decoded)


@dataclass(frozen=True, slots=True)
class _Ssd:
    boxes: str
    scores: str
    classes: str | None
    normalized: bool
    score: float
    decoded: _Decoded

    def __call__(self, item: Item) -> Item:
        boxes = output_of(item, self.boxes, "ssd")
        scores = output_of(item, self.scores, "ssd")
        n = boxes.shape[0] if boxes.ndim == 2 else -1
        if (
            boxes.ndim != 2
            or boxes.shape[1] != 4
            or scores.ndim not in (1, 2)
            or (scores.shape[0] != n)
        ):
            raise ItemError(
                f"ssd: boxes {list(boxes.shape)} and scores {list(scores.shape)} do not "
                "fit (N, 4) and (N,) or (N, C)",
                item.position,
            )
        if scores.ndim == 2:
            classes = scores.argmax(axis=1)
            scores = scores[np.arange(n), classes]
        elif self.classes is not None:
            classes = output_of(item, self.classes, "ssd").reshape(-1)
            if classes.shape[0] != n:
                raise ItemError(f"ssd: {n} boxes but {classes.shape[0]} classes", item.position)
            classes = classes.astype(np.int64)
        else:
            classes = np.zeros(n, np.int64)
        ok = scores >= self.score
        xyxy = boxes[ok][:, [1, 0, 3, 2]].astype(np.float64)
        return self.decoded.write(
            item, xyxy, scores[ok].astype(np.float64), classes[ok], self.normalized
        )


class NmsSpec(PostprocessSpec):
    """Non-maximum suppression on ``result["detections"]`` (per label unless ``class_aware: false``).

    >>> stage = NmsSpec(type="nms", iou=0.5).build(Signature((), ()))
    >>> item = Item("cam", 0, 0.0, None)
    >>> item.result["detections"] = [{"label": "a", "score": 0.9, "box": [0, 0, 10, 10]},
    ...                              {"label": "a", "score": 0.8, "box": [0, 0, 10, 9]}]
    >>> [d["score"] for d in stage(item).result["detections"]]
    [0.9]
    """

    type: Literal["nms"]
    iou: Fraction = 0.45
    class_aware: bool = True

    def check(self, outputs: Signature, produced: frozenset[str]) -> frozenset[str]:
        need(produced, "detections", "nms")
        return produced

    def build(self, outputs: Signature) -> Stage:
        return _Nms(self.iou, self.class_aware)


@dataclass(frozen=True, slots=True)
class _Nms:
    iou: float
    class_aware: bool

    def __call__(self, item: Item) -> Item:
        found: Any = item.result.get("detections")
        if not isinstance(found, list):
            raise ItemError("nms: result has no list of detections", item.position)
        if len(found) < 2:
            return item
        try:
            boxes = np.array([d["box"] for d in found], np.float64).reshape(len(found), 4)
            scores = np.array([d["score"] for d in found], np.float64)
            classes = None
            if self.class_aware:
                _, classes = np.unique([str(d["label"]) for d in found], return_inverse=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise ItemError(f"nms: malformed detection ({exc})", item.position) from None
        item.result["detections"] = [found[i] for i in nms(boxes, scores, self.iou, classes)]
        return item
