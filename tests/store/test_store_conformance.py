"""The results store's contract, held by every configuration of it.

The configurations are generated: each outbox policy in ``OUTBOX_POLICIES``
times a retention (keep all, by rows, by age), each on a fresh file and on a
file a previous session wrote, closed and left with a pending message. The
same checks run against each: what ``add`` returns is durable and reads back
equal, ``sync`` results are queued in the same transaction, delivered ones
leave the outbox once, retention never deletes what is still to be sent, a
full outbox does what its policy says and counts it, and the counters always
reconcile (``produced = delivered + pending + dropped``).

(tests/store/test_store.py and test_outbox.py hold the cases of one
configuration: errors at the boundary, the sender, threads, migration.)
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fogline.errors import OutboxFull, StoreError
from fogline.store import (
    OUTBOX_POLICIES,
    OutboxMessage,
    OutboxPolicy,
    Record,
    Result,
    ResultStore,
    Retention,
)

#: Every configuration's outbox holds this many messages.


def result_id(message: OutboxMessage) -> int:
    """The store id of the result a message carries (its envelope's ``result_id``)."""
    return int(json.loads(message.payload)["result_id"])


def carried(message: OutboxMessage) -> Result:
    """The result a message carries (its envelope's ``result``)."""
    return Result.from_dict(json.loads(message.payload)["result"])


LIMIT = 8
#: "Now" for retention by age; results are captured up to two hours before it.
NOW = 1_700_100_000.0
RETENTIONS = {
    "keep-all": Retention(),
    "by-rows": Retention(max_rows=2),
    "by-age": Retention(max_age_s=3600),
}


@dataclass(frozen=True)
class Config:
    policy: OutboxPolicy
    retention: Retention
    reopened: bool  # a previous session left results and one pending message

    def open(self, path: Path) -> ResultStore:
        return ResultStore(
            path, outbox_limit=LIMIT, outbox_policy=self.policy, retention=self.retention
        )


CONFIGS = {
    f"{policy}-{name}-{'reopened' if reopened else 'fresh'}": Config(policy, retention, reopened)
    for policy, (name, retention), reopened in itertools.product(
        OUTBOX_POLICIES, RETENTIONS.items(), (False, True)
    )
}


@dataclass
class Results:
    """Makes results with every field set, unicode included; sequences count up."""

    count: itertools.count[int] = field(default_factory=itertools.count)

    def __call__(self, sync: bool = False, age: float = 0.0, **outputs: Any) -> Result:
        n = next(self.count)
        return Result(
            "caméra-ü" if n % 2 else "cam-0",
            n,
            NOW - age,
            "digits",
            "3.1-β",
            {"label": n % 10, "text": "雪 ☃", "boxes": [[n, 0.5]], "none": None, **outputs},
            sync=sync,
            position=f"clip 📹.avi#frame {n}" if n % 3 else None,
        )


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest) -> Config:
    return CONFIGS[request.param]


@pytest.fixture
def make() -> Results:
    return Results()


@pytest.fixture
def store(config: Config, tmp_path: Path, make: Results) -> Iterator[ResultStore]:
    path = tmp_path / "results.db"
    if config.reopened:
        with config.open(path) as earlier:
            earlier.add([make(age=7200), make(sync=True, age=7200), make(age=10)])
    opened = config.open(path)
    yield opened
    opened.close()


def reopen(store: ResultStore, config: Config) -> ResultStore:
    store.close()
    return config.open(store.path)


def everything(store: ResultStore) -> list[Record]:
    return store.query(limit=1_000_000)


def assert_reconciles(store: ResultStore) -> None:
    stats = store.stats()
    assert stats.produced == stats.delivered + stats.pending + stats.dropped
    assert stats.pending == len(store.pending(1_000_000)) <= LIMIT


def test_what_add_returns_is_durable_and_reads_back_equal(
    store: ResultStore, config: Config, make: Results
) -> None:
    # Prepare
    earlier = everything(store)
    batch = [make(), make(sync=True), make(age=60), make(sync=True, extra={"ключ": [1.5, -2]})]
    # Execute
    ids = store.add(batch)
    store = reopen(store, config)
    # Assert
    assert ids == sorted(ids) and len(set(ids)) == len(batch)
    assert all(i > r.id for i in ids for r in earlier)
    assert [store.get(i) for i in ids] == [Record(i, r) for i, r in zip(ids, batch, strict=True)]
    assert everything(store) == [*earlier, *(Record(i, r) for i, r in zip(ids, batch, strict=True))]
    assert [r.result for r in store.query(source="cam-0")] == [
        r.result for r in everything(store) if r.result.source == "cam-0"
    ]
    assert_reconciles(store)
    store.close()
    store.close()  # closing twice is fine; using a closed store is not
    with pytest.raises(StoreError, match="closed"):
        store.add([make()])


