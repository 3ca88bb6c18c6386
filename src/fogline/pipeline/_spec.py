"""A pipeline file: YAML → typed spec → a checked :class:`Plan`, before anything starts.

Loading happens in two steps, both before a single item is read:

1. :func:`load_spec` parses the YAML and validates it into a
   :class:`PipelineSpec` (pydantic). Every problem is reported with the
   path to its key, ``preprocess[2].size: ...``; files that must exist are
   checked here, relative to the YAML file's folder.
2. :func:`plan` opens the model and checks that the pieces fit: each
   source's data, carried through the preprocessing chain, must arrive as
   the model's input (rank, dims, dtype, layout); post-processing must find
   the outputs it reads; rules and sinks may only use result fields that
   exist, and only name sinks that exist.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic.functional_validators import AfterValidator, BeforeValidator

from fogline.errors import ConfigError, FoglineError
from fogline.model import ModelReader, OpenedModel, TensorSpec, open_model, provider_name
from fogline.pipeline import sinks, sources, stages
from fogline.pipeline._base import (
    ArraySpec,
    OutputPath,
    PostprocessSpec,
    PreprocessSpec,
    SinkSpec,
    SourceSpec,
    Spec,
    TransportSpec,
    _shape_text,
    existing,
)
from fogline.pipeline._capture import CaptureSpec, check_capture
from fogline.pipeline._deferred import carbon_broker
from fogline.pipeline._egress import Egress, check_privacy
from fogline.pipeline._labels import LabelsSpec, check_labels
from fogline.pipeline._online import open_online_model
from fogline.pipeline._optional import optional
from fogline.pipeline._rules import BASE_NAMES, Condition, Rule
from fogline.pipeline._store_key import store_key
from fogline.pipeline._variants import PolicySpec, VariantEntry, check_policy, open_variants
from fogline.pipeline.sinks._basic import fields_of
from fogline.power import DeferPolicy
from fogline.security import PrivacyPolicy, fleet_policy_from_env


def _union(specs: Sequence[type[Spec]]) -> Any:
    return Annotated[Union[tuple(specs)], Field(discriminator="type")]  # noqa: UP007


if TYPE_CHECKING:  # the bases, for the type checker; pydantic gets the tagged unions
    from fogline.security import DeviceKey, KeySource

    SourceUnion = SourceSpec
    PreUnion = PreprocessSpec
    PostUnion = PostprocessSpec
    SinkUnion = SinkSpec
    TransportUnion = TransportSpec
else:
    SourceUnion = _union(sources.SPECS)
    PreUnion = _union(stages.PRE_SPECS)
    PostUnion = _union(stages.POST_SPECS)
    SinkUnion = _union(sinks.SPECS)
    TransportUnion = _union(sinks.TRANSPORT_SPECS)


def _parses(value: str) -> str:
    try:
        Condition(value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return value


def _texts(value: Any) -> Any:
    """Class names as strings: YAML's ``[0, 1]`` and ``["0", "1"]`` name the same classes."""
    if isinstance(value, list) and all(isinstance(v, str | int) for v in value):
        return [str(v) for v in value]
    return value


def _provider(value: str) -> str:
    """An execution provider's full name, from a short one (``cuda``) or a full one."""
    full = provider_name(value)
    if not full.endswith("ExecutionProvider"):
        raise ValueError(
            f"unknown execution provider {value!r}: cpu, cuda, tensorrt, coreml or a full "
            "name such as CUDAExecutionProvider"
        )
    return full


#: An ONNX Runtime execution provider, checked and written out in full.
ProviderText = Annotated[str, AfterValidator(_provider)]

#: Keys only an online model takes.
ONLINE_KEYS = frozenset({"params", "classes", "checkpoint", "checkpoint_every_s", "remember"})

#: A rule condition, parsed when the spec is validated.
ConditionText = Annotated[str, AfterValidator(_parses)]


