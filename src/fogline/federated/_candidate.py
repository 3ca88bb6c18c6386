"""A model fine-tuned elsewhere, checked against the model it would replace, and put in its place.

The controller runs this when a device offers a candidate it fine-tuned on
its own captures (``fogline.fleet.controller``'s offers): the controller
must not parse a model itself (it starts without numpy or ONNX Runtime), so
the check lives here, beside the federated gate, and is imported only when
an offer arrives.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import FoglineError
from fogline.federated._gate import onnx_accuracy


class CandidateRefused(FoglineError):
    """The candidate is not a model that may replace the base one; the message says why."""


def check_candidate(
    candidate: Path,
    model_dir: Path,
    canary: Path | None,
    max_forgetting: float,
) -> dict[str, Any]:
    """What the controller found about ``candidate`` against the base model in ``model_dir``.

    :class:`CandidateRefused` when it is not a model folder whose files match
    its manifest, when its inputs and outputs differ from the base model's,
    when ONNX Runtime cannot open it, or when it forgets more than
    ``max_forgetting`` (a fraction) on ``canary`` (the base release's canary
    set, an ``.npz`` with ``x`` and ``y``; without one forgetting is not checked).
    """
    from fogline.model import Manifest, open_model

    try:
        manifest = Manifest.read(candidate)
        manifest.verify(candidate)
        old = Manifest.read(model_dir)
    except FoglineError as exc:
        raise CandidateRefused(f"not a model folder: {exc}") from None
    if manifest.signature() != old.signature():
        raise CandidateRefused(
            f"its inputs and outputs {manifest.signature()} are not the base model's "
            f"{old.signature()}"
        )
    try:
        opened = open_model(candidate, backend="onnxruntime", threads=1)
    except FoglineError as exc:
        raise CandidateRefused(f"ONNX Runtime cannot open it: {exc}") from None
    opened.engine.close()
    check: dict[str, Any] = {"opens": True, "signature": "matches the base model"}
    if canary is None:
        check["summary"] = "it opens, its signature matches; no canary set to check forgetting"
        return check
    with np.load(canary, allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
    base_accuracy, accuracy = (onnx_accuracy(path, x, y) for path in (model_dir, candidate))
    forgetting = base_accuracy - accuracy
    check["canary_set"] = {
        "items": len(y),
        "base": base_accuracy,
        "candidate": accuracy,
        "forgetting": forgetting,
        "max_forgetting": max_forgetting,
    }
    if forgetting > max_forgetting + 1e-12:
        raise CandidateRefused(
            f"on the base release's canary set ({len(y)} items) it reaches {accuracy:.2%} "
            f"against {base_accuracy:.2%}: {forgetting * 100:.2f} points forgotten, at most "
            f"{max_forgetting * 100:.2f} allowed"
        )
    check["summary"] = (
        f"controller check: canary set {accuracy:.2%} against {base_accuracy:.2%} "
        f"({forgetting * 100:+.2f} points forgotten, at most {max_forgetting * 100:.2f})"
    )
    return check


def install_candidate(candidate: Path, model_dir: Path) -> None:
    """Put ``candidate``'s model file and manifest in place of ``model_dir``'s."""
    from fogline.model import Manifest

    manifest = Manifest.read(candidate)
    old = Manifest.read(model_dir)
    (model_dir / old.model.path).unlink()
    shutil.copyfile(candidate / manifest.model.path, model_dir / manifest.model.path)
    shutil.copyfile(candidate / "fogline.yaml", model_dir / "fogline.yaml")


__all__ = ["CandidateRefused", "check_candidate", "install_candidate"]
