"""Preprocessing and post-processing steps of a pipeline.

Each step is a pydantic spec (its YAML ``type:`` picks the class) that
checks itself before anything runs, and builds a runtime
:class:`~fogline.pipeline.Stage` ``(item) -> item | None``.

Preprocessing (``PRE_SPECS``) maps the data's :class:`ArraySpec` so a chain
is checked end to end at load time: image steps (resize, letterbox, crop,
colour), tensor steps (normalize, layout, cast, reshape) and sensor steps
(window, fft, bands, scale). Post-processing (``POST_SPECS``) reads model
outputs and writes JSON-able ``item.result`` keys: classify, yolo, ssd,
nms, anomaly, smooth, debounce, drift, offload (to a remote model). Stateful steps (window, anomaly baselines,
smooth, debounce) keep their state per source.
"""

from __future__ import annotations

from fogline.pipeline._base import PostprocessSpec, PreprocessSpec
from fogline.pipeline.stages._classify import AnomalySpec, Baseline, ClassifySpec
from fogline.pipeline.stages._detect import NmsSpec, SsdSpec, YoloSpec, nms
from fogline.pipeline.stages._drift import DriftSpec
from fogline.pipeline.stages._image import ColourSpec, CropSpec, LetterboxSpec, ResizeSpec
from fogline.pipeline.stages._offload import (
    Deferred,
    OffloadReading,
    OffloadSpec,
    build_post,
)
from fogline.pipeline.stages._signal import BandsSpec, FftSpec, ScaleSpec, WindowSpec
from fogline.pipeline.stages._temporal import DebounceSpec, SmoothSpec
from fogline.pipeline.stages._tensor import CastSpec, LayoutSpec, NormalizeSpec, ReshapeSpec

__all__ = [
    "POST_SPECS",
    "PRE_SPECS",
    "AnomalySpec",
    "BandsSpec",
    "Baseline",
    "CastSpec",
    "ClassifySpec",
    "ColourSpec",
    "CropSpec",
    "DebounceSpec",
    "Deferred",
    "DriftSpec",
    "FftSpec",
    "LayoutSpec",
    "LetterboxSpec",
    "NmsSpec",
    "NormalizeSpec",
    "OffloadReading",
    "OffloadSpec",
    "ReshapeSpec",
    "ResizeSpec",
    "ScaleSpec",
    "SmoothSpec",
    "SsdSpec",
    "WindowSpec",
    "YoloSpec",
    "build_post",
    "nms",
]

#: Preprocessing specs, in the order the docs list them.
PRE_SPECS: tuple[type[PreprocessSpec], ...] = (
    ResizeSpec,
    LetterboxSpec,
    CropSpec,
    ColourSpec,
    NormalizeSpec,
    LayoutSpec,
    CastSpec,
    ReshapeSpec,
    WindowSpec,
    FftSpec,
    BandsSpec,
    ScaleSpec,
)

#: Post-processing specs, in the order the docs list them.
POST_SPECS: tuple[type[PostprocessSpec], ...] = (
    ClassifySpec,
    YoloSpec,
    SsdSpec,
    NmsSpec,
    AnomalySpec,
    SmoothSpec,
    DebounceSpec,
    DriftSpec,
    OffloadSpec,
)
