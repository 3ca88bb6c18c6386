"""Broker URLs, topics, topic filters (shared ones too) and topic templates validate themselves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import ConfigError
from fogline.transport.mqtt import (
    MqttMessage,
    MqttUrl,
    Topic,
    TopicFilter,
    TopicTemplate,
    json_payload,
    to_url,
)

# Topic text without the characters that MQTT gives a meaning (wildcards, NUL) or splits on.
level_text = st.text(st.characters(exclude_characters="+#/\x00", exclude_categories=("Cs",)))
levels = st.lists(level_text, min_size=1, max_size=6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mqtt://localhost", MqttUrl("localhost", 1883)),
        ("mqtt://10.0.0.2:1884", MqttUrl("10.0.0.2", 1884)),
        ("mqtts://broker.example.com", MqttUrl("broker.example.com", 8883, tls=True)),
        ("mqtt://dev:pa%3Ass@h:2000/", MqttUrl("h", 2000, False, "dev", "pa:ss")),
        ("mqtt://[::1]:1883", MqttUrl("::1", 1883)),
    ],
)
def test_url_parses(text: str, expected: MqttUrl) -> None:
    assert MqttUrl.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "tcp://h",
        "mqtt://",
        "mqtt://h:0",
        "mqtt://h:99999",
        "mqtt://h:x",
        "mqtt://h/a",
        "mqtt://h?q",
    ],
)
def test_url_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        MqttUrl.parse(text)
    with pytest.raises(ConfigError):
        to_url(text)


def test_url_keeps_password_out_of_text() -> None:
    url = MqttUrl.parse("mqtt://dev:secret@h")
    assert "secret" not in str(url) and "secret" not in repr(url)


@given(levels)
def test_topic_without_wildcards_is_valid(parts: list[str]) -> None:
    text = "/".join(parts)
    if text:
        assert Topic(text).levels == tuple(parts)
        assert str(TopicFilter(text)) == text  # every topic is also a filter matching itself


@given(levels, st.sampled_from(["+", "#", "\x00"]), st.data())
def test_topic_with_a_wildcard_or_nul_is_refused(
    parts: list[str], bad: str, data: st.DataObject
) -> None:
    text = "/".join(parts)
    at = data.draw(st.integers(0, len(text)))
    with pytest.raises(ValueError):
        Topic(text[:at] + bad + text[at:])


@given(st.lists(st.one_of(level_text, st.just("+")), min_size=1, max_size=6), st.booleans())
def test_filters_with_whole_level_wildcards_are_valid(parts: list[str], multi: bool) -> None:
    text = "/".join([*parts, "#"] if multi else parts)
    if text:
        assert TopicFilter(text).value == text


@pytest.mark.parametrize(
    "text", ["", "a/#/b", "a/b#", "a+/b", "#/x", "a\x00", "a/\ud800", "x" * 65536]
)
def test_filter_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        TopicFilter(text)


FIELDS = ("model", "model_version", "sequence", "source")


@given(st.fixed_dictionaries({name: st.text() for name in FIELDS}))
def test_template_fills_one_level_per_field(values: dict[str, str]) -> None:
    topic = TopicTemplate("fogline/{source}/{model}/{model_version}/{sequence}").render(values)
    assert len(topic.levels) == 5
    assert topic.levels[0] == "fogline"


@pytest.mark.parametrize(
    "text", ["", "a/+/{source}", "a/{source!r}", "a/{0}", "a/{x.y}", "a/{", "{x:3}"]
)
def test_template_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        TopicTemplate(text)


def test_template_fields_are_checked_against_known_names() -> None:
    template = TopicTemplate("site/{source}/{label}")
    template.check({"source", "label", "other"})
    with pytest.raises(ConfigError, match=r"\{label\}"):
        template.check({"source"})
    with pytest.raises(ValueError, match="needs"):
        template.render({"source": "cam0"})


@given(st.lists(st.one_of(level_text, st.just("+")), min_size=1, max_size=6), st.booleans())
def test_shared_subscriptions_name_their_group_and_filter(parts: list[str], multi: bool) -> None:
    inner = "/".join([*parts, "#"] if multi else parts)
    if not inner:
        return
    shared = TopicFilter.shared("workers", inner)
    assert shared.value == f"$share/workers/{inner}"
    assert (shared.group, shared.topics) == ("workers", inner)
    assert (TopicFilter(inner).group, TopicFilter(inner).topics) == (None, inner)


@pytest.mark.parametrize(
    "text", ["$share/", "$share/g", "$share/g/", "$share//a", "$share/g+/a", "$share/g/a/#/b"]
)
def test_shared_subscription_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        TopicFilter(text)


def test_messages_refuse_a_bad_qos_or_a_payload_that_is_not_bytes() -> None:
    with pytest.raises(ValueError, match="QoS"):
        MqttMessage(Topic("a"), b"", qos=3)
    with pytest.raises(ValueError, match="bytes"):
        MqttMessage(Topic("a"), "text")  # type: ignore[arg-type]


def test_json_payload_takes_what_has_tolist_and_refuses_the_rest() -> None:
    class Array:
        def tolist(self) -> list[int]:
            return [1, 2]

    assert json_payload({"x": Array()}) == b'{"x":[1,2]}'
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        json_payload(object())
