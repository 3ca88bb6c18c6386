"""PyTorch side of the digits example (needs ``pip install 'fogline[train]'``).

``teacher()`` rebuilds the bundled classifier from its committed weights;
``student()`` is a much smaller, untrained network to distill into. Both can
be named on the command line: ``--from-torch fogline.examples.digits_torch:teacher``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WEIGHTS = Path(__file__).parent / "digits" / "weights.pt"


class DigitsNet(nn.Module):
    """Two 3x3 convolutions, a pooling step, and a two-layer classifier head."""

    def __init__(self, width: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * width * 4 * 4, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.features(pixels))
        return logits


def teacher() -> DigitsNet:
    """The bundled digits classifier, with its trained weights."""
    model = DigitsNet()
    model.load_state_dict(torch.load(WEIGHTS, weights_only=True))
    return model.eval()


def student() -> DigitsNet:
    """A network with about a tenth of the teacher's parameters, untrained."""
    torch.manual_seed(0)
    return DigitsNet(width=8, hidden=32)


def federated_mlp(hidden: int = 32) -> nn.Module:
    """A tiny, untrained MLP for ``fogline fl simulate`` (pixels [batch,1,8,8] → logits [batch,10])."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
