"""The real-time pipeline: collect → preprocess → infer → post-process → act → sync.

A pipeline is a YAML file: sources, preprocessing steps, a model, post-processing
steps, rules and sinks. :func:`load_spec` validates it, :func:`plan` checks that
the pieces fit the model, and :class:`Pipeline` runs it.

>>> import pathlib, tempfile
>>> from fogline.examples import digits_model_path
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "p.yaml").write_text('''
... sources: [{type: dataset, function: "fogline.examples:digits_eval"}]
... model: {path: "%s"}
... postprocess: [{type: classify}]
... ''' % digits_model_path())
>>> checked = plan(load_spec(folder / "p.yaml"))
>>> pipeline = Pipeline(checked)
>>> snapshot = pipeline.run(max_items=100)
>>> snapshot.total("processed"), pipeline.store.count()
(100, 100)
>>> pipeline.close(); checked.model.engine.close()
"""

from fogline.pipeline._base import (
    QUEUE_POLICIES,
    ArraySpec,
    PostprocessSpec,
    PreprocessSpec,
    Sink,
    SinkSpec,
    Source,
    SourceSpec,
    Stage,
    TransportSpec,
)
from fogline.pipeline._deferred import CarbonSubscription, DeferralGate, carbon_broker
from fogline.pipeline._egress import LEAVING_SINKS, Egress, check_export, redact_dataset
from fogline.pipeline._faces import FaceBlur
from fogline.pipeline._item import Corrupt, Item
from fogline.pipeline._labels import LABEL_OUTCOMES, LabelBoard, LabelHook, LabelJoin, LabelsSpec
from fogline.pipeline._metrics import OUTCOMES, STAGES, Metrics, Snapshot, StageTiming
from fogline.pipeline._rules import Condition, Rule
from fogline.pipeline._runner import Pipeline
from fogline.pipeline._spec import PipelineSpec, Plan, load_spec, parse_spec, plan
from fogline.pipeline._variants import PolicySpec, Switch, VariantBoard, VariantSwitcher
from fogline.pipeline.stages import OffloadReading

__all__ = [
    "LABEL_OUTCOMES",
    "LEAVING_SINKS",
    "OUTCOMES",
    "QUEUE_POLICIES",
    "STAGES",
    "ArraySpec",
    "CarbonSubscription",
    "Condition",
    "Corrupt",
    "DeferralGate",
    "Egress",
    "FaceBlur",
    "Item",
    "LabelBoard",
    "LabelHook",
    "LabelJoin",
    "LabelsSpec",
    "Metrics",
    "OffloadReading",
    "Pipeline",
    "PipelineSpec",
    "Plan",
    "PolicySpec",
    "PostprocessSpec",
    "PreprocessSpec",
    "Rule",
    "Sink",
    "SinkSpec",
    "Snapshot",
    "Source",
    "SourceSpec",
    "Stage",
    "StageTiming",
    "Switch",
    "TransportSpec",
    "VariantBoard",
    "VariantSwitcher",
    "carbon_broker",
    "check_export",
    "load_spec",
    "parse_spec",
    "plan",
    "redact_dataset",
]
