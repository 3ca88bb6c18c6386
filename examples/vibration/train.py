"""Train the vibration anomaly model and export it to ONNX.

Run with ``python examples/vibration/train.py`` (needs torch; nothing is downloaded).

It generates healthy recordings with ``make_data.generate`` (other seeds than
the committed demo), turns them into the pipeline's features (16 band
energies x 3 axes per 256-row window, see ``features.py``), and fits a small
autoencoder on them alone. The exported model takes the scaled features,
``features`` float32 [batch, 48], and returns ``score`` float32 [batch]: the
mean squared reconstruction error, high for what the healthy machine never
did. Writes, beside this script:

* ``stats.npz`` — ``mean`` and ``std`` (16, 3) float32 of the healthy band
  energies, for the ``scale`` stage;
* ``model.onnx`` — the scorer, with a dynamic batch axis.

It then scores fresh healthy and faulty recordings and the committed
``vibration.csv``, and prints the score distributions and the threshold
``pipeline.yaml`` uses. The committed files were made by this script with
its fixed seed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from features import features, scale, window_ends
from make_data import generate
from torch import nn

from fogline.model import load_engine, torch_to_onnx

HERE = Path(__file__).resolve().parent
MODEL = HERE / "model.onnx"
STATS = HERE / "stats.npz"
SEED = 0
TRAIN_SEEDS = range(1, 11)  # ten healthy minutes
CHECK_SEEDS = range(100, 105)  # fresh recordings: healthy 40 s, then a developing fault


class Scorer(nn.Module):
    """An autoencoder 48 → 6 → 48 whose output is the per-item reconstruction error."""

    def __init__(self, features: int = 48, code: int = 6) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(features, 24), nn.Tanh(), nn.Linear(24, code))
        self.decode = nn.Sequential(nn.Linear(code, 24), nn.Tanh(), nn.Linear(24, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.decode(self.encode(x)) - x) ** 2).mean(dim=1)


def healthy_energies() -> np.ndarray:
    return np.concatenate([features(generate(60.0, None, seed=seed)[1]) for seed in TRAIN_SEEDS])


def fit(x: np.ndarray, epochs: int = 300) -> Scorer:
    torch.manual_seed(SEED)
    data = torch.from_numpy(x)
    model = Scorer()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(data)).split(128):
            optimizer.zero_grad()
            model(data[idx]).mean().backward()
            optimizer.step()
        schedule.step()
    return model.eval()


def committed_csv() -> tuple[np.ndarray, np.ndarray]:
    with open(HERE / "vibration.csv", encoding="ascii") as fh:
        rows = list(csv.DictReader(fh))
    accel = np.array([[float(r[c]) for c in ("ax", "ay", "az")] for r in rows], np.float32)
    fault = np.array([r["state"] == "fault" for r in rows])
    return accel, fault


def describe(name: str, scores: np.ndarray) -> str:
    q = np.percentile(scores, [50, 99, 100])
    return (
        f"  {name:<22} n={scores.size:<5} mean {scores.mean():8.3f}  "
        f"median {q[0]:8.3f}  p99 {q[1]:8.3f}  max {q[2]:8.3f}  min {scores.min():8.3f}"
    )


def main() -> None:
    energies = healthy_energies()
    mean = energies.mean(axis=0).astype(np.float32)
    std = np.maximum(energies.std(axis=0), 1e-6 * energies.std()).astype(np.float32)
    np.savez(STATS, mean=mean, std=std)
    x = scale(energies, mean, std)
    model = fit(x)
    torch_to_onnx(
        model, torch.zeros(2, 48), MODEL, input_names=["features"], output_names=["score"]
    )
    engine = load_engine(MODEL)
    print(
        f"trained on {len(x)} healthy windows; wrote {STATS.name} and {MODEL.name} "
        f"({MODEL.stat().st_size} bytes): {engine.signature}"
    )

    def score(accel: np.ndarray) -> np.ndarray:
        return engine.run({"features": scale(features(accel), mean, std)})["score"]

    normal, fault = [], []
    for seed in CHECK_SEEDS:
        t, accel, is_fault = generate(80.0, 40.0, seed=seed)
        scores, labels = score(accel), is_fault[window_ends(t.size)]
        normal.append(scores[~labels])
        fault.append(scores[labels])
    normal_s, fault_s = np.concatenate(normal), np.concatenate(fault)
    train_s = engine.run({"features": x})["score"]
    threshold = float(np.ceil(2 * np.percentile(normal_s.astype(np.float64), 99.9)))
    print("scores (mean squared reconstruction error of the scaled features):")
    print(describe("training (healthy)", train_s))
    print(describe("fresh healthy", normal_s))
    print(describe("fresh developing fault", fault_s))
    print(
        f"threshold {threshold}: {100 * (normal_s > threshold).mean():.2f}% of fresh healthy "
        f"windows flagged, {100 * (fault_s > threshold).mean():.2f}% of fault windows"
    )
    accel, is_fault = committed_csv()
    scores, labels = score(accel), is_fault[window_ends(len(accel))]
    print(f"vibration.csv ({len(scores)} windows):")
    print(describe("normal", scores[~labels]))
    print(describe("fault", scores[labels]))
    first = np.flatnonzero(labels)[0]
    flagged = np.flatnonzero(scores > threshold)
    print(
        f"  flagged {np.sum(scores[~labels] > threshold)} normal windows; first fault window "
        f"#{first}, first flagged #{flagged[0] if flagged.size else None}"
    )


if __name__ == "__main__":
    main()
