"""The outbox: bounded with counted drops, retention that spares it, ordered delivery with backoff."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fogline.errors import ConfigError, OutboxFull, StoreError
from fogline.store import (
    JsonlTransport,
    OutboxMessage,
    OutboxSender,
    OutboxTransport,
    Result,
    ResultStore,
    Retention,
    read_deduplicated,
)


class ListTransport:
    """Keeps what it was sent; fails while ``failing`` is set (the network is down)."""

    def __init__(self) -> None:
        self.sent: list[OutboxMessage] = []
        self.failing = False
        self.calls = 0

    def send(self, message: OutboxMessage) -> None:
        self.calls += 1
        if self.failing:
            raise ConnectionError("network unreachable")
        self.sent.append(message)


def result_id(message: OutboxMessage) -> int:
    """The store id of the result a message carries (its envelope's ``result_id``)."""
    return int(json.loads(message.payload)["result_id"])


def carried(message: OutboxMessage) -> Result:
    """The result a message carries (its envelope's ``result``)."""
    return Result.from_dict(json.loads(message.payload)["result"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def reconciles(store: ResultStore) -> bool:
    s = store.stats()
    return s.produced == s.delivered + s.pending + s.dropped


# -- bounded outbox ---------------------------------------------------------------


def test_reject_policy_writes_nothing_of_the_batch(db_path: Path, make_result: Any) -> None:
    # Prepare
    store = ResultStore(db_path, outbox_limit=5, outbox_policy="reject")
    store.add([make_result(sync=True) for _ in range(4)])

    # Execute
    with pytest.raises(OutboxFull, match="holds 4 of 5 messages; this batch would add 2"):
        store.add([make_result(), make_result(sync=True), make_result(sync=True)])
    store.add([make_result(sync=True)])

    # Assert
    stats = store.stats()
    assert store.count() == 5
    assert (stats.produced, stats.pending, stats.dropped) == (5, 5, 0)
    store.close()


def test_drop_oldest_counts_every_drop(db_path: Path, make_result: Any) -> None:
    # Prepare
    store = ResultStore(db_path, outbox_limit=5, outbox_policy="drop-oldest")
    first = store.add([make_result(sync=True) for _ in range(4)])

    # Execute
    later = store.add([make_result(sync=True) for _ in range(3)])
    store.add([make_result(sync=True) for _ in range(7)])  # alone more than the limit

    # Assert
    stats = store.stats()
    assert (stats.produced, stats.pending, stats.dropped) == (14, 5, 9)
    assert store.dropped() == 9
    assert first[0] not in [result_id(m) for m in store.pending()]
    assert later[0] not in [result_id(m) for m in store.pending()]
    assert store.count() == 14  # results are kept; only their outbox messages went
    store.close()
    with ResultStore(db_path) as reopened:
        assert reopened.dropped() == 9  # persistent


# -- retention --------------------------------------------------------------------


def test_retention_by_age_spares_pending(db_path: Path, make_result: Any) -> None:
    # Prepare: results captured at t = 0..9, the ones at 1 and 3 still to be synced
    store = ResultStore(db_path, retention=Retention(max_age_s=5))
    ids = store.add([make_result(captured_at=float(t), sync=t in (1, 3)) for t in range(10)])

    # Execute
    deleted = store.apply_retention(now=10.0)

    # Assert: older than 5 s is t < 5; t = 1 and 3 are spared
    assert deleted == 3
    assert [r.id for r in store.query()] == [ids[1], ids[3], *ids[5:]]
    store.close()


def test_retention_by_rows_spares_pending(db_path: Path, make_result: Any) -> None:
    # Prepare
    store = ResultStore(db_path, retention=Retention(max_rows=4))
    ids = store.add([make_result(sync=i == 0) for i in range(10)])

    # Execute
    deleted = store.apply_retention()

    # Assert: the first stored go first, the pending one stays
    assert deleted == 6
    assert [r.id for r in store.query()] == [ids[0], *ids[7:]]
    assert store.apply_retention() == 0
    store.close()


def test_retention_after_delivery(db_path: Path, make_result: Any) -> None:
    store = ResultStore(db_path, retention=Retention(max_rows=0))
    store.add([make_result(sync=True) for _ in range(3)])
    assert store.apply_retention() == 0
    OutboxSender(store, ListTransport()).deliver_once()
    assert store.apply_retention() == 3
    assert store.count() == 0
    store.close()


# -- the sender -------------------------------------------------------------------


def test_sender_delivers_in_order(store: ResultStore, make_result: Any) -> None:
    # Prepare
    ids = store.add([make_result(sync=True) for _ in range(7)])
    transport = ListTransport()
    sender = OutboxSender(store, transport, batch=3)

    # Execute
    rounds = [sender.deliver_once() for _ in range(4)]

    # Assert
    assert rounds == [3, 3, 1, 0]
    assert [result_id(m) for m in transport.sent] == ids
    assert len({m.key for m in transport.sent}) == 7
    assert store.stats().delivered == 7 and store.stats().pending == 0
    assert isinstance(transport, OutboxTransport)


def test_a_gate_that_says_no_keeps_everything_pending_in_order(
    store: ResultStore, make_result: Any
) -> None:
    # Prepare: a gate (a deferral policy, say) that says no, then yes
    ids = store.add([make_result(sync=True) for _ in range(5)])
    transport = ListTransport()
    asked: list[bool] = []
    allowed = False

    def gate() -> tuple[bool, str]:
        asked.append(allowed)
        return allowed, "allowed: now" if allowed else "waiting: not yet"

    sender = OutboxSender(store, transport, batch=3, gate=gate)

    # Execute
    held = [sender.deliver_once() for _ in range(2)]
    pending, calls = store.stats().pending, transport.calls
    allowed = True
    rounds = [sender.deliver_once() for _ in range(3)]

    # Assert
    assert held == [0, 0] and pending == 5 and calls == 0
    assert rounds == [3, 2, 0]
    assert [result_id(m) for m in transport.sent] == ids
    assert asked == [False, False, True, True, True]


def test_sender_backs_off_exponentially(store: ResultStore, make_result: Any) -> None:
    # Prepare
    ids = store.add([make_result(sync=True) for _ in range(3)])
    transport, clock = ListTransport(), FakeClock()
    sender = OutboxSender(store, transport, backoff_initial=1.0, backoff_max=4.0, clock=clock)
    transport.failing = True

    # Execute / Assert: each failure doubles the wait, up to the maximum
    waits = []
    for _ in range(4):
        assert sender.deliver_once() == 0
        waits.append(sender.next_attempt - clock.now)
        calls = transport.calls
        clock.now += waits[-1] - 0.01
        assert sender.deliver_once() == 0 and transport.calls == calls  # still waiting
        clock.now += 0.01
    assert waits == [1.0, 2.0, 4.0, 4.0]
    head = store.pending(1)[0]
    assert head.attempts == 4 and result_id(head) == ids[0]
    assert isinstance(sender.last_error, ConnectionError)

    # Execute: the network is back
    transport.failing = False
    delivered = sender.deliver_once()

    # Assert: all of them, in order, and no more waiting
    assert delivered == 3
    assert [result_id(m) for m in transport.sent] == ids
    assert sender.deliver_once() == 0 and sender.next_attempt == float("-inf")


def test_failure_mid_round_keeps_order(store: ResultStore, make_result: Any) -> None:
    # Prepare: the transport fails on the third message only
    ids = store.add([make_result(sync=True) for _ in range(5)])

    class FlakyOnce(ListTransport):
        def send(self, message: OutboxMessage) -> None:
            self.failing = self.calls == 2
            super().send(message)

    transport, clock = FlakyOnce(), FakeClock()
    sender = OutboxSender(store, transport, clock=clock)

    # Execute
    first = sender.deliver_once()
    clock.now = sender.next_attempt
    second = sender.deliver_once()

    # Assert
    assert (first, second) == (2, 3)
    assert [result_id(m) for m in transport.sent] == ids


def test_new_sender_resumes_after_reopening(db_path: Path, make_result: Any) -> None:
    # Prepare: half delivered, then the process "restarts"
    with ResultStore(db_path) as store:
        ids = store.add([make_result(sync=True) for _ in range(6)])
        first = ListTransport()
        OutboxSender(store, first, batch=3).deliver_once()

    # Execute
    with ResultStore(db_path) as store:
        second = ListTransport()
        OutboxSender(store, second).deliver_once()
        stats = store.stats()

    # Assert
    assert [result_id(m) for m in first.sent + second.sent] == ids
    assert (stats.delivered, stats.pending) == (6, 0)


def test_run_in_a_thread(store: ResultStore, make_result: Any) -> None:
    transport = ListTransport()
    sender = OutboxSender(store, transport, poll_interval=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,))
    thread.start()
    try:
        ids = store.add([make_result(sync=True) for _ in range(20)])
        for _ in range(500):
            if store.stats().pending == 0:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert [result_id(m) for m in transport.sent] == ids


def test_bad_sender_options(store: ResultStore) -> None:
    with pytest.raises(ConfigError, match="batch"):
        OutboxSender(store, ListTransport(), batch=0)
    with pytest.raises(ConfigError, match="backoff"):
        OutboxSender(store, ListTransport(), backoff_initial=10, backoff_max=1)


# -- the receiver -----------------------------------------------------------------


def test_receiver_dedupes_redeliveries(
    tmp_path: Path, store: ResultStore, make_result: Any
) -> None:
    # Prepare: deliver, then pretend the marks were lost in a crash and deliver again
    ids = store.add([make_result(sync=True) for _ in range(4)])
    messages = store.pending()
    path = tmp_path / "received.jsonl"
    with JsonlTransport(path) as transport:
        for message in messages:
            transport.send(message)
    with path.open("a") as fh:
        fh.write('{"key": "torn')  # a crash mid-line
    with JsonlTransport(path) as transport:
        OutboxSender(store, transport).deliver_once()

    # Execute
    received = read_deduplicated(path)

    # Assert
    assert len(path.read_text().splitlines()) == 9
    assert [m["result_id"] for m in received] == ids
    assert [m["key"] for m in received] == [m.key for m in messages]
    assert received[0]["result"]["outputs"] == carried(messages[0]).outputs


# -- property: the counts always reconcile ----------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.booleans(), min_size=1, max_size=6)),
        st.tuples(st.just("deliver"), st.integers(1, 5)),
        st.tuples(st.just("fail"), st.integers(1, 5)),
        st.tuples(st.just("retain"), st.integers(0, 8)),
    ),
    max_size=25,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations, limit=st.integers(1, 8), policy=st.sampled_from(["drop-oldest", "reject"]))
