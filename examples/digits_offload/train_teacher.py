"""Train the digits teacher: the bigger, more accurate model that the offload example serves.

Run with the ``train`` extra installed (``pip install -e '.[train,examples]'``):

    python examples/digits_offload/train_teacher.py

It trains an ensemble of three small CNNs (three 3x3 convolutions each, two
pooling steps) on the training split of scikit-learn's bundled
``load_digits`` (nothing is downloaded), each member on its own seed and with
random one-pixel shifts of the images, and exports the ensemble as one ONNX
graph that averages the members' log-probabilities. The signature is the
bundled model's (``pixels`` [batch,1,8,8] float32 → ``logits`` [batch,10]),
so the teacher can stand in for it behind ``fogline serve``. It writes
``src/fogline/examples/digits_offload/models/digits-teacher/1/model.onnx``
(a Triton-style repository) and prints the held-out accuracy of both models.
The committed model was made by this script with its fixed seeds.
"""

from __future__ import annotations

import torch
from torch import nn

from fogline.examples import digits_model_path, digits_split, digits_teacher_path
from fogline.model import load_engine, torch_to_onnx


class Member(nn.Module):
    """Three 3x3 convolutions with two pooling steps, and a two-layer head."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, 10),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(pixels)
        return out


class Ensemble(nn.Module):
    """The members' mean log-probability: a logit vector like the bundled model's."""

    def __init__(self, members: list[Member]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logps = [torch.log_softmax(m(pixels), dim=1) for m in self.members]
        return torch.stack(logps).mean(0)


def shifted(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by up to one pixel in each direction (zero padding)."""
    padded = nn.functional.pad(x, (1, 1, 1, 1))
    out = torch.empty_like(x)
    offsets = torch.randint(0, 3, (len(x), 2), generator=generator)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + 8, dx : dx + 8]
    return out


def train_member(seed: int, epochs: int = 80) -> Member:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    pixels, labels = digits_split("train")
    x, y = torch.from_numpy(pixels), torch.from_numpy(labels)
    model = Member()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=generator).split(64):
            optimizer.zero_grad()
            batch = shifted(x[idx], generator)
            loss = nn.functional.cross_entropy(model(batch), y[idx], label_smoothing=0.05)
            loss.backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def accuracy(path: object) -> float:
    engine = load_engine(str(path))
    pixels, labels = digits_split("eval")
    return float((engine.run({"pixels": pixels})["logits"].argmax(1) == labels).mean())


def main() -> None:
    torch.set_num_threads(1)
    teacher = Ensemble([train_member(seed) for seed in (1, 2, 3)]).eval()
    out = digits_teacher_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_to_onnx(
        teacher, torch.zeros(2, 1, 8, 8), out, input_names=["pixels"], output_names=["logits"]
    )
    params = sum(p.numel() for p in teacher.parameters())
    print(
        f"wrote {out} ({out.stat().st_size} bytes, {params:,} parameters); held-out accuracy "
        f"{100 * accuracy(out):.2f}% (the bundled model: {100 * accuracy(digits_model_path()):.2f}%)"
    )


if __name__ == "__main__":
    main()
