"""The kinds of release the agent runs, one module each, behind one interface.

A kind (:class:`ReleaseKind`) opens a release's models for the health check
(:func:`check_release`), says which child process runs it, and reads that
child's metrics. This package is the only place the agent touches the data
plane (``fogline.model``, ``fogline.pipeline``, ``fogline.serve``). The names
are those of :data:`fogline.security.KINDS`, which says what a release of
each kind contains; a new kind is one new module here, registered in
:data:`KINDS`. A ``learner`` opens no model and runs no child: it declares
what the device trains in federated rounds (``learner.yaml``).

>>> sorted(KINDS)
['learner', 'model', 'pipeline', 'serve']
"""

from collections.abc import Mapping
from types import MappingProxyType

from fogline.errors import ConfigError
from fogline.fleet.agent.kinds._health import HealthReport, check_release
from fogline.fleet.agent.kinds._kind import ReleaseKind
from fogline.fleet.agent.kinds.learner import (
    Eligibility,
    FinetuneSection,
    LearnerKind,
    LearnerSpec,
    load_learner,
)
from fogline.fleet.agent.kinds.model import ModelKind
from fogline.fleet.agent.kinds.pipeline import PipelineKind
from fogline.fleet.agent.kinds.serve import ServeKind

#: Every kind the agent runs, by name.
KINDS: Mapping[str, ReleaseKind] = MappingProxyType(
    {kind.name: kind for kind in (LearnerKind(), ModelKind(), PipelineKind(), ServeKind())}
)


def kind_for(name: str) -> ReleaseKind:
    """The kind called ``name`` (a release document's ``kind``); ConfigError for another name.

    >>> kind_for("serve").name
    'serve'
    >>> kind_for("binary")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: unknown release kind 'binary'; one of learner, model, pipeline, serve
    """
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown release kind {name!r}; one of {', '.join(KINDS)}") from None


__all__ = [
    "KINDS",
    "Eligibility",
    "FinetuneSection",
    "HealthReport",
    "LearnerKind",
    "LearnerSpec",
    "ModelKind",
    "PipelineKind",
    "ReleaseKind",
    "ServeKind",
    "check_release",
    "kind_for",
    "load_learner",
]
