"""A Triton-style model repository around the bundled digits model, for the server tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from fogline.examples import digits_model_path

DIGITS_CONFIG = """
name: "digits"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "pixels", data_type: TYPE_FP32, dims: [ 1, 8, 8 ] } ]
output [ { name: "logits", data_type: TYPE_FP32, dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
"""


def make_repository(
    root: Path, versions: tuple[int, ...] = (1,), config: str = DIGITS_CONFIG
) -> Path:
    model = root / "digits"
    for version in versions:
        (model / str(version)).mkdir(parents=True, exist_ok=True)
        shutil.copy(digits_model_path(), model / str(version) / "model.onnx")
    (model / "config.pbtxt").write_text(config)
    return root
