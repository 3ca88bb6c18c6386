"""Model load time sealed (decrypted in memory) against plain, for a small and a bigger model.

What a device pays for keeping its models sealed with its device key: the
plain load is ``load_engine(path)`` (ONNX Runtime reads the file); the
sealed load is ``load_engine(path, read=SealedFiles(key))``: read the sealed
file, derive the model sub-key, AES-256-GCM open it, and hand the bytes to
ONNX Runtime (``InferenceSession(bytes)``) — what ``fogline run``, ``fogline
serve`` and the agent's health check do. The two are interleaved (plain,
sealed, plain, ...) so a change in the machine's load hits both; medians.

Models: the bundled digits MLP (0.6 MB) and MobileNetV2 (width 1.0, 224x224,
1000 classes, random weights: 14 MB), exported once into a temporary folder.
The anchor is OpenVINO Model Server's model protection and NVIDIA's encrypted
models for Jetson: a model decrypted only in memory, at load.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from fogline.examples import digits_model_path
from fogline.model import EngineOptions, load_engine
from fogline.security import DeviceKey, SealedFiles, seal_model

#: Where the exported MobileNetV2 is kept between runs (the cluster benchmark's folder too).
MODELS = Path(tempfile.gettempdir()) / "fogline-bench-models"


def _mobilenet() -> Path:
    """MobileNetV2 224x224 as ONNX, exported on first use (a few seconds)."""
    path = MODELS / "mobilenet_v2_224.onnx"
    if path.exists():
        return path
    import torch
    from models import mobilenet_v2, photo_crops, settle_batchnorm

    from fogline.model import torch_to_onnx

    MODELS.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    crops = photo_crops(8, 224)
    model = settle_batchnorm(mobilenet_v2(num_classes=1000), crops)
    torch_to_onnx(model, crops[:2], path, input_names=["images"], output_names=["logits"])
    return path


def _load_ms(path: Path, read: SealedFiles | None) -> float:
    options = EngineOptions(threads=1)
    started = time.perf_counter()
    engine = load_engine(path, options=options, read=read)
    elapsed = (time.perf_counter() - started) * 1e3
    engine.close()
    return elapsed


def _measure(name: str, plain: Path, folder: Path, key: DeviceKey, rounds: int) -> str:
    data = plain.read_bytes()
    sealed = folder / plain.name
    sealed.write_bytes(seal_model(data, key))
    reader = SealedFiles(key)
    _load_ms(plain, None), _load_ms(sealed, reader)  # warm the page cache and the runtime
    plain_ms, sealed_ms, open_ms = [], [], []
    for _ in range(rounds):
        plain_ms.append(_load_ms(plain, None))
        sealed_ms.append(_load_ms(sealed, reader))
        started = time.perf_counter()
        reader(sealed)
        open_ms.append((time.perf_counter() - started) * 1e3)
    p, s, o = (statistics.median(x) for x in (plain_ms, sealed_ms, open_ms))
    size = len(data) / 1e6
    print(f"   {name} ({size:.1f} MB): plain {p:.1f} ms, sealed {s:.1f} ms "
          f"(read + unseal {o:.2f} ms, {size / o * 1e3:.0f} MB/s), {rounds} rounds")  # fmt: skip
    return (
        f"model load, sealed vs plain, {name} ({size:.1f} MB): {s:.1f} ms vs {p:.1f} ms "
        f"(x{s / p:.2f}; read + AES-256-GCM open {o:.2f} ms) — decrypted in memory only, "
        "as OpenVINO Model Server's model protection"
    )


def run(quick: bool) -> list[str]:
    print("Model load time: sealed with the device key (opened in memory) against plain")
    key = DeviceKey.generate()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines.append(_measure("digits", digits_model_path(), folder, key, 9 if quick else 41))
        lines.append(_measure("MobileNetV2", _mobilenet(), folder, key, 5 if quick else 21))
    return lines


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for line in run(parser.parse_args().quick):
        print(line)
