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
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fogline.errors import ConfigError
from fogline.fleet.agent.kinds._kind import ReleaseKind
from fogline.model import Engine

#: A ``module:function`` reference, as tasks are named everywhere.
FUNCTION_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"


class Eligibility(BaseModel):
    """When the device may train: CPU not busier than ``max_cpu_percent``, on mains power."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_cpu_percent: float = Field(default=90.0, ge=0, le=100)
    require_mains: bool = True


class LearnerSpec(BaseModel):
    """``learner.yaml``, validated.

    >>> spec = LearnerSpec(task="fogline.examples:digits_task",
    ...                    data="fogline.examples:digits_device_data", data_args={"clients": 3})
    >>> spec.epochs, spec.eligibility.max_cpu_percent, spec.eligibility.require_mains
    (1, 90.0, True)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(pattern=FUNCTION_PATTERN)
    data: str = Field(pattern=FUNCTION_PATTERN)
    data_args: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(default=1, ge=1)
    eligibility: Eligibility = Field(default_factory=Eligibility)


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

    def open_engines(self, entry: Path) -> list[tuple[str, Engine]]:
        spec = load_learner(entry)
        _check_module(spec.task, "task", entry)
        _check_module(spec.data, "data", entry)
        return []
