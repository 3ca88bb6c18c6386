"""Learner releases for the agent tests: the bundled ``digits_learner`` folder, changed as asked.

``wide_task`` and ``wide_device_data`` are a learner's task and data whose
update is several times larger than the digits one, for the chunking tests
(the agent imports them as ``support.fleet_learner:...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fogline.examples import digits_device_data, digits_learner_path, digits_task

__all__ = ["learner_release", "wide_device_data", "wide_task"]


def learner_release(folder: Path, **changes: Any) -> Path:
    """A copy of the bundled learner release in ``folder``, its ``learner.yaml`` keys replaced.

    ``eligibility`` is merged key by key, so ``eligibility={"max_cpu_percent": 0}``
    keeps ``require_mains``.
    """
    spec = yaml.safe_load((digits_learner_path() / "learner.yaml").read_text())
    for key, value in changes.items():
        if key == "eligibility":
            spec["eligibility"] = {**spec.get("eligibility", {}), **value}
        else:
            spec[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "learner.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def _widen(X: np.ndarray) -> np.ndarray:
    return np.concatenate([X, X**2, np.sqrt(X), (X > 0.5).astype(X.dtype)], axis=1)


def wide_task() -> dict[str, object]:
    """``digits_task`` on 256 features (each pixel four ways): an update that takes several chunks."""
    task = digits_task()
    (X, y), (Xt, yt) = task["train"], task["test"]  # type: ignore[misc]
    return task | {
        "weights": {"W": np.zeros((256, 10), np.float32), "b": np.zeros(10, np.float32)},
        "train": (_widen(X), y),
        "test": (_widen(Xt), yt),
    }


def wide_device_data(device_id: str, clients: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The device's part of the digits training set (``digits_device_data``), on 256 features."""
    X, y = digits_device_data(device_id, clients=clients)
    return _widen(X), y
