"""PyTorch → ONNX (``pip install 'fogline[train]'``), with a dynamic batch axis.

Uses PyTorch's own exporter (``torch.onnx.export`` on ``torch.export``);
the first dimension of every input is exported as the symbolic ``batch``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fogline.errors import ModelFormatError
from fogline.model._atomic import atomic_path
from fogline.model._engine import require


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter narrates each step on stdout and warns about optional packages."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def torch_to_onnx(
    module: Any,
    sample: Any,
    path: str | Path,
    *,
    input_names: Sequence[str] = ("input",),
    output_names: Sequence[str] = ("output",),
    opset: int = 20,
) -> Path:
    """Export ``module`` (in eval mode) to ``path``; ``sample`` is one input batch.

    The file appears atomically: it is written beside ``path`` and renamed.
    """
    require("torch", "train")
    import torch

    path = Path(path)
    samples = sample if isinstance(sample, tuple) else (sample,)
    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic = tuple({0: batch} for _ in samples)
    module = module.eval()
    try:
        with atomic_path(path) as tmp, _quiet_exporter(), torch.no_grad():
            torch.onnx.export(
                module,
                samples,
                str(tmp),
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_shapes=dynamic,
                opset_version=opset,
                dynamo=True,
                external_data=False,
            )
    except Exception as exc:
        raise ModelFormatError(f"cannot export {type(module).__name__} to ONNX: {exc}") from exc
    return path
