"""Train the bundled shapes detector and export it to ONNX.

Run with the ``train`` and ``examples`` extras installed
(``pip install -e '.[train,examples]'``):

    nice python examples/shapes_detector/train.py

It trains :class:`~fogline.examples.shapes_torch.ShapesNet` with its baseline
knobs (width 16, depth 2, 3x3 kernels, 64x64 input) on the 3000 training
scenes of :func:`~fogline.examples.shapes_split` (drawn from a fixed seed,
nothing is downloaded), reports mAP@0.5 on the 500 held-out scenes, and writes
``src/fogline/examples/shapes/model.onnx`` with its manifest and the PyTorch
weights beside it (``weights.pt``). The committed model was made by this
script with its fixed seed: 20 epochs, about a minute and a quarter on two
idle cores (forty when five other jobs share them).
"""

from __future__ import annotations

import time

import torch

from fogline.examples import SHAPES_LABELS, shapes_model_path, shapes_split
from fogline.examples.shapes_torch import BASELINE, WEIGHTS, engine_map50, family, train_detector
from fogline.model import Manifest, load_engine, torch_to_onnx

EPOCHS = 20
SEED = 0


def main() -> None:
    start = time.monotonic()
    images, labels = shapes_split("train")
    torch.manual_seed(SEED)
    model = family.build(BASELINE)
    print(f"training {BASELINE} ({sum(p.numel() for p in model.parameters())} parameters)")
    train_detector(model, images, list(labels), epochs=EPOCHS, seed=SEED, log=True)
    out = shapes_model_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WEIGHTS)
    torch_to_onnx(
        model,
        family.example_input(BASELINE),
        out,
        input_names=["images"],
        output_names=["detections"],
    )
    engine = load_engine(out)
    held, truth = shapes_split("eval")
    score = engine_map50(engine, held, list(truth), BASELINE["resolution"])
    manifest = Manifest.for_model(
        out,
        engine.signature,
        name="shapes",
        version="1",
        backend=engine.backend,
        precision=engine.precision,
        preprocessing=[{"op": "scale", "factor": 1 / 255}],
        labels=list(SHAPES_LABELS),
        metrics={"mAP@0.5": round(score, 4)},
    )
    manifest.write(out.parent)
    print(
        f"wrote {out} ({out.stat().st_size} bytes); held-out mAP@0.5 {score:.4f} "
        f"({len(held)} scenes, {sum(len(t) for t in truth)} objects); "
        f"{time.monotonic() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
