"""Two reference networks for the benchmarks, written here in plain PyTorch.

* ``mobilenet_v2()``: the MobileNetV2 layout (inverted residual blocks with
  depthwise 3x3 convolutions, ReLU6, width 1.0, 224x224 input, 1000 classes).
* ``yolo_style()``: a small single-scale-per-level detector in the YOLOv8
  manner: Conv-BN-SiLU blocks, C2f-like stages, an FPN-style neck and an
  anchor-free head whose class scores pass through a sigmoid.

Weights are random (the benchmarks measure speed and numerical agreement,
not accuracy); batch-norm statistics are set by running the network over
the calibration images once, so activations have realistic ranges.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(
    cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU6
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(),
    )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def mobilenet_v2(num_classes: int = 1000, width: float = 1.0) -> nn.Module:
    """MobileNetV2; ``width`` scales every block's channels (rounded to 8), as the paper's
    width multiplier does (1.0: the published layout)."""

    def channels(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    # (expansion, channels, repeats, first stride), the published MobileNetV2 table.
    table = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    layers: list[nn.Module] = [_conv_bn(3, channels(32), 3, 2)]
    cin = channels(32)
    for t, c, n, s in table:
        for i in range(n):
            layers.append(InvertedResidual(cin, channels(c), s if i == 0 else 1, t))
            cin = channels(c)
    layers.append(_conv_bn(cin, 1280, 1))
    return nn.Sequential(
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(1280, num_classes),
    )


def _cbs(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return _conv_bn(cin, cout, k, s, act=nn.SiLU)


class C2f(nn.Module):
    """Split, a chain of residual bottlenecks, concatenate every step, fuse."""

    def __init__(self, cin: int, cout: int, n: int = 1) -> None:
        super().__init__()
        self.hidden = cout // 2
        self.stem = _cbs(cin, 2 * self.hidden, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(_cbs(self.hidden, self.hidden), _cbs(self.hidden, self.hidden))
            for _ in range(n)
        )
        self.fuse = _cbs((2 + n) * self.hidden, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = list(self.stem(x).chunk(2, 1))
        for block in self.blocks:
            parts.append(parts[-1] + block(parts[-1]))
        return self.fuse(torch.cat(parts, 1))


class YoloStyle(nn.Module):
    """Backbone to strides 8/16/32, a top-down neck, and a decoupled head."""

    def __init__(self, num_classes: int = 80, width: int = 16) -> None:
        super().__init__()
        w = width
        self.num_classes = num_classes
        self.stem = nn.Sequential(_cbs(3, w, 3, 2), _cbs(w, 2 * w, 3, 2), C2f(2 * w, 2 * w))
        self.p3 = nn.Sequential(_cbs(2 * w, 4 * w, 3, 2), C2f(4 * w, 4 * w, 2))
        self.p4 = nn.Sequential(_cbs(4 * w, 8 * w, 3, 2), C2f(8 * w, 8 * w, 2))
        self.p5 = nn.Sequential(_cbs(8 * w, 16 * w, 3, 2), C2f(16 * w, 16 * w))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4 = C2f(24 * w, 8 * w)
        self.n3 = C2f(12 * w, 4 * w)
        self.box = nn.ModuleList(
            nn.Sequential(_cbs(c, 4 * w), nn.Conv2d(4 * w, 4, 1)) for c in (4 * w, 8 * w, 16 * w)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(_cbs(c, 4 * w), nn.Conv2d(4 * w, num_classes, 1))
            for c in (4 * w, 8 * w, 16 * w)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c3 = self.p3(self.stem(x))
        c4 = self.p4(c3)
        c5 = self.p5(c4)
        n4 = self.n4(torch.cat([self.up(c5), c4], 1))
        n3 = self.n3(torch.cat([self.up(n4), c3], 1))
        boxes, scores = [], []
        for level, feat in enumerate((n3, n4, c5)):
            boxes.append(self.box[level](feat).flatten(2))
            scores.append(self.cls[level](feat).flatten(2))
        # scores: [batch, anchors, classes] after a sigmoid, as YOLOv8 emits them.
        box = torch.cat(boxes, 2).transpose(1, 2)
        score = torch.cat(scores, 2).transpose(1, 2).sigmoid()
        return score, box


def yolo_style(num_classes: int = 80) -> nn.Module:
    return YoloStyle(num_classes)


def settle_batchnorm(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set batch-norm running statistics from ``images``, then switch to eval mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for chunk in images.split(8):
            model(chunk)
    return model.eval()


def photo_crops(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` random crops of the photographs bundled with scikit-image, NCHW, normalized."""
    import numpy as np
    from skimage import data, transform

    photos = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.immunohistochemistry(),
        data.hubble_deep_field(),
        data.colorwheel(),
    ]
    rng = np.random.default_rng(seed)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2]) + 1))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = transform.resize(
            photo[top : top + side, left : left + side], (size, size), anti_aliasing=True
        ).astype(np.float32)
        crops.append(((crop - mean) / std).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(crops))
