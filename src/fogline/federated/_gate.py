"""The end of a federated run: the gate on the operator's validation set, and the provenance.

The model the run ended with and the newest release of the same name are
both run in ONNX Runtime on the task's ``test`` set; the new one passes when
it is not below the old by more than ``--max-drop`` (and not below
``--min-accuracy``). What passed is signed with a provenance that says how
it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import ConfigError, FoglineError
from fogline.federated._privacy import PrivacyAccountant
from fogline.federated._run_state import SECAGG_SCALE
from fogline.protocol import RunSpec

__all__ = ["gate", "next_version", "onnx_accuracy", "provenance"]


def gate(
    spec: RunSpec,
    model_path: Path,
    X: np.ndarray,
    y: np.ndarray,
    newest: tuple[str, Path] | None,
) -> dict[str, Any]:
    """The gate's verdict on the model at ``model_path``: ``passed``, ``reason`` and the figures.

    ``newest`` is the newest release of the same name (its version and model
    file) to compare with, or None.
    """
    new = onnx_accuracy(model_path, X, y)
    gate: dict[str, Any] = {"accuracy": new, "max_drop": spec.max_drop, "passed": True}
    if spec.min_accuracy is not None and new < spec.min_accuracy:
        gate.update(
            passed=False,
            reason=f"validation accuracy {new:.4f} < --min-accuracy {spec.min_accuracy}",
        )
        return gate
    if newest is None:
        gate["baseline"] = None
        gate["reason"] = (
            f"validation accuracy {new:.2%}; no release {spec.release!r} yet to compare with"
        )
        return gate
    version, files = newest
    gate["baseline_version"] = version
    try:
        old = onnx_accuracy(files, X, y)
    except FoglineError as exc:
        gate.update(
            passed=False,
            reason=f"cannot evaluate release {spec.release} {version} on the validation set: {exc}",
        )
        return gate
    gate["baseline"] = old
    if new < old - spec.max_drop:
        gate.update(
            passed=False,
            reason=(
                f"validation accuracy {new:.4f} is below release {spec.release} {version}'s "
                f"{old:.4f} by more than --max-drop {spec.max_drop}"
            ),
        )
    else:
        gate["reason"] = (
            f"validation accuracy {new:.2%} against release {spec.release} {version}'s "
            f"{old:.2%} (at most {spec.max_drop:.0%} lower allowed)"
        )
    return gate


def provenance(
    run_id: str, spec: RunSpec, accountant: PrivacyAccountant | None, rounds: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the signed release document records of the run that made its model."""
    privacy = None
    if accountant is not None:
        spent = accountant.spent()
        privacy = {**spent.to_dict(), "mode": "central"}
    return {
        "federated_run": run_id,
        "task": spec.task,
        "strategy": spec.strategy,
        "rounds": sum(1 for r in rounds if r["status"] == "closed"),
        "rounds_failed": sum(1 for r in rounds if r["status"] == "failed"),
        "participants": [r["participants"] for r in rounds],
        "group": spec.group,
        "fraction": spec.fraction,
        "min_clients": spec.min_clients,
        "local_epochs": spec.local_epochs,
        "secure_aggregation": None
        if not spec.secagg
        else {
            "protocol": "SecAgg+ (X25519, HKDF, ChaCha20, Shamir shares)",
            "bits": spec.secagg_bits,
            "clip": spec.secagg_clip,
            "weight_scale": SECAGG_SCALE,
            "tolerates": "a third of the sampled devices dropping",
        },
        "privacy": privacy,
        "accuracy": rounds[-1]["accuracy"] if rounds else None,
    }


def next_version(baseline: str | None) -> str:
    """The next minor version after ``baseline`` (``1.0.0`` without one)."""
    if baseline is None:
        return "1.0.0"
    from packaging.version import Version

    v = Version(baseline)
    return f"{v.major}.{v.minor + 1}.0"


def onnx_accuracy(path: Path, X: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the model at ``path`` (a file or a manifest folder) in ONNX Runtime.

    The validation inputs are reshaped to the model's input when only the
    layout differs (``[n, 64]`` for ``[n, 1, 8, 8]``); otherwise ConfigError.
    """
    from fogline.model import open_model

    opened = open_model(path)
    spec = opened.engine.signature.inputs[0]
    batch = X.astype(np.float32)
    if not spec.accepts_shape(batch.shape):
        want = spec.concrete_shape(batch=len(batch))
        if int(np.prod(want)) != batch.size:
            raise ConfigError(
                f"its input {spec.name!r} {spec.describe_shape()} does not take the validation "
                f"set's {list(X.shape)}"
            )
        batch = batch.reshape(want)
    correct = 0
    for start in range(0, len(batch), 256):
        outputs = opened.engine.run({spec.name: batch[start : start + 256]})
        scores = next(iter(outputs.values()))
        correct += int(np.sum(np.argmax(scores, axis=-1) == y[start : start + 256]))
    return correct / len(y)
