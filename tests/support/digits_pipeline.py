"""Shared helpers for the pipeline tests: write a pipeline file around the digits model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fogline.examples import digits_model_path

LABELS = [str(i) for i in range(10)]


def digits_spec(**overrides: Any) -> dict[str, Any]:
    """A working pipeline: the digits eval set replayed through the digits model."""
    spec: dict[str, Any] = {
        "name": "digits",
        "sources": [
            {"type": "dataset", "name": "digits", "function": "fogline.examples:digits_eval"}
        ],
        "model": {"path": str(digits_model_path().parent), "max_batch": 16, "max_wait_ms": 2},
        "postprocess": [{"type": "classify", "labels": LABELS, "min_score": 0.7}],
    }
    spec.update(overrides)
    return spec


def write_spec(folder: Path, spec: dict[str, Any], name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
