"""The controller's view of edge clusters (``Clusters``): what it keeps, forgets, refuses, marks silent."""

from __future__ import annotations

from fogline.cluster import DispatcherStats, Presence
from fogline.fleet.controller._clusters import Clusters

NODES = "fogline/cluster/line/nodes/"


def test_a_cleared_retained_presence_forgets_the_node_and_an_empty_group_goes() -> None:
    clusters = Clusters()
    clusters.receive(NODES + "a", Presence("a", "online", 2).payload(), now=1.0)
    clusters.receive(
        "fogline/cluster/line/dispatcher", DispatcherStats("running", "in", 2).payload()
    )

    clusters.receive(NODES + "a", b"", now=2.0)
    assert clusters.groups(now=2.0)[0]["nodes"] == []
    clusters.receive("fogline/cluster/line/dispatcher", b"")
    assert clusters.groups(now=2.0) == []


def test_malformed_or_mismatched_bodies_are_counted_and_other_topics_left_alone() -> None:
    clusters = Clusters()

    assert clusters.receive(NODES + "a", Presence("b", "online", 2).payload())  # names b
    assert clusters.receive(NODES + "a", b"not json")
    assert clusters.receive("fogline/cluster/line/dispatcher", b'{"window": -1}')
    assert not clusters.receive("fogline/devices/cam-1/state", b"{}")  # the fleet's, not ours
    assert not clusters.receive("fogline/cluster/line/work/a", b"{}")  # a node's work: not kept
    assert (clusters.rejected, clusters.groups()) == (3, [])


def test_a_node_not_heard_is_silent_but_an_offline_one_stays_offline() -> None:
    clusters = Clusters(silent_after=10.0)
    clusters.receive(NODES + "a", Presence("a", "online", 2, device="cam-1").payload(), now=0.0)
    clusters.receive(NODES + "b", Presence("b", "offline", 2).payload(), now=0.0)

    states = {n["node"]: n["state"] for n in clusters.groups(now=30.0)[0]["nodes"]}
    assert states == {"a": "silent", "b": "offline"}
    assert clusters.devices() == {"cam-1"}
