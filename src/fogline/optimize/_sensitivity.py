"""Per-layer sensitivity to quantization, with ONNX Runtime's QDQ debugging tools.

Both the FP32 and the QDQ model are made to output every intermediate
tensor; on a few calibration batches each tensor's signal-to-quantization-
noise ratio (SQNR, dB) against FP32 is computed. A node's damage is how much
SQNR it loses between its inputs and its output: the nodes that lose most
are the ones to keep in floating point (often the detection head and the
last layers, where sigmoid scores are squeezed into 8 bits).
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx

from fogline.optimize._data import Dataset
from fogline.optimize._variants import calibration_reader

#: Items used for the check: enough for stable statistics, few enough for memory.
SENSITIVITY_ITEMS = 8


def rank_sensitive_nodes(
    float_model: Path, qdq_model: Path, data: Dataset, workdir: Path
) -> list[tuple[str, float]]:
    """Float-model node names with their SQNR loss in dB, the most damaging first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    small = data.limit(SENSITIVITY_ITEMS)
    aug_float = workdir / "sensitivity-float.onnx"
    aug_qdq = workdir / "sensitivity-qdq.onnx"
    modify_model_output_intermediate_tensors(str(float_model), str(aug_float))
    modify_model_output_intermediate_tensors(str(qdq_model), str(aug_qdq))
    float_acts = collect_activations(str(aug_float), calibration_reader(small))
    qdq_acts = collect_activations(str(aug_qdq), calibration_reader(small))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    aug_float.unlink(missing_ok=True)
    aug_qdq.unlink(missing_ok=True)

    def sqnr(tensor: str) -> float | None:
        value = errors.get(tensor, {}).get("xmodel_err")
        return None if value is None or math.isnan(value) else min(float(value), 100.0)

    graph = onnx.load(str(float_model), load_external_data=False).graph
    ranked: list[tuple[str, float]] = []
    for node in graph.node:
        outs = [s for s in (sqnr(t) for t in node.output) if s is not None]
        if not outs:
            continue
        ins = [s for s in (sqnr(t) for t in node.input) if s is not None]
        before = min(ins) if ins else 100.0
        ranked.append((node.name, before - min(outs)))
    ranked.sort(key=lambda item: item[1], reverse=True)
    return [(name, loss) for name, loss in ranked if loss > 0.0]
