"""The pipeline's side of MQTT: which fields of a result a topic template may use.

Everything else about MQTT (URLs, topics, publish, subscribe) is
:mod:`fogline.transport.mqtt`; this adapter is what ties a
:class:`~fogline.transport.mqtt.TopicTemplate` to the pipeline's
:class:`~fogline.store.Result`.

>>> from fogline.transport.mqtt import TopicTemplate
>>> TopicTemplate("site/{label}").check(RESULT_FIELDS)
Traceback (most recent call last):
...
fogline.errors.ConfigError: topic 'site/{label}' uses {label}, which is not one of: captured_at, model, model_version, sequence, source
"""

from __future__ import annotations

from fogline.store import Result
from fogline.transport.mqtt import Topic, TopicTemplate

#: The fields of a result that a topic template may always use (outputs add their own keys).
RESULT_FIELDS = frozenset({"source", "sequence", "captured_at", "model", "model_version"})


def result_fields(result: Result) -> dict[str, object]:
    """What a topic template can use: the result's outputs, then its own fields (which win)."""
    fields: dict[str, object] = dict(result.outputs)
    fields.update(
        source=result.source,
        sequence=result.sequence,
        position=result.position,
        captured_at=result.captured_at,
        model=result.model,
        model_version=result.model_version,
    )
    return fields


def result_topic(template: TopicTemplate, result: Result) -> Topic:
    """The topic for one result: its own fields (source, sequence, position, ...) and outputs."""
    return template.render(result_fields(result))
