"""PyTorch side of the shapes detector (needs ``pip install 'fogline[train,examples]'``).

:class:`ShapesNet` is a single-scale, anchor-free, YOLO-style detector for
the bundled shapes scenes (:func:`fogline.examples.shapes_split`): strided
convolution blocks down to a grid of stride 8, each cell predicting one box
(its centre offset and size), an objectness and the class scores. The box
decoding is part of the graph, so the exported model's output is YOLOv5's
layout, which fogline's ``yolo`` stage and :func:`~fogline.examples.shapes_detections`
both read.

Its knobs are the width (channels of the first block; each stride-2 block
doubles them), the depth (blocks after the stride-2 block at strides 4 and 8),
the kernel size and the input resolution (the 64x64 scenes are resized to
it). :data:`BASELINE` is the committed model's, and :data:`family` is the
architecture search's view of it: ``fogline optimize --nas
fogline.examples.shapes_torch:family``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fogline.data import Dataset
from fogline.errors import DataError
from fogline.examples._shapes import (
    SHAPES_LABELS,
    SHAPES_SIZE,
    Detections,
    shapes_detections,
    shapes_map50,
)
from fogline.model import Engine

WEIGHTS = Path(__file__).parent / "shapes" / "weights.pt"
#: The committed detector's knobs.
BASELINE: dict[str, int] = {"width": 16, "depth": 2, "kernel": 3, "resolution": 64}
STRIDE = 8
#: A box's side is ``(2 * sigmoid)^2 * ANCHOR`` scene pixels: 0..64, 16 when the logit is 0.
ANCHOR = 16.0


def _block(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.SiLU(),
    )


class ShapesNet(nn.Module):
    """Grey ``resolution``² scene → ``(resolution / 8)²`` cells, one box each, YOLOv5 rows."""

    grid: torch.Tensor

    def __init__(
        self,
        width: int = BASELINE["width"],
        depth: int = BASELINE["depth"],
        kernel: int = BASELINE["kernel"],
        resolution: int = BASELINE["resolution"],
        classes: int = len(SHAPES_LABELS),
    ) -> None:
        super().__init__()
        if resolution % STRIDE:
            raise ValueError(f"resolution must be a multiple of {STRIDE}, not {resolution}")
        layers = [_block(1, width, kernel, 2)]
        for channels in (2 * width, 4 * width):
            layers.append(_block(channels // 2, channels, kernel, 2))
            layers.extend(_block(channels, channels, kernel, 1) for _ in range(depth))
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(4 * width, 5 + classes, 1)
        self.resolution = resolution
        self.anchor = ANCHOR * resolution / SHAPES_SIZE
        cells = resolution // STRIDE
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys], -1).reshape(1, -1, 2).float())

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per cell: the box (cx, cy, w, h in input pixels), objectness and class logits."""
        p = self.head(self.body(x)).flatten(2).transpose(1, 2)  # [batch, cells, 5 + classes]
        xy = (torch.sigmoid(p[..., :2]) * 2 - 0.5 + self.grid) * STRIDE
        wh = (torch.sigmoid(p[..., 2:4]) * 2) ** 2 * self.anchor
        return torch.cat([xy, wh], -1), p[..., 4], p[..., 5:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, objectness, classes = self.raw(x)
        return torch.cat([boxes, torch.sigmoid(objectness)[..., None], torch.sigmoid(classes)], -1)


def detector() -> ShapesNet:
    """The bundled detector, with its trained weights."""
    model = ShapesNet()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval()


def resize(images: np.ndarray, resolution: int) -> torch.Tensor:
    """Scenes [n, 1, 64, 64] as a tensor at ``resolution`` (area-averaged, as a camera would bin)."""
    x = torch.from_numpy(np.array(images, np.float32))  # a copy: the splits are read-only
    if resolution == x.shape[-1]:
        return x
    return nn.functional.interpolate(x, size=(resolution, resolution), mode="area")


# --- training -------------------------------------------------------------------------------------


def _assign(
    targets: Sequence[np.ndarray], cells: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """YOLOv5-style: a box goes to its centre cell and the two neighbours nearest its centre."""
    rows: list[tuple[float, ...]] = []
    for b, target in enumerate(targets):
        for cls, x1, y1, x2, y2 in target:
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            gx, gy = min(int(cx), cells - 1), min(int(cy), cells - 1)
            chosen = {(gx, gy), (gx - 1 if cx - gx < 0.5 else gx + 1, gy)}
            chosen.add((gx, gy - 1 if cy - gy < 0.5 else gy + 1))
            for x, y in chosen:
                if 0 <= x < cells and 0 <= y < cells:
                    rows.append((b, y * cells + x, cls, x1, y1, x2, y2))
    table = torch.tensor(rows, dtype=torch.float32).reshape(-1, 7)
    return table[:, 0].long(), table[:, 1].long(), table[:, 2].long(), table[:, 3:]


def _giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of boxes ``a`` (cx, cy, w, h) and ``b`` (x1, y1, x2, y2), row by row."""
    a = torch.cat([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], 1)
    inter = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(1)
    return inter / union.clamp(min=1e-6) - (hull - union) / hull.clamp(min=1e-6)


def detection_loss(
    model: ShapesNet, x: torch.Tensor, targets: Sequence[np.ndarray]
) -> torch.Tensor:
    """GIoU on the assigned cells' boxes, BCE on every cell's objectness and their classes."""
    boxes, objectness, classes = model.raw(x)
    b, cell, label, truth = _assign(targets, model.resolution // STRIDE)
    bce = nn.functional.binary_cross_entropy_with_logits
    wanted = torch.zeros_like(objectness)
    wanted[b, cell] = 1.0
    loss = 4.0 * bce(objectness, wanted)
    if len(b):
        loss = loss + 2.0 * (1 - _giou(boxes[b, cell], truth)).mean()
        onehot = nn.functional.one_hot(label, classes.shape[-1]).float()
        loss = loss + bce(classes[b, cell], onehot)
    return loss


def train_detector(
    model: ShapesNet,
    images: np.ndarray,
    labels: Sequence[np.ndarray],
    *,
    epochs: int,
    seed: int = 0,
    lr: float = 3e-3,
    batch: int = 64,
    log: bool = False,
) -> ShapesNet:
    """Train in place: AdamW on a one-cycle schedule, mirrored batches at random; returns it."""
    generator = torch.Generator().manual_seed(seed)
    scale = model.resolution / SHAPES_SIZE
    x = resize(images, model.resolution)
    targets = [
        np.asarray(t, np.float32).reshape(-1, 5) * [1, scale, scale, scale, scale] for t in labels
    ]
    steps = max(1, epochs * math.ceil(len(x) / batch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    for epoch in range(epochs):
        model.train()
        total, start = 0.0, time.monotonic()
        order = torch.randperm(len(x), generator=generator)
        for idx in order.split(batch):  # type: ignore[no-untyped-call]
            chunk, boxes = x[idx], [targets[i].copy() for i in idx.tolist()]
            if torch.rand((), generator=generator) < 0.5:  # mirrored, every class stays itself
                chunk = chunk.flip(3)
                for t in boxes:
                    t[:, [1, 3]] = model.resolution - t[:, [3, 1]]
            optimizer.zero_grad()
            loss = detection_loss(model, chunk, boxes)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        if log:
            print(
                f"  epoch {epoch + 1:2d}/{epochs}: loss {total / len(x):.4f} "
                f"({time.monotonic() - start:.0f} s)",
                flush=True,
            )
    return model.eval()


# --- scoring --------------------------------------------------------------------------------------


def map50(outputs: np.ndarray, labels: Sequence[np.ndarray], resolution: int) -> float:
    """mAP@0.5 of detector outputs at ``resolution`` against labels in scene pixels."""
    back = SHAPES_SIZE / resolution
    found = []
    for rows in outputs:
        boxes, scores, classes = shapes_detections(rows)
        found.append(Detections(boxes * back, scores, classes))
    return shapes_map50(found, labels)


def engine_map50(
    engine: Engine, images: np.ndarray, labels: Sequence[np.ndarray], resolution: int
) -> float:
    """mAP@0.5 of an exported detector run through ``engine`` on scenes resized to ``resolution``."""
    name = engine.signature.inputs[0].name
    x = resize(images, resolution).numpy()
    outputs = np.concatenate(
        [next(iter(engine.run({name: x[i : i + 100]}).values())) for i in range(0, len(x), 100)]
    )
    return map50(outputs, labels, resolution)


def _labelled(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    if data.labels is None:
        raise DataError(f"{data.source}: the shapes family needs boxes (labels) with the images")
    name = next(iter(data.batches[0]))
    return data.array(name), data.labels


@dataclass(frozen=True)
class ShapesFamily:
    """The shapes detector as a :class:`~fogline.optimize.Family`: knobs → network, fit, mAP@0.5.

    >>> from fogline.optimize import Family
    >>> isinstance(family, Family), family.metric, ShapesFamily.baseline()
    (True, 'mAP@0.5', {'width': 16, 'depth': 2, 'kernel': 3, 'resolution': 64})
    """

    space: Mapping[str, Sequence[int | float]] = field(
        default_factory=lambda: {
            "width": (8, 12, 16),
            "depth": (0, 1, 2, 3),
            "kernel": (3, 5),
            "resolution": (32, 48, 64),
        }
    )
    metric: str = "mAP@0.5"
    input_names: tuple[str, ...] = ("images",)
    output_names: tuple[str, ...] = ("detections",)

    @staticmethod
    def baseline() -> dict[str, int]:
        """The committed detector's knobs."""
        return dict(BASELINE)

    def build(self, knobs: Mapping[str, int | float]) -> ShapesNet:
        """A new network for ``knobs`` (missing ones from :data:`BASELINE`); the caller seeds torch."""
        return ShapesNet(**{**BASELINE, **{k: int(v) for k, v in knobs.items()}})

    def example_input(self, knobs: Mapping[str, int | float]) -> torch.Tensor:
        """One grey scene at the candidate's resolution."""
        side = int(knobs.get("resolution", BASELINE["resolution"]))
        return torch.zeros(1, 1, side, side)

    def fit(
        self,
        model: Any,
        train: Dataset,
        knobs: Mapping[str, int | float],
        *,
        epochs: int,
        seed: int,
    ) -> None:
        """Train ``model`` on ``train``'s scenes resized to its resolution."""
        images, labels = _labelled(train)
        train_detector(model, images, list(labels), epochs=epochs, seed=seed)

    def prepare(self, data: Dataset, knobs: Mapping[str, int | float]) -> Dataset:
        """``data`` as the candidate takes it: its scenes resized to its resolution (labels kept)."""
        side = int(knobs.get("resolution", BASELINE["resolution"]))
        batches = tuple(
            {name: resize(array, side).numpy() for name, array in batch.items()}
            for batch in data.batches
        )
        return Dataset(data.source, batches, data.labels)

    def score(self, engine: Engine, data: Dataset, knobs: Mapping[str, int | float]) -> float:
        """mAP@0.5 of the exported candidate on ``data``, boxes mapped back to scene pixels."""
        images, labels = _labelled(data)
        side = int(knobs.get("resolution", BASELINE["resolution"]))
        return engine_map50(engine, images, list(labels), side)


#: ``fogline optimize --nas fogline.examples.shapes_torch:family``.
family = ShapesFamily()