def test_counts_reconcile(
    tmp_path_factory: pytest.TempPathFactory,
    make_result: Any,
    ops: list[tuple[str, Any]],
    limit: int,
    policy: str,
) -> None:
    path = tmp_path_factory.mktemp("prop") / "results.db"
    store = ResultStore(path, outbox_limit=limit, outbox_policy=policy)  # type: ignore[arg-type]
    transport, clock = ListTransport(), FakeClock()
    sender = OutboxSender(store, transport, clock=clock)
    accepted = 0
    for op, arg in ops:
        if op == "add":
            try:
                store.add([make_result(sync=flag) for flag in arg])
                accepted += sum(arg)
            except OutboxFull:
                assert policy == "reject"
        elif op in ("deliver", "fail"):
            transport.failing = op == "fail"
            sender.batch = arg
            clock.now = max(clock.now, sender.next_attempt)
            sender.deliver_once()
        else:
            store.retention = Retention(max_rows=arg)
            store.apply_retention()
        stats = store.stats()
        assert reconciles(store)
        assert stats.produced == accepted
        assert stats.pending <= limit
        assert stats.delivered == len(transport.sent) == len({m.key for m in transport.sent})
        assert stats.pending == len(store.pending(10_000))
        if policy == "reject":
            assert stats.dropped == 0
    store.close()


