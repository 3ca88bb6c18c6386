"""A pipeline's results store seeded with hard examples and their late labels, for fine-tuning tests.

Real captures of the digits model's input (``pixels``, as the pipeline stores
them) and labels, through ``ResultStore.add_captures`` and ``put_labels``:
the held-out digits and the same digits moved two pixels to the right (a
knocked camera), mixed, so the model is wrong on about half of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fogline.examples import digits_split
from fogline.security import DeviceKey
from fogline.store import Capture, ResultStore, StoredLabel


def seed_store(path: Path, items: int = 400, *, key: DeviceKey | None = None) -> None:
    """``items`` labelled captures in the store at ``path`` (made with its folders if new;
    encrypted with ``key`` when given)."""
    x, y = digits_split("eval")
    moved = np.zeros_like(x)
    moved[..., 2:] = x[..., :-2]
    pixels, labels = np.concatenate([x, moved]), np.concatenate([y, y])
    pick = np.random.default_rng(1).permutation(len(labels))[:items]
    path.parent.mkdir(parents=True, exist_ok=True)
    with ResultStore(path, key=key) as store:
        store.add_captures(
            Capture.of(pixels[i], item_id=f"cam#{i}", source="camera", captured_at=float(n),
                       model="digits", model_version="1", reason="drift.alarm",
                       input_name="pixels", answer={})
            for n, i in enumerate(pick)
        )  # fmt: skip
        store.put_labels(
            StoredLabel(f"cam#{i}", int(labels[i]), float(n)) for n, i in enumerate(pick)
        )
