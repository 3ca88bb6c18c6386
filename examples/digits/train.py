"""Train the bundled digits classifier and export it to ONNX.

Run with the ``train`` extra installed (``pip install -e '.[train,examples]'``):

    python examples/digits/train.py

It trains a small CNN on the training split of scikit-learn's bundled
``load_digits`` set (nothing is downloaded), reports accuracy on the held-out
split, and writes ``src/fogline/examples/digits/model.onnx`` with its
manifest, and the PyTorch weights beside it
(``weights.pt``, for pruning and distillation). The committed model was made by this script with its fixed seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fogline.examples import LABELS, PIXEL_SCALE, digits_model_path, digits_split
from fogline.examples.digits_torch import WEIGHTS, DigitsNet
from fogline.model import Manifest, load_engine, torch_to_onnx


def train(epochs: int = 40, seed: int = 0) -> DigitsNet:
    torch.manual_seed(seed)
    pixels, labels = digits_split("train")
    x, y = torch.from_numpy(pixels), torch.from_numpy(labels)
    model = DigitsNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    model = train()
    out = digits_model_path()
    torch.save(model.state_dict(), WEIGHTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch_to_onnx(
        model, torch.zeros(2, 1, 8, 8), out, input_names=["pixels"], output_names=["logits"]
    )
    engine = load_engine(out)
    pixels, labels = digits_split("eval")
    accuracy = float((engine.run({"pixels": pixels})["logits"].argmax(1) == labels).mean())
    manifest = Manifest.for_model(
        out,
        engine.signature,
        name="digits",
        version="1",
        backend=engine.backend,
        precision=engine.precision,
        preprocessing=[{"op": "scale", "factor": PIXEL_SCALE}],
        labels=LABELS,
        metrics={"accuracy": round(100 * accuracy, 2)},
    )
    manifest.write(Path(out).parent)
    print(f"wrote {out} ({out.stat().st_size} bytes); held-out accuracy {100 * accuracy:.2f}%")


if __name__ == "__main__":
    main()
