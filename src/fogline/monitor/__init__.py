"""Watching a model in the field, and letting it adapt behind a gate.

Drift detectors over a model's inputs, outputs or result fields; accuracy
from labels that arrive late (and an estimate of it when none do);
online learners that run as a pipeline's model; fine-tuning a model on
captured hard examples, with a gate the candidate must pass.

River (the ``monitor`` extra) is imported only by what uses it, so importing
this package stays cheap.
"""

from __future__ import annotations

from fogline.monitor._accuracy import (
    AccuracyEstimator,
    AccuracyWindows,
    ConfidenceCalibration,
    WindowFigure,
)
from fogline.monitor._checkpoint import CheckpointHeader, read_header
from fogline.monitor._drift import DETECTORS, Detector, DriftState, make_detector
from fogline.monitor._finetune import (
    LAYERS,
    FinetuneOptions,
    FinetuneResult,
    finetune,
    next_version,
)
from fogline.monitor._gate import GateOptions, GateVerdict, judge, run_gate
from fogline.monitor._memory import FeatureMemory
from fogline.monitor._online import OUTPUTS, OnlineEngine, OnlineSpec, open_online
from fogline.monitor._river import build_estimator

__all__: list[str] = [
    "DETECTORS",
    "LAYERS",
    "OUTPUTS",
    "AccuracyEstimator",
    "AccuracyWindows",
    "CheckpointHeader",
    "ConfidenceCalibration",
    "Detector",
    "DriftState",
    "FeatureMemory",
    "FinetuneOptions",
    "FinetuneResult",
    "GateOptions",
    "GateVerdict",
    "OnlineEngine",
    "OnlineSpec",
    "WindowFigure",
    "build_estimator",
    "finetune",
    "judge",
    "make_detector",
    "next_version",
    "open_online",
    "read_header",
    "run_gate",
]
