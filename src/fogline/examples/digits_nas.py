"""The digits family for the architecture search (needs ``pip install 'fogline[train,examples]'``).

``fogline optimize --nas fogline.examples.digits_nas:family`` searches
networks shaped like the bundled :class:`~fogline.examples.digits_torch.DigitsNet`
over four knobs: ``width`` (channels of the first convolution; the others
have twice as many, the hidden layer four times), ``depth`` (convolutions
before the pooling step), ``kernel`` (their size) and ``resolution`` (the
side of the input image, resized from the 8x8 scans). The bundled model is
the point ``width=32, depth=2, kernel=3, resolution=8`` of this space.

>>> family.metric, family.input_names, sorted(family.space)
('accuracy', ('pixels',), ['depth', 'kernel', 'resolution', 'width'])
>>> from fogline.examples.digits_torch import DigitsNet
>>> net = family.build({"width": 32, "depth": 2, "kernel": 3, "resolution": 8})
>>> [p.shape for p in net.parameters()] == [p.shape for p in DigitsNet().parameters()]
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fogline.data import Dataset
from fogline.errors import DataError
from fogline.model import Engine

#: The knobs of one network: name → value.
Knobs = Mapping[str, int | float]


class FamilyNet(nn.Module):
    """``depth`` convolutions, a 2x2 pooling step, and a two-layer classifier head."""

    def __init__(self, width: int, depth: int, kernel: int, resolution: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for index in range(depth):
            out = width if index == 0 else 2 * width
            layers += [nn.Conv2d(channels, out, kernel, padding=kernel // 2), nn.ReLU()]
            channels = out
        layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = resolution // 2
        hidden = 4 * width
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(pixels))
        return logits


def resize(pixels: np.ndarray, side: int) -> np.ndarray:
    """``pixels`` [N, 1, H, W] resized to ``side`` x ``side`` (bilinear, antialiased when shrinking).

    >>> resize(np.ones((2, 1, 8, 8), np.float32), 6).shape
    (2, 1, 6, 6)
    """
    if pixels.shape[-2:] == (side, side):
        return pixels
    out = nn.functional.interpolate(
        torch.from_numpy(np.ascontiguousarray(pixels)),
        size=(side, side),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


class DigitsFamily:
    """DigitsNet-shaped networks: trained like ``examples/digits/train.py`` (Adam, batch 64)."""

    space: Mapping[str, tuple[int, ...]] = {
        "width": (8, 16, 24, 32),
        "depth": (1, 2),
        "kernel": (3, 5),
        "resolution": (6, 8),
    }
    metric = "accuracy"
    input_names = ("pixels",)
    output_names = ("logits",)
    learning_rate = 2e-3

    def build(self, knobs: Knobs) -> FamilyNet:
        return FamilyNet(
            int(knobs["width"]), int(knobs["depth"]), int(knobs["kernel"]), int(knobs["resolution"])
        )

    def example_input(self, knobs: Knobs) -> torch.Tensor:
        side = int(knobs["resolution"])
        return torch.zeros(2, 1, side, side)

    def prepare(self, data: Dataset, knobs: Knobs) -> Dataset:
        side = int(knobs["resolution"])
        batches = tuple({"pixels": resize(b["pixels"], side)} for b in data.batches)
        return Dataset(data.source, batches, data.labels)

    def fit(
        self, model: nn.Module, train: Dataset, knobs: Knobs, *, epochs: int, seed: int
    ) -> None:
        if train.labels is None:
            raise DataError(f"{train.source}: the digits family trains on labelled data")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # networks this small train faster without a second thread
        try:
            self._fit(model, train, knobs, epochs, seed)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, model: nn.Module, train: Dataset, knobs: Knobs, epochs: int, seed: int) -> None:
        assert train.labels is not None
        torch.manual_seed(seed)
        x = torch.from_numpy(resize(train.array("pixels"), int(knobs["resolution"])))
        y = torch.from_numpy(train.labels.astype(np.int64))
        optimizer = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
        for _ in range(epochs):
            model.train()
            for idx in torch.randperm(len(y)).split(64):  # type: ignore[no-untyped-call]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
        model.eval()

    def score(self, engine: Engine, data: Dataset, knobs: Knobs) -> float:
        if data.labels is None:
            raise DataError(f"{data.source}: scoring needs labelled data")
        pixels = resize(data.array("pixels"), int(knobs["resolution"]))
        logits = engine.run({"pixels": pixels})["logits"]
        return 100.0 * float(np.mean(logits.argmax(1) == data.labels))


#: ``fogline optimize --nas fogline.examples.digits_nas:family``
family = DigitsFamily()
