"""The cluster's topics and bodies: what a malformed one says, and that they round-trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.cluster import ClusterTopics, DispatcherStats, Done, Presence, idempotency_key
from fogline.transport.mqtt import Topic


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#", "x\x00"])
def test_a_group_is_one_topic_level(group: str):
    with pytest.raises(ValueError, match="one MQTT topic level"):
        ClusterTopics(group)


def test_node_of_names_only_nodes_and_done_topics_of_the_group():
    topics = ClusterTopics("g")
    assert topics.node_of(Topic("fogline/cluster/g/nodes/a")) == "a"
    assert topics.node_of(Topic("fogline/cluster/g/done/b")) == "b"
    assert topics.node_of(Topic("fogline/cluster/g/work/b")) is None
    assert topics.node_of(Topic("fogline/cluster/h/nodes/a")) is None


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"seq": 1, "outcome": "processed"}', "non-empty string id"),
        (b'{"id": "a", "outcome": "processed"}', "no seq"),
        (b'{"id": "a", "seq": 1, "outcome": "lost"}', "outcome must be one of"),
        (b'{"id": "a", "seq": 1, "outcome": "processed", "result": [1]}', "result must be"),
    ],
)
def test_a_malformed_done_says_what_is_wrong(payload: bytes, message: str):
    with pytest.raises(ValueError, match=message):
        Done.from_payload(payload)


def test_presence_and_stats_round_trip_and_refuse_bad_counts():
    p = Presence("n", "draining", 2, 3, 2, 1, None, 5.0, "digits", "dev-1")
    assert Presence.from_payload(p.payload()) == p
    with pytest.raises(ValueError, match="took must be a whole number"):
        Presence.from_payload(b'{"node": "n", "state": "online", "took": -1}')
    s = DispatcherStats("running", "in", 2, 1, 2, 3, 4, 5, 6)
    assert DispatcherStats.from_payload(s.payload()) == s


@given(st.text(min_size=1), st.text(min_size=1))
def test_the_result_key_depends_on_group_and_item_only(group: str, item: str):
    assert idempotency_key(group, item) == idempotency_key(group, item)
    assert idempotency_key(group, item) != idempotency_key(group + "x", item)