def test_sync_results_are_queued_in_the_same_transaction(
    store: ResultStore, config: Config, make: Results
) -> None:
    # Prepare
    waiting = store.pending()
    produced = store.stats().produced
    batch = [make(sync=True), make(), make(sync=True), make(), make(sync=True)]
    # Execute
    ids = store.add(batch)
    with pytest.raises(StoreError, match="not JSON"):  # fails on its last result: none of it stays
        store.add([make(sync=True), make(sync=True, bad=object())])
    # Assert
    queued = store.pending()[len(waiting) :]
    assert store.pending()[: len(waiting)] == waiting
    assert [result_id(m) for m in queued] == [i for i, r in zip(ids, batch, strict=True) if r.sync]
    assert [carried(m) for m in queued] == [r for r in batch if r.sync]
    assert len({m.key for m in [*waiting, *queued]}) == len(waiting) + len(queued)
    assert all(m.attempts == 0 for m in queued)
    assert store.stats().produced == produced + 3
    assert store.count() == len(everything(store)) and everything(store)[-1].id == ids[-1]
    assert_reconciles(store)


def test_a_delivered_message_leaves_the_outbox_once_and_a_failed_one_stays(
    store: ResultStore, config: Config, make: Results
) -> None:
    # Prepare
    waiting = store.pending()
    store.add([make(sync=True) for _ in range(4)])
    messages = store.pending()[len(waiting) :]
    delivered = store.stats().delivered
    # Execute
    acked = store.mark_delivered([m.id for m in messages[:2]])
    again = store.mark_delivered([m.id for m in messages[:2]])
    attempts = store.record_failure(messages[2].id, "TransportError: broker down")
    store = reopen(store, config)
    # Assert
    assert (acked, again, attempts) == (2, 0, 1)
    left = store.pending()
    assert [(m.id, m.key, carried(m)) for m in left] == [
        (m.id, m.key, carried(m)) for m in [*waiting, *messages[2:]]
    ]
    assert [m.attempts for m in left] == [0] * len(waiting) + [1, 0]
    assert store.stats().delivered == delivered + 2
    assert store.mark_delivered([]) == 0
    assert_reconciles(store)
    store.close()


def test_retention_spares_undelivered_results(
    store: ResultStore, config: Config, make: Results
) -> None:
    # Prepare: old and new results; of the synced ones, one delivered and one still pending
    ids = store.add(
        [make(age=7200, sync=True), make(age=7000), make(age=6000, sync=True), make(), make()]
    )
    store.mark_delivered([m.id for m in store.pending() if result_id(m) == ids[2]])
    before = everything(store)
    pending = {result_id(m) for m in store.pending(1_000_000)}
    # Execute
    deleted = store.apply_retention(now=NOW)
    # Assert
    kept = [r.id for r in everything(store)]
    assert pending <= set(kept)
    assert kept == survivors(before, pending, config.retention)
    assert deleted == len(before) - len(kept)
    assert (deleted > 0) == (config.retention != Retention())  # the case does exercise it
    assert store.apply_retention(now=NOW) == 0
    assert_reconciles(store)


def survivors(records: list[Record], pending: set[int], keep: Retention) -> list[int]:
    """The ids retention keeps: age first, then the lowest ids beyond ``max_rows``; never pending."""
    alive = [r.id for r in records]
    if keep.max_age_s is not None:
        young = {r.id for r in records if r.result.captured_at >= NOW - keep.max_age_s}
        alive = [i for i in alive if i in pending or i in young]
    if keep.max_rows is not None:
        excess = max(0, len(alive) - keep.max_rows)
        gone = set([i for i in alive if i not in pending][:excess])
        alive = [i for i in alive if i not in gone]
    return alive


def test_a_full_outbox_follows_its_policy_and_counts_drops(
    store: ResultStore, config: Config, make: Results
) -> None:
    # Prepare: fill the outbox exactly
    store.add([make(sync=True) for _ in range(LIMIT - store.stats().pending)])
    full = store.pending()
    before, count = store.stats(), store.count()
    overflow = [make(sync=True), make(), make(sync=True)]
    # Execute / Assert
    if config.policy == "reject":
        with pytest.raises(OutboxFull):
            store.add(overflow)
        assert store.count() == count  # nothing of the batch
        assert store.pending() == full
        assert store.stats() == before
    elif config.policy == "drop-oldest":
        ids = store.add(overflow)
        assert store.count() == count + 3  # results stay; only outbox messages go
        assert [result_id(m) for m in store.pending()] == [
            *(result_id(m) for m in full[2:]),
            ids[0],
            ids[2],
        ]
        stats = store.stats()
        assert (stats.produced, stats.dropped) == (before.produced + 2, before.dropped + 2)
        assert store.dropped() == stats.dropped
        assert store.mark_delivered([full[0].id]) == 0  # a dropped message is not delivered too
    else:
        pytest.fail(f"say here what a full outbox does under the policy {config.policy!r}")
    assert_reconciles(store)
