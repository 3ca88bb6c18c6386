"""The ``learner`` kind: what a device trains in federated rounds, declared in ``learner.yaml``.

A learner release runs no process and opens no model: it tells the agent's
round participant (:mod:`fogline.fleet.agent._rounds`) which federated task
this device takes part in, where its own training data comes from and when it
may train. Its health check validates ``learner.yaml`` and finds the task's
and the data's modules without importing them (nothing heavy is loaded
until a round asks for it)::

    task: fogline.examples:digits_task        # the model, initial weights, lr, batch size
    data: fogline.examples:digits_device_data # called as data(device_id=..., **data_args) -> (X, y)
    data_args: {clients: 3}
    epochs: 1
    eligibility:
      max_cpu_percent: 90   # decline a round when the CPU was busier over the last second
      require_mains: true   # decline a round on battery power (no battery counts as mains)

The ``task`` is the same ``module:function`` that ``fogline fl simulate``
takes; a round is offered for a task, and the device trains it only through
a learner release that names that task.

A ``finetune:`` section (:class:`FinetuneSection`) makes the device
fine-tune a model it runs on its own captures and late labels, on a
schedule, and offer a candidate that passes the gate to the controller
(:mod:`fogline.fleet.agent._offer`); ``task`` and ``data`` are then optional::

    finetune:
      release: digits-monitor   # the active release whose model is fine-tuned
      model: model              # its model folder inside that release (. for a model release)
      store: results.db         # the pipeline's store, in that release's run folder
      every_s: 3600             # how often to look (and fine-tune when there is enough)
      min_labelled: 200         # labelled captures needed before anything is done
      holdout: 0.25             # the share of them held out for the gate
      original: fogline.examples:digits_eval    # as `fogline learn finetune --original`
      replay: fogline.examples:digits_train     # ... --replay (rehearsal)
      layers: last              # ... --layers (and from_torch, epochs, threads)
      min_gain: 0.02            # the gate's margins
      max_forgetting: 0.01
      canary: {min_accuracy: 0.8, bake_s: 30}   # the controller's canary of an accepted offer
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fogline.errors import ConfigError
from fogline.fleet.agent.kinds._kind import ReleaseKind
from fogline.model import Engine, ModelReader

#: A ``module:function`` reference, as tasks are named everywhere.
FUNCTION_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class Eligibility(BaseModel):
    """When the device may train: CPU not busier than ``max_cpu_percent``, on mains power."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_cpu_percent: float = Field(default=90.0, ge=0, le=100)
    require_mains: bool = True


class CanaryCriteria(BaseModel):
    """How the controller rolls an accepted candidate out: a canary with these criteria."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    bake_s: float = Field(default=30.0, ge=0)


class FinetuneSection(BaseModel):
    """``finetune:``: what to fine-tune on which captures, how often, behind which gate.

    >>> FinetuneSection(release="digits-monitor", store="results.db").min_labelled
    200
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    release: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    model: str = "."
    store: str = Field(min_length=1)
    every_s: float = Field(default=3600.0, gt=0)
    min_labelled: int = Field(default=200, ge=2)
    holdout: float = Field(default=0.25, gt=0, lt=1)
    original: str | None = None
    replay: str | None = None
    layers: Literal["last", "all"] = "last"
    from_torch: str | None = Field(default=None, pattern=FUNCTION_PATTERN)
    epochs: int = Field(default=20, ge=1)
    threads: int = Field(default=1, ge=1)
    nice: int = Field(default=10, ge=0, le=19)
    timeout_s: float = Field(default=3600.0, gt=0)
    min_gain: float = Field(default=0.02, ge=0, le=1)
    max_forgetting: float = Field(default=0.01, ge=0, le=1)
    canary: CanaryCriteria = Field(default_factory=CanaryCriteria)

    @field_validator("model", "store")
    @classmethod
    def _inside(cls, value: str) -> str:
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError("a relative path that stays inside its folder")
        return value


class LearnerSpec(BaseModel):
    """``learner.yaml``, validated.

    >>> spec = LearnerSpec(task="fogline.examples:digits_task",
    ...                    data="fogline.examples:digits_device_data", data_args={"clients": 3})
    >>> spec.epochs, spec.eligibility.max_cpu_percent, spec.eligibility.require_mains
    (1, 90.0, True)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str | None = Field(default=None, pattern=FUNCTION_PATTERN)
    data: str | None = Field(default=None, pattern=FUNCTION_PATTERN)
    data_args: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(default=1, ge=1)
    eligibility: Eligibility = Field(default_factory=Eligibility)
    finetune: FinetuneSection | None = None

    @model_validator(mode="after")
    def _something(self) -> LearnerSpec:
        if (self.task is None) != (self.data is None):
            raise ValueError("'task' and 'data' go together (a federated task and its data)")
        if self.task is None and self.finetune is None:
            raise ValueError("a learner names a federated 'task' and 'data', or a 'finetune:'")
        return self


def load_learner(entry: Path) -> LearnerSpec:
    """Read and validate ``learner.yaml`` at ``entry``; a :class:`ConfigError` naming the bad key.

    >>> load_learner(Path("/nowhere/learner.yaml"))
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: /nowhere/learner.yaml: cannot read it: No such file or directory
    """
    try:
        text = Path(entry).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"{entry}: cannot read it: {why}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{entry}: not YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{entry}: a learner spec is a mapping with 'task' and 'data', not {type(raw).__name__}"
        )
    try:
        return LearnerSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "learner.yaml"
        value = "" if first["type"] == "missing" else f" (got {first.get('input')!r})"
        raise ConfigError(f"{entry}: {where}: {first['msg']}{value}") from None


def _check_module(spec: str, key: str, entry: Path) -> None:
    """The module of ``spec`` is installed (found, not imported; its parent packages are)."""
    module = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ConfigError(f"{entry}: {key}: module {module!r} is not installed on this device")


class LearnerKind(ReleaseKind):
    """A federated learner: ``learner.yaml`` is checked; the agent trains when a round asks.

    >>> LearnerKind().child(Path("learner.yaml"), cwd=Path("/tmp")) is None
    True
    """

    name: ClassVar[str] = "learner"

    def open_engines(
        self, entry: Path, read: ModelReader | None = None
    ) -> list[tuple[str, Engine]]:
        spec = load_learner(entry)
        if spec.task is not None and spec.data is not None:
            _check_module(spec.task, "task", entry)
            _check_module(spec.data, "data", entry)
        return []
