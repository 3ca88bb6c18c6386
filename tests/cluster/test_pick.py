"""The dispatcher's choice of node: soonest expected finish among free credits, or wait."""

from __future__ import annotations

from fogline.cluster import Presence
from fogline.cluster._dispatcher import _Node, pick


def nodes(**spec: tuple[int, float | None]) -> dict[str, _Node]:
    """name=(items held, seconds per item or None) for nodes of window 2."""
    made = {}
    for name, (held, per_item) in spec.items():
        node = _Node(Presence(name, "online", window=2), seen=0.0, per_item=per_item)
        node.outstanding = set(range(held))
        made[name] = node
    return made


def test_the_node_that_finishes_soonest_not_the_least_loaded():
    # fast holds 1 (done in 2 x 0.01 s), slow holds none (done in 0.05 s)
    assert pick(nodes(fast=(1, 0.01), slow=(0, 0.05)), 2, waiting=1, waited=0.0) == "fast"
    assert pick(nodes(fast=(1, 0.04), slow=(0, 0.05)), 2, waiting=1, waited=0.0) == "slow"


def test_a_slow_free_node_waits_for_a_busy_fast_one_but_not_for_ever():
    cluster = nodes(fast=(2, 0.01), slow=(0, 0.05))
    assert pick(cluster, 2, waiting=1, waited=0.0) is None  # fast frees up in ~0.03 s
    assert pick(cluster, 2, waiting=1, waited=0.05) == "slow"  # it would have been done
    assert pick(cluster, 2, waiting=10, waited=0.0) == "slow"  # a queue: both work


def test_an_unmeasured_node_counts_as_the_fastest_and_nothing_free_is_none():
    assert pick(nodes(fast=(1, 0.01), new=(0, None)), 2, waiting=1, waited=0.0) == "new"
    assert pick(nodes(a=(0, None), b=(1, None)), 2, waiting=1, waited=0.0) == "a"  # least loaded
    assert pick(nodes(a=(2, 0.01), b=(2, None)), 2, waiting=5, waited=9.0) is None
