"""Train the tiny shapes detector and export it to ONNX.

Run with ``python examples/shapes/train.py`` (needs torch; nothing is
downloaded; about ten minutes on two busy CPU cores).

The detector is a single-scale, YOLO-style network: a 96x96 RGB input
(``images`` float32 [batch, 3, 96, 96], 0..1, the letterboxed frame) goes
through six small conv blocks down to a 12x12 grid (stride 8); each cell
predicts one box. The box decoding is part of the exported graph, so the
output ``detections`` float32 [batch, 144, 8] has the YOLOv5 layout:
``cx, cy, w, h`` in input pixels, objectness, then the three class scores
(square, circle, triangle), all already through the sigmoid. A detection's
score is objectness x class score.

Training scenes are drawn by ``make_data.scene`` at several frame sizes
(so the letterbox pads differently), half of them through a JPEG round
trip like a video frame, and letterboxed as the pipeline does. Held-out
scenes with another seed give the printed precision, recall and mAP@0.5.
Writes ``model.onnx`` beside this script; the committed model was made by
this script with its fixed seed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from make_data import LABELS, jpeg, letterbox, scene
from torch import nn

from fogline.model import load_engine, torch_to_onnx

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model.onnx"
SIZE = 96
STRIDE = 8
GRID = SIZE // STRIDE
ANCHOR = 24.0  # pixels: a cell's box is (2*sigmoid)^2 * ANCHOR, so 0..96
FRAMES = ((240, 320), (320, 240), (256, 256), (224, 400), (480, 640))
SEED = 0


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU()
    )


class Detector(nn.Module):
    """96x96 RGB → 12x12 cells, one box each, decoded to YOLOv5's [batch, 144, 5 + classes]."""

    def __init__(self, classes: int = len(LABELS)) -> None:
        super().__init__()
        self.body = nn.Sequential(
            block(3, 16, 2),  # 48
            block(16, 32, 2),  # 24
            block(32, 32, 1),
            block(32, 64, 2),  # 12
            block(64, 64, 1),
            block(64, 64, 1),
            block(64, 64, 1),
        )
        self.head = nn.Conv2d(64, 5 + classes, 1)
        ys, xs = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
        self.register_buffer("grid", torch.stack([xs, ys], -1).reshape(1, -1, 2).float())

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Boxes (cx, cy, w, h in pixels) and the objectness and class logits, per cell."""
        p = self.head(self.body(x)).flatten(2).transpose(1, 2)  # [batch, 144, 5 + classes]
        xy = (torch.sigmoid(p[..., :2]) * 2 - 0.5 + self.grid) * STRIDE
        wh = (torch.sigmoid(p[..., 2:4]) * 2) ** 2 * ANCHOR
        return torch.cat([xy, wh], -1), p[..., 4], p[..., 5:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, obj, cls = self.raw(x)
        return torch.cat([boxes, torch.sigmoid(obj)[..., None], torch.sigmoid(cls)], -1)


def make_set(count: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Letterboxed scenes (count, 96, 96, 3) uint8 and targets [(n, 5): class, x1, y1, x2, y2]."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, SIZE, SIZE, 3), np.uint8)
    targets = []
    for i in range(count):
        height, width = FRAMES[rng.integers(len(FRAMES))]
        image, boxes, classes = scene(rng, height, width)
        # Shapes scale with the frame, as a bigger camera frame shows the same scene bigger.
        if rng.random() < 0.5:
            image = jpeg(image, int(rng.integers(40, 95)))
        images[i], (sx, sy, tx, ty) = letterbox(image, (SIZE, SIZE))
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32) + np.array([tx, ty, tx, ty])
        targets.append(np.concatenate([classes[:, None], boxes], 1).astype(np.float32))
    return images, targets


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def assign(targets: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """YOLOv5-style: each box goes to its centre cell and the two neighbours nearest its centre."""
    rows: list[tuple[int, int, int, float, float, float, float]] = []
    for b, target in enumerate(targets):
        for cls, x1, y1, x2, y2 in target:
            cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
            gx, gy = int(cx), int(cy)
            cells = {(gx, gy)}
            cells.add((gx - 1 if cx - gx < 0.5 else gx + 1, gy))
            cells.add((gx, gy - 1 if cy - gy < 0.5 else gy + 1))
            for x, y in cells:
                if 0 <= x < GRID and 0 <= y < GRID:
                    rows.append((b, y * GRID + x, int(cls), x1, y1, x2, y2))
    table = np.array(rows, np.float32).reshape(-1, 7)
    return (
        table[:, 0].astype(np.int64),
        table[:, 1].astype(np.int64),
        table[:, 2].astype(np.int64),
        table[:, 3:],
    )


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of boxes a (cx, cy, w, h) and b (x1, y1, x2, y2), pairwise by row."""
    a = torch.cat([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], 1)
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(1)
    iou = inter / union.clamp(min=1e-6)
    return iou - (hull - union) / hull.clamp(min=1e-6)