class ModelSpec(Spec):
    """The model and how items are batched through it.

    The model is a file or folder (``path``) or an online learner
    (``online``: a River estimator or ``module:function``, built with
    ``params``; a classifier's ``classes``; its state kept in ``checkpoint``,
    saved every ``checkpoint_every_s`` while it learns and when the run ends;
    a classifier or regressor learns from the ``labels:`` section's late
    labels, keeping the features of the last ``remember`` items for them),
    or ``variants`` of one model, best first, switched by a ``policy``
    (see :mod:`fogline.pipeline._variants`).
    """

    path: Annotated[Path, existing("model file or folder")] | None = None
    online: str | None = Field(default=None, min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    classes: Annotated[list[str], BeforeValidator(_texts)] | None = None
    checkpoint: OutputPath | None = None
    checkpoint_every_s: float = Field(default=60.0, gt=0)
    #: An online classifier or regressor keeps this many recent items' features for their labels.
    remember: int = Field(default=100_000, ge=1)
    #: What results record as the model and its version (default: the manifest's, else the file name).
    name: str | None = Field(default=None, min_length=1)
    version: str | None = Field(default=None, min_length=1)
    backend: str = "auto"
    threads: int | None = Field(default=None, ge=1)
    #: ONNX Runtime's execution providers, best first (``cuda``, ``tensorrt``, ``cpu`` or full
    #: names); every one must be in this build. Default: the manifest's preference, else the
    #: build's best.
    providers: list[ProviderText] | None = Field(default=None, min_length=1)
    max_batch: int = Field(default=8, ge=1)
    max_wait_ms: float = Field(default=5.0, ge=0)
    queue_size: int = Field(default=64, ge=1)
    workers: int = Field(default=1, ge=1)
    deadline_ms: float | None = Field(default=None, gt=0)
    #: Variants of the model, best first, all loaded; ``policy`` says when to switch.
    variants: list[VariantEntry] | None = Field(default=None, min_length=2)
    policy: PolicySpec | None = None

    @model_validator(mode="after")
    def _file_or_online(self) -> ModelSpec:
        if self.variants is not None or self.policy is not None:
            return self._variants_and_policy()
        if (self.path is None) == (self.online is None):
            raise ValueError(
                "give either `path` (a model file or folder) or `online` (a River estimator such "
                "as river.anomaly.HalfSpaceTrees), not both"
                if self.path is not None
                else "needs `path` (a model file or folder) or `online` (a River estimator)"
            )
        if self.online is not None and self.providers is not None:
            raise ValueError("`providers` are for a model file run by ONNX Runtime, not `online`")
        extra = sorted(ONLINE_KEYS & self.model_fields_set) if self.path is not None else []
        if extra:
            raise ValueError(f"`{extra[0]}` is for an online model (`online:`), not a model file")
        return self

    def _variants_and_policy(self) -> ModelSpec:
        if self.variants is None:
            raise ValueError("`policy` switches between `variants`; list them (best first)")
        if self.path is not None or self.online is not None:
            raise ValueError("give `variants` (the first is the best) or `path`, not both")
        if self.policy is None:
            raise ValueError("`variants` need a `policy`: when to step down and back up")
        extra = sorted(ONLINE_KEYS & self.model_fields_set)
        if extra:
            raise ValueError(f"`{extra[0]}` is for an online model (`online:`), not variants")
        labels = [v.label for v in self.variants]
        twice = sorted({n for n in labels if labels.count(n) > 1})
        if twice:
            raise ValueError(f"variants: two are named {twice[0]!r}; give each a `name:`")
        return self


class RuleSpec(Spec):
    """``{name: unsure, when: "score < 0.6", then: [review]}``"""

    name: str = Field(min_length=1)
    when: ConditionText
    then: list[str] = Field(default_factory=list)


class RetentionSpec(Spec):
    """``{max_age_s: 604800, max_rows: 1000000, max_bytes: 500000000}``: any of them, oldest first."""

    max_age_s: float | None = Field(default=None, gt=0)
    max_rows: int | None = Field(default=None, ge=1)
    #: The store's pages at most (results, captures, labels; pending outbox messages are kept).
    max_bytes: int | None = Field(default=None, ge=65536)


class StoreSpec(Spec):
    """The results store: always on unless ``store: false``; ``encrypt`` it with the device key."""

    path: OutputPath = Field(default=Path("results.db"), validate_default=True)
    sync: bool | ConditionText = False
    retention: RetentionSpec = RetentionSpec()
    encrypt: bool = False


class OutboxSpec(Spec):
    """Where the store's outbox delivers, and what a full outbox does.

    ``defer`` marks what the outbox carries as non-urgent: it is sent only
    while that policy allows (see :mod:`fogline.pipeline._deferred`). A wait
    fills the outbox, so under ``defer`` the ``policy`` a user leaves out is
    ``reject`` (a full outbox keeps every stored message and refuses new
    results) rather than ``drop-oldest`` (which would throw unsent ones away).
    """

    transport: TransportUnion
    limit: int = Field(default=100_000, ge=1)
    policy: Literal["reject", "drop-oldest"] = "drop-oldest"
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    defer: DeferPolicy | None = None

    @model_validator(mode="before")
    @classmethod
    def _keep_what_waits(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("defer") is not None and "policy" not in data:
            return {**data, "policy": "reject"}
        return data

    @model_validator(mode="after")
    def _carbon_broker(self) -> OutboxSpec:
        if self.defer is not None:
            try:
                mqtt = getattr(self.transport, "type", None) == "mqtt"
                carbon_broker(self.defer, getattr(self.transport, "url", None) if mqtt else None)
            except ConfigError as exc:
                raise ValueError(f"defer.{exc}") from None
        return self


class PipelineSpec(Spec):
    """The whole pipeline file."""

    name: str = "pipeline"
    sources: list[SourceUnion] = Field(min_length=1)
    preprocess: list[PreUnion] = Field(default_factory=list)
    model: ModelSpec
    postprocess: list[PostUnion] = Field(default_factory=list)
    rules: list[RuleSpec] = Field(default_factory=list)
    sinks: list[SinkUnion] = Field(default_factory=list)
    store: StoreSpec | Literal[False] = StoreSpec()
    outbox: OutboxSpec | None = None
    capture: CaptureSpec | None = None
    labels: LabelsSpec | None = None
    #: What may leave the device (see :mod:`fogline.pipeline._egress`).
    privacy: PrivacyPolicy | None = None

    @model_validator(mode="before")
    @classmethod
    def _store_by_default(cls, data: Any) -> Any:
        # Validated like a written `store: {}`, so its path resolves beside the pipeline file.
        if isinstance(data, dict) and data.get("store", True) in (True, None):
            data = {**data, "store": {}}
        return data

    @model_validator(mode="after")
    def _outbox_needs_store(self) -> PipelineSpec:
        if self.outbox is not None and self.store is False:
            raise ValueError("outbox: the outbox lives in the store; remove `store: false`")
        return self

    def source_names(self) -> list[str]:
        return [s.name or f"{s.type}{i}" for i, s in enumerate(self.sources)]

    def sink_names(self) -> list[str]:
        return [s.name or s.type for s in self.sinks]


# --- step 1: YAML → PipelineSpec -----------------------------------------------------------------


def load_spec(path: str | Path, *, outputs: Path | None = None) -> PipelineSpec:
    """Read and validate a pipeline file; :class:`ConfigError` lists every problem found.

    Relative inputs resolve against the file's folder; relative outputs (the
    store, files that sinks write) against ``outputs`` when it is given.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such pipeline file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}: not valid YAML: {where}{problem}") from exc
    except RecursionError:  # PyYAML composes recursively: a hostile file can nest past the stack
        raise ConfigError(f"{path}: the YAML is nested too deeply to read") from None
    return parse_spec(data, base=path.parent.resolve(), origin=str(path), outputs=outputs)


def parse_spec(
    data: object, *, base: Path, origin: str = "pipeline", outputs: Path | None = None
) -> PipelineSpec:
    """Validate already-parsed YAML/JSON ``data``; relative paths resolve against ``base``
    (outputs against ``outputs`` when given)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: a pipeline is a mapping of keys, got {type(data).__name__}")
    try:
        context: dict[str, Path] = {"base": base}
        if outputs is not None:
            context["outputs"] = outputs.resolve()
        return PipelineSpec.model_validate(data, context=context)
    except UnicodeError as exc:  # YAML's "\ud800" escape makes a string no path or file can hold
        raise ConfigError(
            f'{origin}: text that is not valid Unicode (a lone surrogate such as "\\ud800"?): {exc}'
        ) from exc
    except ValidationError as exc:
        problems = [_explain(error, data) for error in exc.errors()]
        raise ConfigError(
            f"{origin}: " + "\n".join(problems)
            if len(problems) == 1
            else f"{origin}: {len(problems)} problems:\n  " + "\n  ".join(problems)
        ) from exc


def _explain(error: Mapping[str, Any], data: object) -> str:
    """One pydantic error as ``key.path[i]: what is wrong (got ...)``."""
    parts: list[str] = []
    node = data
    for part in error["loc"]:
        if isinstance(part, int):
            parts.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # the discriminated union's tag, not a key the user wrote
        if part.startswith("function-") or part in ("str", "bool", "literal['false']"):
            continue  # pydantic's name for a union member
        parts.append(("." if parts else "") + part)
        node = node.get(part) if isinstance(node, dict) else None
    where = "".join(parts) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        message = f"unknown key {_last_key(error['loc'])!r}"
        return f"{where}: {message}"
    if kind == "union_tag_invalid":
        ctx = error.get("ctx", {})
        return f"{where}: unknown type {ctx.get('tag')!r}; choose one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"{where}: missing `type:` (which kind of step or source this is)"
    if kind == "missing":
        return f"{where}: required, but missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(got, dict | list):
        message += f", got {got!r}"
    return f"{where}: {message}"


def _last_key(loc: Sequence[object]) -> str:
    return str(loc[-1]) if loc else ""


# --- step 2: PipelineSpec → Plan (the pieces fit) ----------------------------------------------------


@dataclass
class Plan:
    """A checked pipeline: the spec, its open model, the rules, what results will hold."""

    spec: PipelineSpec
    model: OpenedModel
    rules: list[Rule]
    produced: frozenset[str]
    arrival: dict[str, ArraySpec]  # per source: what reaches the model
    #: The effective egress policy (own and fleet default merged), None when there is none.
    egress: Egress | None = None
    store_key: DeviceKey | None = None  # the store is encrypted with it (store.encrypt)

    @property
    def input(self) -> TensorSpec:
        return self.model.engine.signature.inputs[0]


def plan(
    spec: PipelineSpec,
    *,
    fleet_policy: PrivacyPolicy | None = None,
    keys: KeySource | None = None,
    read: ModelReader | None = None,
) -> Plan:
    """Open the model and check that sources, stages, rules and sinks fit together.

    The egress policy is the pipeline's ``privacy:`` made stricter by
    ``fleet_policy``, else by the fleet default the agent names in
    ``$FOGLINE_FLEET_POLICY``; a sink or step that would send what it forbids
    is refused (:class:`~fogline.errors.PolicyError`). With ``store.encrypt``,
    the device key comes from ``keys`` (default: the environment) and is tried
    on the store when it is already there.

    A model file sealed with the device key (as the agent keeps them) is
    opened in memory with the key from ``keys``, loaded only then; ``read``
    replaces that reader (:data:`~fogline.model.ModelReader`).
    """
    key = store_key(spec, keys)  # before the model is opened: a missing key is said first
    if read is None:
        from fogline.security import KeySource, SealedFiles

        read = SealedFiles(keys or KeySource())
    fleet = fleet_policy if fleet_policy is not None else fleet_policy_from_env()
    m = spec.model
    if m.online is not None:
        spec, opened = open_online_model(spec)
    elif m.variants is not None:
        assert m.policy is not None  # the spec has both or neither
        check_policy(m.policy)
        opened = open_variants(
            m.variants,
            backend=m.backend,
            threads=m.threads,
            providers=_tuple(m.providers),
            read=read,
        )
    else:
        assert m.path is not None  # the spec has one of the two
        try:
            opened = open_model(
                m.path,
                backend=m.backend,
                threads=m.threads,
                providers=_tuple(m.providers),
                read=read,
            )
        except FoglineError as exc:
            raise ConfigError(f"model.path: {exc}") from exc
    if m.name is not None or m.version is not None:
        opened = dataclasses.replace(
            opened, name=m.name or opened.name, version=m.version or opened.version
        )
    try:
        return dataclasses.replace(_check(spec, opened, fleet, keys), store_key=key)
    except BaseException:
        opened.engine.close()
        raise


def _check(
    spec: PipelineSpec,
    opened: OpenedModel,
    fleet: PrivacyPolicy | None,
    keys: KeySource | None = None,
) -> Plan:
    signature = opened.engine.signature
    if len(signature.inputs) != 1:
        names = ", ".join(signature.input_names)
        raise ConfigError(
            f"model.path: the model takes {len(signature.inputs)} inputs ({names}); "
            "pipelines feed one input per item"
        )
    wanted = signature.inputs[0]
    steps: list[tuple[str, Sequence[SourceSpec | PreprocessSpec]]] = [
        ("sources", spec.sources),
        ("preprocess", spec.preprocess),
    ]
    for section, specs in steps:
        for index, part in enumerate(specs):
            for module in part.needs:
                _guard(f"{section}[{index}] ({part.type})", optional, module)
    arrival: dict[str, ArraySpec] = {}
    for index, (source, name) in enumerate(zip(spec.sources, spec.source_names(), strict=True)):
        data = _guard(f"sources[{index}]", source.output)
        for step, stage in enumerate(spec.preprocess):
            data = _guard(f"preprocess[{step}] ({stage.type})", stage.output, data)
        _fits(data, wanted, f"sources[{index}] ({name})", bool(spec.preprocess))
        arrival[name] = data
    produced = frozenset(signature.output_names) if not spec.postprocess else frozenset()
    for step, post in enumerate(spec.postprocess):
        produced = _guard(f"postprocess[{step}] ({post.type})", post.check, signature, produced)
    known = produced | BASE_NAMES
    sink_names = spec.sink_names()
    duplicates = {n for n in sink_names if sink_names.count(n) > 1}
    if duplicates:
        raise ConfigError(
            f"sinks: two sinks are named {sorted(duplicates)[0]!r}; give each a `name:`"
        )
    rules = []
    for index, rule in enumerate(spec.rules):
        condition = Condition(rule.when)
        _guard(f"rules[{index}].when", condition.check, known)
        for target in rule.then:
            if target not in sink_names:
                hint = difflib.get_close_matches(target, sink_names, 1)
                also = (
                    f"; did you mean {hint[0]!r}?"
                    if hint
                    else f"; sinks: {', '.join(sink_names) or 'none'}"
                )
                raise ConfigError(f"rules[{index}].then: no sink named {target!r}{also}")
        rules.append(Rule(rule.name, condition, tuple(rule.then)))
    rule_names = frozenset(rule.name for rule in spec.rules)
    fields = known | {"rules", "model_version"} | rule_names
    for index, sink in enumerate(spec.sinks):
        if sink.when is not None:
            _guard(f"sinks[{index}].when", Condition(sink.when).check, fields)
        unknown = fields_of(sink) - fields
        if unknown:
            raise ConfigError(
                f"sinks[{index}]: the template uses {', '.join(sorted(unknown))}, which no result "
                f"has (results have: {', '.join(sorted(fields))})"
            )
    if spec.store is not False and isinstance(spec.store.sync, str):
        _guard("store.sync", Condition(spec.store.sync).check, fields)
    if spec.labels is not None:
        stdin = any(source.type == "stdin" for source in spec.sources)
        check_labels(spec.labels, fields, stdin, spec.store is not False)
    if spec.outbox is not None:
        unknown = fields_of(spec.outbox.transport) - fields
        if unknown:
            raise ConfigError(
                f"outbox.transport: the template uses {', '.join(sorted(unknown))}, "
                "which no result has"
            )
    check_capture(spec, signature, fields)
    egress = check_privacy(spec, signature, frozenset(fields), fleet, keys)
    probes = [(f"sources[{i}]", s.probe) for i, s in enumerate(spec.sources)]
    probes += [(f"sinks[{i}]", s.probe) for i, s in enumerate(spec.sinks)]
    for where, probe in probes:  # what only this machine can tell: a zmq port to bind is free
        _guard(where, probe)
    return Plan(spec, opened, rules, fields, arrival, egress)


def _guard(where: str, call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _fits(data: ArraySpec, wanted: TensorSpec, where: str, has_steps: bool) -> None:
    """Raise unless ``data`` is what the model's input takes for one item; say how to fix it."""
    item = TensorSpec(wanted.name, wanted.dtype, wanted.shape[1:]) if wanted.shape else wanted
    fixed = all(isinstance(d, int) for d in item.shape)
    hints: list[str] = []
    wrong = False
    if data.rank is not None and data.rank != item.rank:
        wrong = True
        target = f" with `shape: {list(item.shape)}`" if fixed else ""
        hints.append(f"add a `reshape` step{target}")
    elif data.shape is not None:
        if data.rank == 3 and data.layout == "HWC" and _channels_first(item):
            wrong = True
            hints.append("add a `layout` step with `to: chw`")
            have: tuple[int | None, ...] = (data.shape[2], data.shape[0], data.shape[1])
        else:
            have = data.shape
        unfixed = False
        for have_dim, need in zip(have, item.shape, strict=True):
            if isinstance(need, int) and have_dim is None:
                wrong = unfixed = True
            elif isinstance(need, int) and have_dim != need:
                wrong = True
        if unfixed:
            hints.append("fix the size with a `resize`, `letterbox` or `crop` step")
        if data.rank == 3 and data.layout is not None:
            channels = have[0] if _channels_first(item) else have[-1]
            need_channels = item.shape[0] if _channels_first(item) else item.shape[-1]
            if channels == 3 and need_channels == 1:
                hints.append("make it one channel with `colour` `to: gray`")
    if data.dtype is not None and data.dtype != item.dtype:
        wrong = True
        step = "`normalize`" if data.dtype == "uint8" else "`cast`"
        hints.append(f"add a {step} step (to {item.dtype})")
    if wrong:
        made = "preprocessing ends with" if has_steps else "the source gives"
        fix = f"; {'; '.join(hints)}" if hints else ""
        raise ConfigError(
            f"{where}: the model's input {wanted.name!r} takes {_shape_text(item.shape)} "
            f"{item.dtype} per item, but {made} {data.describe()}{fix}"
        )


def _channels_first(item: TensorSpec) -> bool:
    first, last = item.shape[0], item.shape[-1]
    return first in (1, 3, 4) and last not in (1, 3, 4)


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
