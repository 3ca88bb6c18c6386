"""Fine-tuning the whole network from its PyTorch source (the ``train`` extra, imported here only).

The source is a ``module:function`` returning the ``torch.nn.Module`` the
ONNX model was exported from, with its trained weights (for the bundled
digits model: ``fogline.examples.digits_torch:teacher``). Before training,
the module and the ONNX model are run on the same items: a source that does
not compute what the model does is refused rather than fine-tuned into a
different model. Training is Adam on the cross-entropy plus an L2 pull
towards the starting weights (to limit forgetting); the result is exported
to ONNX with the model's own input and output names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fogline.data import import_function
from fogline.errors import ConfigError
from fogline.model import Engine, Signature, require, torch_to_onnx

__all__ = ["finetune_torch"]

Progress = Callable[[int, int, float, float], None]

#: How far the source's outputs may be from the ONNX model's (relative to their scale).
AGREEMENT = 1e-3


def finetune_torch(
    source: str,
    engine: Engine,
    feeds: Mapping[str, np.ndarray],
    labels: npt.NDArray[np.int64],
    out: Path,
    *,
    epochs: int,
    learning_rate: float,
    l2: float,
    batch_size: int,
    seed: int,
    threads: int | None = None,
    progress: Progress | None = None,
) -> Path:
    """Train ``source``'s module on ``feeds`` → ``labels`` and export it to ``out`` (ONNX)."""
    require("torch", "train")
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        settings = (epochs, learning_rate, l2, batch_size, seed)
        return _train(source, engine, feeds, labels, out, settings, progress, torch)
    finally:
        torch.set_num_threads(before)


def _train(
    source: str,
    engine: Engine,
    feeds: Mapping[str, np.ndarray],
    labels: npt.NDArray[np.int64],
    out: Path,
    settings: tuple[int, float, float, int, int],
    progress: Progress | None,
    torch: Any,
) -> Path:
    epochs, learning_rate, l2, batch_size, seed = settings

    signature: Signature = engine.signature
    module = _load_module(source, torch)
    names = signature.input_names
    tensors = [torch.from_numpy(np.ascontiguousarray(feeds[name])) for name in names]
    probabilities = _check_agreement(source, module, engine, feeds, tensors, torch)

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    anchors = [p.detach().clone() for p in module.parameters()]
    optimizer = torch.optim.Adam(module.parameters(), lr=learning_rate)
    target = torch.from_numpy(labels.astype(np.int64))
    n = len(labels)
    module.train()
    for epoch in range(epochs):
        total, correct = 0.0, 0
        order = torch.randperm(n, generator=generator)
        for idx in (order[i : i + batch_size] for i in range(0, n, batch_size)):
            optimizer.zero_grad()
            out_ = module(*(t[idx] for t in tensors))
            if probabilities:
                loss = torch.nn.functional.nll_loss(torch.log(out_ + 1e-12), target[idx])
            else:
                loss = torch.nn.functional.cross_entropy(out_, target[idx])
            pull = sum(
                ((p - a) ** 2).sum() for p, a in zip(module.parameters(), anchors, strict=True)
            )
            (loss + 0.5 * l2 * pull).backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out_.detach().argmax(dim=1) == target[idx]).sum())
        if progress is not None:
            progress(epoch + 1, epochs, total / n, correct / n)
    module.eval()
    sample = tuple(t[:2] for t in tensors)
    return torch_to_onnx(
        module,
        sample if len(sample) > 1 else sample[0],
        out,
        input_names=names,
        output_names=signature.output_names,
    )


def _load_module(source: str, torch: Any) -> Any:
    made = import_function(source)()
    if not isinstance(made, torch.nn.Module):
        raise ConfigError(
            f"--from-torch {source}: returned {type(made).__name__}, not a torch.nn.Module"
        )
    return made


def _check_agreement(
    source: str,
    module: Any,
    engine: Engine,
    feeds: Mapping[str, np.ndarray],
    tensors: list[Any],
    torch: Any,
) -> bool:
    """Refuse a source that computes something else; whether its output is probabilities."""
    sample = {name: np.ascontiguousarray(array[:64]) for name, array in feeds.items()}
    expected = next(iter(engine.run(sample).values()))
    module.eval()
    with torch.no_grad():
        got = module(*(t[:64] for t in tensors)).numpy()
    if got.shape != expected.shape:
        raise ConfigError(
            f"--from-torch {source}: its output has shape {list(got.shape)}, the model's "
            f"{list(expected.shape)}; name the module the model was exported from"
        )
    difference = float(np.max(np.abs(got - expected)))
    if difference > AGREEMENT * max(1.0, float(np.max(np.abs(expected)))):
        raise ConfigError(
            f"--from-torch {source}: its outputs differ from the model's by up to "
            f"{difference:.3g}; name the module (with the weights) the model was exported from"
        )
    rows = got.sum(axis=-1)
    return bool(np.all(got >= 0) and np.allclose(rows, 1.0, atol=1e-4))
