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
from dataclasses import dataclass
from pathlib import Path

import onnx

from fogline.data import Dataset
from fogline.optimize._variants import calibration_reader

#: Items used for the check: enough for stable statistics, few enough for memory.
SENSITIVITY_ITEMS = 8


@dataclass(frozen=True)
class Sensitive:
    """A node, the SQNR it loses (dB), and the nodes that feed it."""

    node: str
    loss_db: float
    feeders: tuple[str, ...]


def rank_sensitive_nodes(
    float_model: Path, qdq_model: Path, data: Dataset, workdir: Path
) -> list[Sensitive]:
    """The nodes that lose SQNR under quantization, the most damaging first."""
    from onnxruntime.quantization.qdq_loss_debug import (
        DEQUANT_OUTPUT_SUFFIX,
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        modify_model_output_intermediate_tensors,
    )

    small = data.limit(SENSITIVITY_ITEMS)
    aug_float = workdir / "sensitivity-float.onnx"
    aug_qdq = workdir / "sensitivity-qdq.onnx"
    modify_model_output_intermediate_tensors(str(float_model), str(aug_float))
    modify_model_output_intermediate_tensors(str(qdq_model), str(aug_qdq))
    float_acts = collect_activations(str(aug_float), calibration_reader(small))
    qdq_acts = collect_activations(str(aug_qdq), calibration_reader(small))
    aug_float.unlink(missing_ok=True)
    aug_qdq.unlink(missing_ok=True)

    def sqnr(tensor: str) -> float | None:
        """SQNR of a tensor in the QDQ model (as computed, and as dequantized) against FP32."""
        if tensor not in float_acts:
            return None
        found = [
            compute_signal_to_quantization_noice_ratio(float_acts[tensor], qdq_acts[name])
            for name in (tensor, tensor + DEQUANT_OUTPUT_SUFFIX)
            if name in qdq_acts
        ]
        values = [float(v) for v in found if not math.isnan(v)]
        return min(min(values), 100.0) if values else None

    graph = onnx.load(str(float_model), load_external_data=False).graph
    producer = {out: node.name for node in graph.node for out in node.output}
    ranked: list[Sensitive] = []
    for node in graph.node:
        outs = [s for s in (sqnr(t) for t in node.output) if s is not None]
        if not outs:
            continue
        ins = [s for s in (sqnr(t) for t in node.input) if s is not None]
        before = min(ins) if ins else 100.0
        loss = before - min(outs)
        if loss > 0.0:
            # In QDQ form a tensor's quantization is shared by its producer and its
            # consumers: keeping a node in FP32 means keeping its producers there too.
            feeders = tuple(producer[t] for t in node.input if t in producer)
            ranked.append(Sensitive(node.name, loss, feeders))
    ranked.sort(key=lambda item: item.loss_db, reverse=True)
    return ranked


def exclusion_set(ranked: list[Sensitive], count: int) -> list[str]:
    """Node names to keep in FP32 for the ``count`` most sensitive nodes, in rank order."""
    chosen: list[str] = []
    for item in ranked[:count]:
        for name in (item.node, *item.feeders):
            if name not in chosen:
                chosen.append(name)
    return chosen
