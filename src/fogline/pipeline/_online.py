"""Opening a pipeline's online model (``model: {online: ...}``) and fitting the pipeline to it.

An online learner has no file to say what it takes: it takes what the
pipeline gives. Its input is what the first source's items look like after
preprocessing (the plan then checks every source against it, as for a model
file), and its features are the source's column names when it has them
(a CSV or Parquet replay without preprocessing), else their positions.

A ``classify`` step after an online classifier reads probabilities, not
logits: its ``softmax`` is off and its ``labels`` default to the model's
``classes`` (a ``softmax: true`` written out is refused, since it would
squash the probabilities again).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fogline.errors import ConfigError
from fogline.model import OpenedModel, TensorSpec
from fogline.monitor import OnlineSpec, open_online
from fogline.pipeline._base import ArraySpec
from fogline.pipeline.stages import ClassifySpec

if TYPE_CHECKING:
    from fogline.pipeline._spec import PipelineSpec


def open_online_model(spec: PipelineSpec) -> tuple[PipelineSpec, OpenedModel]:
    """The opened online model, and ``spec`` with its ``classify`` steps fitted to it."""
    m = spec.model
    assert m.online is not None
    if m.workers != 1:
        raise ConfigError(
            "model.workers: an online learner learns from items in stream order, so it runs on "
            "one worker; remove `workers`"
        )
    if m.backend != "auto" or m.threads is not None:
        key = "backend" if m.backend != "auto" else "threads"
        raise ConfigError(f"model.{key}: an online model runs in River; remove `{key}`")
    data = _arrival(spec)
    shape = (None,) if data.shape is None else data.shape
    item = TensorSpec("features", data.dtype or "float32", shape)
    online = OnlineSpec(
        m.online,
        m.params,
        None if m.classes is None else tuple(m.classes),
        m.checkpoint,
        m.checkpoint_every_s,
    )
    try:
        opened = open_online(online, item, features=_feature_names(spec))
    except ConfigError as exc:
        raise ConfigError(f"model.{exc}") from exc
    try:
        fitted = _fit_classify(spec, m.classes)
    except BaseException:
        opened.engine.close()
        raise
    return fitted, opened


def _arrival(spec: PipelineSpec) -> ArraySpec:
    """What the first source's items look like when they reach the model."""
    try:
        data = spec.sources[0].output()
    except ConfigError as exc:
        raise ConfigError(f"sources[0]: {exc}") from exc
    for step, stage in enumerate(spec.preprocess):
        try:
            data = stage.output(data)
        except ConfigError as exc:
            raise ConfigError(f"preprocess[{step}] ({stage.type}): {exc}") from exc
    return data


def _feature_names(spec: PipelineSpec) -> list[str] | None:
    """The sources' column names, when every source has the same ones and nothing reshapes them."""
    if spec.preprocess:
        return None
    names = {tuple(getattr(source, "channels", ())) for source in spec.sources}
    if len(names) != 1:
        return None
    (columns,) = names
    return list(columns) or None


def _fit_classify(spec: PipelineSpec, classes: list[str] | None) -> PipelineSpec:
    steps: list[Any] = []
    for index, step in enumerate(spec.postprocess):
        if isinstance(step, ClassifySpec):
            if "softmax" in step.model_fields_set and step.softmax:
                raise ConfigError(
                    f"postprocess[{index}].softmax: an online classifier outputs probabilities, "
                    "which softmax would squash; remove `softmax: true`"
                )
            update: dict[str, Any] = {"softmax": False}
            if step.labels is None and classes is not None:
                update["labels"] = tuple(classes)
            step = step.model_copy(update=update)
        steps.append(step)
    return spec.model_copy(update={"postprocess": steps})
