"""scikit-learn → ONNX with skl2onnx (``pip install 'fogline[examples]'``).

Classifiers are exported with plain tensor outputs (``label`` and
``probabilities``, no ZipMap) so every engine and the optimizer can read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fogline.errors import ModelFormatError
from fogline.model._atomic import atomic_path
from fogline.model._engine import require


def sklearn_to_onnx(
    estimator: Any,
    n_features: int,
    path: str | Path,
    *,
    input_name: str = "input",
    opset: int = 17,
) -> Path:
    """Export a fitted estimator taking ``n_features`` float32 features per row."""
    require("skl2onnx", "examples")
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    path = Path(path)
    options: dict[int, dict[str, bool]] = {}
    if hasattr(estimator, "predict_proba"):
        options = {id(estimator): {"zipmap": False}}
    try:
        onx = to_onnx(
            estimator,
            initial_types=[(input_name, FloatTensorType([None, n_features]))],
            target_opset={"": opset, "ai.onnx.ml": 3},
            options=options,
        )
    except Exception as exc:
        raise ModelFormatError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {exc}"
        ) from exc
    with atomic_path(path) as tmp:
        tmp.write_bytes(onx.SerializeToString())
    return path
