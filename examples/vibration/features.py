"""The pipeline's feature chain in plain numpy: window → fft → bands (→ scale → reshape).

This mirrors, step for step, what ``pipeline.yaml`` asks the stages to do,
so the model is trained on exactly what it will see at run time (see
README.md for the semantics the stages must match).
"""

from __future__ import annotations

import numpy as np

WINDOW = 256
HOP = 128
BANDS = 16


def windows(rows: np.ndarray, size: int = WINDOW, hop: int = HOP) -> np.ndarray:
    """Stack rows (n, channels) into (count, size, channels): starts 0, hop, 2*hop, ...

    A window is emitted once it is full; the tail that does not fill one is dropped.
    """
    starts = np.arange(0, rows.shape[0] - size + 1, hop)
    return np.stack([rows[s : s + size] for s in starts]).astype(np.float32)


def window_ends(n: int, size: int = WINDOW, hop: int = HOP) -> np.ndarray:
    """Index of the last row of each window :func:`windows` makes from ``n`` rows."""
    return np.arange(0, n - size + 1, hop) + size - 1


def band_energies(window: np.ndarray, count: int = BANDS) -> np.ndarray:
    """One window (size, channels) → band energies (count, channels), float32.

    ``fft``: magnitude of the real FFT along time, (size//2 + 1, channels);
    ``bands``: the bins split into ``count`` contiguous near-equal groups
    (``np.array_split``: the first groups get one extra bin), squared
    magnitudes summed per group.
    """
    spectrum = np.abs(np.fft.rfft(window, axis=0))
    groups = np.array_split(spectrum**2, count, axis=0)
    return np.stack([g.sum(axis=0) for g in groups]).astype(np.float32)


def features(rows: np.ndarray) -> np.ndarray:
    """Rows (n, channels) → unscaled band energies (windows, BANDS, channels)."""
    return np.stack([band_energies(w) for w in windows(rows)])


def scale(energies: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``scale`` then ``reshape {shape: [48]}``: (…, 16, 3) → (…, 48) float32, row-major."""
    scaled = (energies - mean) / std
    return scaled.reshape(*scaled.shape[:-2], -1).astype(np.float32)
