"""The pipeline's MQTT topics: templates filled from a result, checked against its fields."""

from __future__ import annotations

import pytest

from fogline.errors import ConfigError
from fogline.pipeline._mqtt import RESULT_FIELDS, result_topic
from fogline.pipeline.sinks._mqtt import MqttSinkSpec
from fogline.store import Result
from fogline.transport.mqtt import TopicTemplate


def test_template_fields_are_checked_against_what_results_carry() -> None:
    template = TopicTemplate("site/{source}/{label}")
    template.check(RESULT_FIELDS | {"label"})
    with pytest.raises(ConfigError, match=r"\{label\}"):
        template.check(RESULT_FIELDS)
    spec = MqttSinkSpec(url="mqtt://b", topic="site/{source}/{label}")
    assert spec.fields() == {"source", "label"}


def test_template_for_a_result_uses_outputs_and_result_fields() -> None:
    result = Result("cam0", 4, 0.0, "digits", "3", {"label": "7", "source": "shadowed"})
    topic = result_topic(TopicTemplate("{model}/{source}/{label}"), result)
    assert str(topic) == "digits/cam0/7"
    with pytest.raises(ValueError, match="needs"):
        result_topic(TopicTemplate("{missing}"), result)
