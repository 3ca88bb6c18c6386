"""Draw synthetic scenes of squares, circles and triangles, with their ground-truth boxes.

Run with ``python examples/shapes/make_data.py`` (numpy and opencv only). It
writes the demo video beside this script:

* ``scenes.avi`` — 10 s at 10 fps, 320x240, MJPG: shapes drifting and
  bouncing over a noisy, gradient background;
* ``scenes.json`` — the ground truth of every frame:
  ``{"labels": [...], "frames": [[{"label", "box": [x1, y1, x2, y2]}, ...], ...]}``
  in frame pixels.

``train.py`` imports :func:`scene` and :func:`letterbox` from here to make its
training and held-out sets, so the scenes it learns from are drawn the same
way as the video.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LABELS = ("square", "circle", "triangle")
HERE = Path(__file__).resolve().parent
VIDEO = HERE / "scenes.avi"
TRUTH = HERE / "scenes.json"
FILL = 114  # letterbox padding grey
# Centre-to-corner distance of each shape, in units of half its size.
_REACH = {"circle": 1.0, "square": float(np.sqrt(2)), "triangle": 1.25}


@dataclass(frozen=True)
class Shape:
    """One shape: class index, centre and size in pixels, rotation in degrees, RGB colour."""

    kind: int
    cx: float
    cy: float
    size: float
    angle: float
    colour: tuple[int, int, int]

    def outline(self) -> np.ndarray:
        """The polygon (k, 2) float of the shape (a circle as 48 points)."""
        if LABELS[self.kind] == "circle":
            turns = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        elif LABELS[self.kind] == "square":
            turns = np.deg2rad(45.0) + np.arange(4) * np.pi / 2
        else:
            turns = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        # Vertices on a circle: a square of side `size`, a circle of diameter `size`, and a
        # triangle a little larger than inscribed so that its area is not much smaller.
        radius = self.size / 2 * _REACH[LABELS[self.kind]]
        turns = turns + np.deg2rad(self.angle)
        return np.stack(
            [self.cx + radius * np.cos(turns), self.cy + radius * np.sin(turns)], axis=1
        )

    def box(self) -> np.ndarray:
        points = self.outline()
        return np.concatenate([points.min(axis=0), points.max(axis=0)])

    def draw(self, image: np.ndarray) -> None:
        points = np.round(self.outline() * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(image, [points], self.colour, lineType=cv2.LINE_AA, shift=4)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A two-colour gradient with a few faint clutter strokes (float32 RGB, 0..255)."""
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    direction = rng.uniform(0, 2 * np.pi)
    xs = np.float32(np.cos(direction)) * np.arange(width, dtype=np.float32) / width
    ys = np.float32(np.sin(direction)) * np.arange(height, dtype=np.float32) / height
    ramp = (ys[:, None] + xs[None, :] + 1) / 2
    image = a.astype(np.float32) + (b - a).astype(np.float32) * ramp[..., None]
    for _ in range(rng.integers(0, 4)):
        start = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.line(image, start, end, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    return image


def _contrasting(rng: np.random.Generator, near: np.ndarray) -> tuple[int, int, int]:
    for _ in range(100):
        colour = rng.integers(0, 256, 3)
        if np.abs(colour - near).sum() > 150:
            break
    return (int(colour[0]), int(colour[1]), int(colour[2]))


def random_shapes(
    rng: np.random.Generator,
    height: int,
    width: int,
    image: np.ndarray,
    count: int,
    sizes: tuple[float, float] = (24.0, 80.0),
) -> list[Shape]:
    """Up to ``count`` shapes that keep clear of each other and of the border."""
    shapes: list[Shape] = []
    for _ in range(count * 20):
        if len(shapes) == count:
            break
        size = rng.uniform(*sizes)
        margin = size * 0.65 + 2
        if 2 * margin >= min(height, width):
            continue
        cx, cy = rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)
        if any(np.hypot(cx - s.cx, cy - s.cy) < 0.7 * (size + s.size) + 4 for s in shapes):
            continue
        kind = int(rng.integers(len(LABELS)))
        local = image[int(cy), int(cx)]
        angle = rng.uniform(-20, 20) if kind == 0 else rng.uniform(-180, 180)
        shapes.append(Shape(kind, cx, cy, size, angle, _contrasting(rng, local)))
    return shapes