# -- plain messages -------------------------------------------------------------------


def test_plain_messages_queue_between_results_and_go_in_order(
    store: ResultStore, make_result: Any
) -> None:
    # Prepare
    (first,) = store.add([make_result(sync=True)])
    queued = store.queue([("site/a", b"\x00binary"), ("site/b", b'{"n":1}')])
    (last,) = store.add([make_result(sync=True)])
    transport = ListTransport()

    # Execute
    OutboxSender(store, transport).deliver_once()

    # Assert: one order for both kinds; plain ones as given, each under its own key
    assert [m.topic for m in transport.sent][1:3] == ["site/a", "site/b"]
    assert transport.sent[1:3] == queued
    assert [m.payload for m in queued] == [b"\x00binary", b'{"n":1}']
    assert [result_id(m) for m in (transport.sent[0], transport.sent[3])] == [first, last]
    assert len({m.key for m in transport.sent}) == 4
    assert store.stats().delivered == store.stats().produced == 4 and reconciles(store)


def test_queue_follows_the_outbox_policy(db_path: Path) -> None:
    with ResultStore(db_path, outbox_limit=3, outbox_policy="reject") as store:
        store.queue([("t", b"1"), ("t", b"2")])
        with pytest.raises(OutboxFull):
            store.queue([("t", b"3"), ("t", b"4")])
        assert [m.payload for m in store.pending()] == [b"1", b"2"]
    with ResultStore(db_path.with_name("drop.db"), outbox_limit=3) as store:
        store.queue([("t", str(i).encode()) for i in range(5)])
        assert [m.payload for m in store.pending()] == [b"2", b"3", b"4"]
        assert store.stats().dropped == 2 and reconciles(store)


def test_queue_refuses_what_is_not_a_message(store: ResultStore) -> None:
    with pytest.raises(ValueError, match="bytes"):
        store.queue([("t", "text")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="topic"):
        store.queue([("", b"{}")])
    assert store.pending() == [] and store.stats().produced == 0


def test_a_results_payload_is_the_envelope_the_transports_always_sent(store: ResultStore) -> None:
    # Prepare: outputs given unsorted, a numpy-like value; the bytes are pinned on purpose
    class Scalar:
        def tolist(self) -> float:
            return 0.5

    result = Result("cam0", 2, 1.25, "digits", "3", {"b": Scalar(), "a": [1]}, True, "x.png")

    # Execute
    (id_,) = store.add([result])
    (message,) = store.pending()

    # Assert
    assert message.topic == "fogline/cam0/outbox"
    assert (
        message.payload
        == (
            f'{{"key":"{message.key}","result_id":{id_},"result":{{"source":"cam0","sequence":2,'
            '"position":"x.png","captured_at":1.25,"model":"digits","model_version":"3",'
            '"outputs":{"a":[1],"b":0.5},"sync":true}}'
        ).encode()
    )


def test_a_result_the_encoder_cannot_make_a_message_of_stores_nothing(
    db_path: Path, make_result: Any
) -> None:
    def refuse(record: Any, key: str) -> tuple[str, bytes]:
        raise ValueError("no topic for this one")

    with ResultStore(db_path, encode=refuse) as store:
        with pytest.raises(StoreError, match="no topic for this one"):
            store.add([make_result(), make_result(sync=True)])
        assert store.count() == 0 and store.pending() == []