def loss_fn(model: Detector, x: torch.Tensor, targets: list[np.ndarray]) -> torch.Tensor:
    boxes, obj, cls = model.raw(x)
    b, cell, label, truth = (torch.from_numpy(a) for a in assign(targets))
    bce = nn.functional.binary_cross_entropy_with_logits
    objective = torch.zeros_like(obj)
    objective[b, cell] = 1.0
    lobj = bce(obj, objective)
    if len(b) == 0:
        return lobj
    lbox = (1 - giou(boxes[b, cell], truth)).mean()
    lcls = bce(cls[b, cell], nn.functional.one_hot(label, len(LABELS)).float())
    return 2.0 * lbox + 4.0 * lobj + lcls


def fit(images: np.ndarray, targets: list[np.ndarray], epochs: int) -> Detector:
    torch.manual_seed(SEED)
    model = Detector()
    steps = epochs * ((len(images) + 63) // 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    x = to_tensor(images)
    for epoch in range(epochs):
        model.train()
        total, start = 0.0, time.monotonic()
        for idx in torch.randperm(len(x)).split(64):
            batch, boxes = x[idx], [targets[i].copy() for i in idx.tolist()]
            if torch.rand(()) < 0.5:  # mirror the batch: every class stays itself
                batch = batch.flip(3)
                for t in boxes:
                    t[:, [1, 3]] = SIZE - t[:, [3, 1]]
            optimizer.zero_grad()
            loss = loss_fn(model, batch, boxes)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        print(
            f"  epoch {epoch + 1:2d}/{epochs}: loss {total / len(x):.4f} "
            f"({time.monotonic() - start:.0f} s)",
            flush=True,
        )
    return model.eval()


# --- evaluation, on the exported model's output (numpy) -----------------------------------------


def decode(output: np.ndarray, score: float, iou: float = 0.45) -> np.ndarray:
    """One image's [144, 8] output → (k, 6): x1, y1, x2, y2, score, class; class-aware NMS."""
    scores = output[:, 4:5] * output[:, 5:]
    cls, conf = scores.argmax(1), scores.max(1)
    keep = conf >= score
    xy, wh = output[keep, :2], output[keep, 2:4]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1)
    cls, conf = cls[keep], conf[keep]
    out = []
    for c in np.unique(cls):
        mine = np.flatnonzero(cls == c)
        mine = mine[np.argsort(-conf[mine])]
        while mine.size:
            best, mine = mine[0], mine[1:]
            out.append([*boxes[best], conf[best], c])
            mine = mine[iou_matrix(boxes[best][None], boxes[mine])[0] < iou]
    return np.array(out, np.float32).reshape(-1, 6)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def match(dets: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Which detections (best first) hit a not-yet-matched box of their class at IoU ≥ 0.5."""
    hit = np.zeros(len(dets), bool)
    used = np.zeros(len(target), bool)
    ious = iou_matrix(dets[:, :4], target[:, 1:]) if len(target) else np.zeros((len(dets), 0))
    for i in np.argsort(-dets[:, 4]):
        ok = (target[:, 0] == dets[i, 5]) & ~used & (ious[i] >= 0.5)
        if ok.any():
            j = np.flatnonzero(ok)[ious[i, ok].argmax()]
            used[j] = hit[i] = True
    return hit


def evaluate(outputs: np.ndarray, targets: list[np.ndarray], score: float) -> dict[str, float]:
    """Precision and recall at ``score``, and mAP@0.5 over all scores."""
    truths = sum(len(t) for t in targets)
    dets = [decode(o, score) for o in outputs]
    hits = np.concatenate([match(d, t) for d, t in zip(dets, targets, strict=True)])
    aps = []
    all_dets = [decode(o, 0.01) for o in outputs]
    for c in range(len(LABELS)):
        conf, hit = [], []
        for d, t in zip(all_dets, targets, strict=True):
            mine = d[d[:, 5] == c]
            conf.append(mine[:, 4])
            hit.append(match(mine, t[t[:, 0] == c]))
        order = np.argsort(-np.concatenate(conf))
        tp = np.concatenate(hit)[order]
        n = sum(int((t[:, 0] == c).sum()) for t in targets)
        recall = np.cumsum(tp) / max(n, 1)
        precision = np.cumsum(tp) / np.arange(1, len(tp) + 1)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        aps.append(float(np.sum(np.diff(np.concatenate([[0], recall])) * envelope)))
    return {
        "precision": float(hits.mean()) if hits.size else 0.0,
        "recall": float(hits.sum() / truths),
        "mAP50": float(np.mean(aps)),
        **{f"AP50 {label}": ap for label, ap in zip(LABELS, aps, strict=True)},
    }


def main(epochs: int = 10, train_count: int = 6000, eval_count: int = 500) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    start = time.monotonic()
    images, targets = make_set(train_count, seed=SEED)
    print(f"drew {train_count} training scenes in {time.monotonic() - start:.0f} s; training")
    model = fit(images, targets, epochs)
    torch_to_onnx(
        model,
        torch.zeros(2, 3, SIZE, SIZE),
        MODEL,
        input_names=["images"],
        output_names=["detections"],
    )
    engine = load_engine(MODEL)
    print(f"wrote {MODEL} ({MODEL.stat().st_size} bytes): {engine.signature}")
    held, truth = make_set(eval_count, seed=12345)
    outputs = engine.run({"images": to_tensor(held).numpy()})["detections"]
    figures = evaluate(outputs, truth, score=0.4)
    print(
        f"held-out ({eval_count} scenes, {sum(len(t) for t in truth)} objects), score 0.4, "
        "IoU 0.5: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
    )
    print(f"total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