def render(
    rng: np.random.Generator, base: np.ndarray, shapes: list[Shape], noise: float
) -> np.ndarray:
    image = base.copy()
    for shape in shapes:
        shape.draw(image)
    if noise:
        image += np.float32(noise) * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def scene(
    rng: np.random.Generator, height: int = 240, width: int = 320, count: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One still scene: RGB uint8 (height, width, 3), boxes (n, 4) x1y1x2y2, classes (n,)."""
    base = background(rng, height, width)
    count = int(rng.integers(1, 5)) if count is None else count
    shapes = random_shapes(rng, height, width, base, count)
    image = render(rng, base, shapes, noise=rng.uniform(2, 14))
    boxes = np.array([s.box() for s in shapes], np.float32).reshape(-1, 4)
    return image, boxes, np.array([s.kind for s in shapes], np.int64)


def letterbox(image: np.ndarray, size: tuple[int, int] = (96, 96)) -> tuple[np.ndarray, tuple]:
    """Fit ``image`` into ``size`` (height, width) keeping its aspect, padded with grey 114.

    Returns the image and ``(sx, sy, tx, ty)``: model_x = x*sx + tx, model_y = y*sy + ty.
    Scale ``s = min(H/h, W/w)``, resized to ``round(w*s) x round(h*s)`` (bilinear), placed
    at ``((W - nw)//2, (H - nh)//2)``.
    """
    h, w = image.shape[:2]
    out_h, out_w = size
    s = min(out_h / h, out_w / w)
    nw, nh = round(w * s), round(h * s)
    left, top = (out_w - nw) // 2, (out_h - nh) // 2
    out = np.full((out_h, out_w, 3), FILL, np.uint8)
    out[top : top + nh, left : left + nw] = cv2.resize(
        image, (nw, nh), interpolation=cv2.INTER_LINEAR
    )
    return out, (nw / w, nh / h, float(left), float(top))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The image after a JPEG round trip, as a video frame goes through MJPG."""
    ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def write_video(seed: int = 7, seconds: float = 10.0, fps: float = 10.0) -> tuple[int, int]:
    """Write ``scenes.avi`` and ``scenes.json``; return (frames, objects)."""
    rng = np.random.default_rng(seed)
    height, width = 240, 320
    base = background(rng, height, width)
    # One shape per quadrant (so they never occlude each other): square, circle, triangle and
    # one more square, 30..56 px, drifting, bouncing off their quadrant's walls and turning.
    cells = [(x, y, width // 2, height // 2) for y in (0, height // 2) for x in (0, width // 2)]
    shapes = []
    for i, (x, y, w, h) in enumerate(cells):
        one = random_shapes(rng, h, w, base[y : y + h, x : x + w], 1, sizes=(30.0, 56.0))[0]
        angle = rng.uniform(-20, 20) if i % 3 == 0 else one.angle
        shapes.append(Shape(i % 3, one.cx + x, one.cy + y, one.size, angle, one.colour))
    velocity = rng.uniform(-8, 8, (len(shapes), 2))  # pixels per frame
    spin = rng.uniform(-8, 8, len(shapes))  # degrees per frame
    writer = cv2.VideoWriter(str(VIDEO), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 70)
    frames: list[list[dict[str, object]]] = []
    try:
        for _ in range(int(seconds * fps)):
            image = render(rng, base, shapes, noise=3.0)
            writer.write(np.ascontiguousarray(image[..., ::-1]))
            frames.append(
                [
                    {"label": LABELS[s.kind], "box": [round(float(v), 1) for v in s.box()]}
                    for s in shapes
                ]
            )
            shapes = _move(shapes, cells, velocity, spin)
    finally:
        writer.release()
    TRUTH.write_text(json.dumps({"labels": list(LABELS), "frames": frames}) + "\n")
    return len(frames), sum(len(f) for f in frames)


def _move(
    shapes: list[Shape],
    cells: list[tuple[int, int, int, int]],
    velocity: np.ndarray,
    spin: np.ndarray,
) -> list[Shape]:
    """Advance each shape one frame inside its cell, bouncing (``velocity`` updated in place)."""
    moved = []
    for i, (s, (x, y, w, h)) in enumerate(zip(shapes, cells, strict=True)):
        cx, cy = s.cx + velocity[i, 0], s.cy + velocity[i, 1]
        reach = s.size * 0.65
        if not x + reach <= cx <= x + w - reach:
            velocity[i, 0] *= -1
            cx = float(np.clip(cx, x + reach, x + w - reach))
        if not y + reach <= cy <= y + h - reach:
            velocity[i, 1] *= -1
            cy = float(np.clip(cy, y + reach, y + h - reach))
        angle = s.angle if s.kind == 0 else s.angle + spin[i]
        moved.append(Shape(s.kind, cx, cy, s.size, angle, s.colour))
    return moved


def main() -> None:
    frames, objects = write_video()
    print(
        f"wrote {VIDEO} ({VIDEO.stat().st_size} bytes, {frames} frames 320x240 at 10 fps, MJPG) "
        f"and {TRUTH.name} ({objects} ground-truth boxes)"
    )


if __name__ == "__main__":
    main()
