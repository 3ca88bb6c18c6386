"""Opening a pipeline's online model (``model: {online: ...}``) and fitting the pipeline to it.

An online learner has no file to say what it takes: it takes what the
pipeline gives. Its input is what the first source's items look like after
preprocessing (the plan then checks every source against it, as for a model
file), and its features are the source's column names when it has them
(a CSV or Parquet replay without preprocessing), else their positions.

An online classifier or regressor learns from the ``labels:`` section's
late labels (:class:`LabelLearner`): the items' features wait for their
label in a :class:`~fogline.monitor.FeatureMemory`, bounded by ``remember``
items and the labels' ``retention_s``.

A ``classify`` step after an online classifier reads probabilities, not
logits: its ``softmax`` is off and its ``labels`` default to the model's
``classes`` (a ``softmax: true`` written out is refused, since it would
squash the probabilities again).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fogline.errors import ConfigError
from fogline.model import OpenedModel, TensorSpec
from fogline.monitor import FeatureMemory, OnlineEngine, OnlineSpec, open_online
from fogline.pipeline._base import ArraySpec
from fogline.pipeline._item import Item
from fogline.pipeline._labels import LabelJoin
from fogline.pipeline.stages import ClassifySpec

if TYPE_CHECKING:
    from fogline.pipeline._spec import PipelineSpec, Plan

log = logging.getLogger("fogline.pipeline")


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
    labels = spec.labels
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
        kind = getattr(opened.engine, "kind", None)
        task = {"classifier": "classification", "regressor": "regression"}.get(str(kind))
        if labels is not None and task is not None and labels.task != task:
            raise ConfigError(
                f"labels.task: the online model is a {kind}, which learns from "
                f"{task} labels; set `task: {task}`"
            )
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


class LabelLearner:
    """The label hook that teaches an online classifier or regressor its late labels.

    The pipeline's collector hands it every item it computed (:meth:`seen`:
    the item's model input is remembered under its id); the label join
    thread calls it with each joined label, and the engine learns the label
    with the features remembered for that item. What cannot be learned is
    counted: the memory's ``missed`` and ``forgotten``, the engine's ``refused``.
    """

    def __init__(self, engine: OnlineEngine, memory: FeatureMemory) -> None:
        self.engine = engine
        self.memory = memory
        engine.memory = memory  # its run summary reports the memory's counts

    def seen(self, item: Item) -> None:
        self.memory.remember(item.meta.get("id"), item.data)

    def __call__(self, join: LabelJoin) -> None:
        features = self.memory.recall(join.item_id)
        if features is not None:
            self.engine.learn(features, join.label)


def label_learner(plan: Plan) -> LabelLearner | None:
    """The pipeline's :class:`LabelLearner`, for an online classifier or regressor with labels."""
    engine = plan.model.engine
    if not isinstance(engine, OnlineEngine) or engine.kind == "anomaly":
        return None
    labels = plan.spec.labels
    if labels is None:
        log.warning(
            "the online %s %s has no labels: section to learn from; it predicts, but never learns",
            engine.kind,
            engine.name,
        )
        return None
    return LabelLearner(engine, FeatureMemory(plan.spec.model.remember, labels.retention_s))
