"""The micro-batcher, on the real ONNX Runtime engine and the bundled digits model.

Where a test has to see batches form or hold the engine still, it wraps the
real engine in :class:`Gated`, which records what each batch held and can
make runs wait for the test; the inference itself is always ONNX Runtime's.
Timing bounds are generous on purpose: speed is for the benchmarks.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fogline.errors import (
    ConfigError,
    DeadlineExceeded,
    Dropped,
    ModelError,
    NotRunning,
    Overloaded,
    SignatureMismatch,
)
from fogline.model import (
    OVERFLOWS,
    BatcherStats,
    BatchPolicy,
    Engine,
    EngineOptions,
    Lane,
    MicroBatcher,
    Signature,
    TensorSpec,
    load_engine,
)

WAIT = 10.0  # seconds: an upper bound that only a hang reaches


@pytest.fixture(scope="module")
def engine(digits_onnx: Path) -> Iterator[Engine]:
    engine = load_engine(digits_onnx, options=EngineOptions(threads=1))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def images(eval_pixels: np.ndarray) -> np.ndarray:
    """Real digits, one item each: [n,1,8,8] float32."""
    return eval_pixels[:64]


class Gated:
    """The real engine, recording each batch, whose runs wait for ``gate`` to open."""

    def __init__(self, engine: Engine, *, open_gate: bool = True, delay_s: float = 0.0) -> None:
        self._engine = engine
        self.backend, self.precision, self.device = engine.backend, "fp32", engine.device
        self.gate = threading.Event()
        if open_gate:
            self.gate.set()
        self.running = threading.Event()
        self.delay_s = delay_s
        self.batches: list[list[int]] = []  # the tag (first pixel) of every item, per batch
        self._lock = threading.Lock()

    @property
    def signature(self) -> Signature:
        return self._engine.signature

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            self.batches.append([int(v) for v in inputs["pixels"][:, 0, 0, 0]])
        self.running.set()
        assert self.gate.wait(WAIT)
        time.sleep(self.delay_s)
        return self._engine.run(inputs)

    def close(self) -> None:
        pass

    @property
    def items_seen(self) -> list[int]:
        return [tag for batch in self.batches for tag in batch]


def tagged(tag: int) -> dict[str, np.ndarray]:
    """One item whose pixels are all ``tag``, so a batch shows which items it held."""
    return {"pixels": np.full((1, 8, 8), tag, dtype=np.float32)}


def assert_balanced(stats: BatcherStats) -> None:
    assert stats.submitted == stats.settled + stats.pending
    assert stats.completed + stats.failed == sum(k * n for k, n in stats.batch_sizes.items())
    assert stats.batches == sum(stats.batch_sizes.values())


def outcome(future: Future[dict[str, np.ndarray]]) -> str:
    error = future.exception(timeout=WAIT)
    return "ok" if error is None else type(error).__name__


# --- the policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch": 0}, "max_batch must be a whole number of at least 1"),
        ({"max_batch": 2.0}, "max_batch must be a whole number"),
        ({"queue_size": 0}, "queue_size must be"),
        ({"workers": 0}, "workers must be"),
        ({"max_wait_s": -0.001}, "max_wait_s must be a finite number"),
        ({"max_wait_s": float("inf")}, "max_wait_s must be a finite number"),
        ({"overflow": "drop-newest"}, "overflow must be one of block, drop-oldest, reject"),
        ({"max_batch": 4, "preferred_sizes": (0,)}, "between 1 and max_batch"),
        ({"max_batch": 4, "preferred_sizes": (5,)}, "between 1 and max_batch"),
    ],
)
def test_policy_rejects_bad_values(options: dict[str, object], message: str):
    with pytest.raises(ConfigError, match=message):
        BatchPolicy(**options)  # type: ignore[arg-type]


def test_policy_cuts_at_max_batch_then_preferred_then_when_due():
    policy = BatchPolicy(max_batch=8, preferred_sizes=(6, 2))
    assert policy.preferred_sizes == (2, 6)
    assert [policy.cut_size(n, due=False) for n in (0, 1, 2, 5, 6, 7, 8, 20)] == [
        0,
        0,
        2,
        2,
        6,
        6,
        8,
        8,
    ]
    assert policy.cut_size(5, due=True) == 2  # a preferred size wins over "all that wait"
    assert BatchPolicy(max_batch=8).cut_size(5, due=True) == 5


def test_a_fixed_batch_dimension_cannot_be_micro_batched(engine: Engine):
    # Prepare: the digits model as if it had been exported with batch fixed at 4
    class FixedBatch(Gated):
        @property
        def signature(self) -> Signature:
            return Signature((TensorSpec("pixels", "float32", (4, 1, 8, 8)),), ())

    # Execute / Assert
    with pytest.raises(ConfigError, match="dynamic first"):
        MicroBatcher(FixedBatch(engine), BatchPolicy(max_batch=4))


# --- results and batching --------------------------------------------------------------------


def test_outputs_equal_running_each_item_alone(engine: Engine, images: np.ndarray):
    # Prepare
    alone = [engine.run({"pixels": image[np.newaxis]})["logits"][0] for image in images]

    # Execute
    with MicroBatcher(engine, BatchPolicy(max_batch=8, max_wait_s=0.02)) as batcher:
        futures = [batcher.submit({"pixels": image}) for image in images]
        results = [future.result(WAIT) for future in futures]

    # Assert
    for result, expected in zip(results, alone, strict=True):
        assert set(result) == {"logits"}
        assert result["logits"].shape == (10,)
        np.testing.assert_allclose(result["logits"], expected, atol=1e-5)
    assert batcher.stats.completed == len(images)
    assert batcher.stats.batches < len(images)


def test_batches_form_under_concurrent_submitters_and_never_exceed_max_batch(engine: Engine):
    # Prepare: a slow engine so that items pile up while a batch runs
    gated = Gated(engine, delay_s=0.005)
    policy = BatchPolicy(max_batch=6, max_wait_s=0.002, workers=2)
    futures: list[Future[dict[str, np.ndarray]]] = []
    lock = threading.Lock()

    def submitter(batcher: MicroBatcher) -> None:
        for tag in range(25):
            future = batcher.submit(tagged(tag))
            with lock:
                futures.append(future)

    # Execute
    with MicroBatcher(gated, policy) as batcher:
        threads = [threading.Thread(target=submitter, args=(batcher,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    stats = batcher.stats

    # Assert
    sizes = [len(batch) for batch in gated.batches]
    assert max(sizes) <= 6
    assert max(sizes) > 1
    assert sum(sizes) == 100 == stats.completed
    assert stats.batch_sizes == {size: sizes.count(size) for size in set(sizes)}
    assert all(outcome(future) == "ok" for future in futures)
    assert_balanced(stats)


def test_one_item_arrives_after_max_wait(engine: Engine, images: np.ndarray):
    with MicroBatcher(engine, BatchPolicy(max_batch=8, max_wait_s=0.05)) as batcher:
        start = time.monotonic()
        result = batcher.submit({"pixels": images[0]}).result(WAIT)
        elapsed = time.monotonic() - start

    assert result["logits"].shape == (10,)
    assert 0.045 <= elapsed < WAIT  # it waited for company, then went alone
    assert batcher.stats.batch_sizes == {1: 1}


def test_idle_dispatch_sends_a_lone_item_at_once_and_batches_what_arrives_meanwhile(
    engine: Engine,
):
    # Prepare: a max wait no test would sit out; the engine holds its first batch
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=8, max_wait_s=60.0, preferred_sizes=(3,), idle_dispatch=True)

    # Execute
    with MicroBatcher(gated, policy) as batcher:
        first = batcher.submit(tagged(0))
        assert gated.running.wait(WAIT)  # cut at once: the engine was idle
        rest = [batcher.submit(tagged(tag)) for tag in (1, 2, 3)]  # arrive while it runs
        gated.gate.set()
        results = [f.result(WAIT) for f in (first, *rest)]

    # Assert
    assert len(results) == 4
    assert gated.batches == [[0], [1, 2, 3]]


def test_without_idle_dispatch_a_lone_item_waits_for_company(engine: Engine):
    gated = Gated(engine)
    policy = BatchPolicy(max_batch=8, max_wait_s=60.0, preferred_sizes=(3,))
    with MicroBatcher(gated, policy) as batcher:
        first = batcher.submit(tagged(0))
        assert not gated.running.wait(0.3)  # held for max_wait (a minute) or company
        rest = [batcher.submit(tagged(tag)) for tag in (1, 2)]
        results = [f.result(WAIT) for f in (first, *rest)]
    assert len(results) == 3
    assert gated.batches == [[0, 1, 2]]


def test_a_preferred_size_is_cut_without_waiting(engine: Engine):
    # Prepare: a max wait that no test would sit out
    gated = Gated(engine)
    policy = BatchPolicy(max_batch=8, max_wait_s=60.0, preferred_sizes=(4,))

    # Execute
    with MicroBatcher(gated, policy) as batcher:
        futures = [batcher.submit(tagged(tag)) for tag in range(4)]
        results = [future.result(WAIT) for future in futures]
        stats = batcher.stats

    # Assert
    assert len(results) == 4
    assert gated.batches == [[0, 1, 2, 3]]
    assert stats.batch_sizes == {4: 1}


# --- a full queue ----------------------------------------------------------------------------


def hold_engine(gated: Gated, batcher: MicroBatcher) -> Future[dict[str, np.ndarray]]:
    """Submit item 0 and wait until the engine is running it (behind the closed gate)."""
    first = batcher.submit(tagged(0))
    assert gated.running.wait(WAIT)
    return first


def test_drop_oldest_evicts_the_oldest_and_counts_them(engine: Engine):
    # Prepare: the engine holds item 0 while 10 more arrive at a queue of 3
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=1, max_wait_s=0.0, queue_size=3, overflow="drop-oldest")

    # Execute
    with MicroBatcher(gated, policy) as batcher:
        futures = [hold_engine(gated, batcher)]
        futures += [batcher.submit(tagged(tag)) for tag in range(1, 11)]
        during = batcher.stats
        gated.gate.set()
    stats = batcher.stats

    # Assert
    assert during.queued == 3
    assert during.dropped == 7
    outcomes = [outcome(future) for future in futures]
    assert outcomes == ["ok"] + ["Dropped"] * 7 + ["ok"] * 3
    assert gated.items_seen == [0, 8, 9, 10]
    assert stats.submitted == 11 == stats.completed + stats.dropped
    assert (stats.completed, stats.dropped, stats.pending) == (4, 7, 0)
    assert_balanced(stats)


def test_a_drop_oldest_lane_evicts_only_its_own_items(engine: Engine):
    # Prepare: the engine holds item 0; a blocking replay lane holds 2 of 4 queue slots
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=1, max_wait_s=0.0, queue_size=4)
    replay, camera = Lane("replay", 2, "block"), Lane("camera", 2, "drop-oldest")

    # Execute: the camera sends 6 frames into its 2 slots
    with MicroBatcher(gated, policy) as batcher:
        futures = [hold_engine(gated, batcher)]
        futures += [batcher.submit(tagged(tag), lane=replay) for tag in (1, 2)]
        futures += [batcher.submit(tagged(tag), lane=camera) for tag in range(10, 16)]
        during = batcher.stats
        gated.gate.set()
    stats = batcher.stats

    # Assert: the replay lost nothing; the camera kept its newest two frames
    assert (during.queued, during.dropped) == (4, 4)
    assert [outcome(f) for f in futures] == ["ok"] * 3 + ["Dropped"] * 4 + ["ok"] * 2
    assert gated.items_seen == [0, 1, 2, 14, 15]
    assert_balanced(stats)


def test_drop_newest_drops_the_item_being_submitted(engine: Engine):
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=1, max_wait_s=0.0, queue_size=8)
    lane = Lane("sensor", 1, "drop-newest")

    with MicroBatcher(gated, policy) as batcher:
        futures = [hold_engine(gated, batcher)]
        futures += [batcher.submit(tagged(tag), lane=lane) for tag in (1, 2, 3)]
        gated.gate.set()
    stats = batcher.stats

    assert [outcome(f) for f in futures] == ["ok", "ok", "Dropped", "Dropped"]
    assert gated.items_seen == [0, 1]
    assert (stats.submitted, stats.completed, stats.dropped) == (4, 2, 2)
    assert_balanced(stats)


def test_a_drop_oldest_lane_with_nothing_of_its_own_queued_drops_the_newest(engine: Engine):
    # The queue is full of another lane's items: a camera frame may not evict them
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=1, max_wait_s=0.0, queue_size=2)

    with MicroBatcher(gated, policy) as batcher:
        futures = [hold_engine(gated, batcher)]
        futures += [batcher.submit(tagged(tag), lane=Lane("replay", 4)) for tag in (1, 2)]
        futures.append(batcher.submit(tagged(3), lane=Lane("camera", 2, "drop-oldest")))
        gated.gate.set()

    assert [outcome(f) for f in futures] == ["ok", "ok", "ok", "Dropped"]
    assert_balanced(batcher.stats)


def test_a_reject_lane_raises_when_its_share_is_full(engine: Engine):
    gated = Gated(engine, open_gate=False)
    with MicroBatcher(gated, BatchPolicy(max_batch=1, max_wait_s=0.0, queue_size=8)) as batcher:
        first = hold_engine(gated, batcher)
        kept = batcher.submit(tagged(1), lane=Lane("api", 1, "reject"))
        with pytest.raises(Overloaded, match="lane 'api' is full"):
            batcher.submit(tagged(2), lane=Lane("api", 1, "reject"))
        gated.gate.set()
    assert outcome(first) == outcome(kept) == "ok"
    assert batcher.stats.rejected == 1


def test_evicting_the_oldest_does_not_restart_the_wait(engine: Engine):
    # A queue smaller than a batch, always full, its oldest item evicted by every arrival:
    # the batch must still come due max_wait after the wait began (it used to starve).
    policy = BatchPolicy(max_batch=8, max_wait_s=0.02, queue_size=2, overflow="drop-oldest")
    with MicroBatcher(engine, policy) as batcher:
        futures = []
        stop = time.monotonic() + 0.3
        while time.monotonic() < stop:
            futures.append(batcher.submit(tagged(1)))
            time.sleep(0.002)
        during = batcher.stats
    assert during.completed > 0, "no batch was cut while items kept arriving"
    assert all(outcome(f) in ("ok", "Dropped") for f in futures)
    assert_balanced(batcher.stats)


def test_queue_and_compute_time_are_summed(engine: Engine, images: np.ndarray):
    policy = BatchPolicy(max_batch=4, max_wait_s=0.01)
    with MicroBatcher(engine, policy) as batcher:
        for future in [batcher.submit({"pixels": image}) for image in images[:8]]:
            future.result(WAIT)
    stats = batcher.stats
    assert stats.compute_seconds > 0
    assert stats.queue_seconds > 0  # a lone first item waits out max_wait


def test_a_full_lane_is_cut_at_once_instead_of_waiting(engine: Engine):
    # A live lane of 2 in front of a batch of 8: waiting longer would only swap frames
    gated = Gated(engine)
    policy = BatchPolicy(max_batch=8, max_wait_s=5.0, queue_size=8)
    with MicroBatcher(gated, policy) as batcher:
        lane = Lane("cam", 2, "drop-oldest")
        started = time.monotonic()
        futures = [batcher.submit(tagged(tag), lane=lane) for tag in (1, 2)]
        assert [outcome(f) for f in futures] == ["ok", "ok"]
        took = time.monotonic() - started
    assert took < 2.5  # not the 5 s max wait
    assert gated.batches == [[1, 2]]


def test_reject_raises_overloaded_and_does_not_count_as_submitted(engine: Engine):
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=1, max_wait_s=0.0, queue_size=2, overflow="reject")

    with MicroBatcher(gated, policy) as batcher:
        futures = [
            hold_engine(gated, batcher),
            batcher.submit(tagged(1)),
            batcher.submit(tagged(2)),
        ]
        for tag in (3, 4):
            with pytest.raises(Overloaded, match="queue is full"):
                batcher.submit(tagged(tag))
        gated.gate.set()
    stats = batcher.stats

    assert [outcome(future) for future in futures] == ["ok"] * 3
    assert (stats.submitted, stats.completed, stats.rejected) == (3, 3, 2)
    assert gated.items_seen == [0, 1, 2]
    assert_balanced(stats)


def test_block_makes_submit_wait_for_room(engine: Engine):
    # Prepare: item 0 runs, items 1 and 2 fill the queue
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=1, max_wait_s=0.0, queue_size=2, overflow="block")
    late: list[Future[dict[str, np.ndarray]]] = []

    with MicroBatcher(gated, policy) as batcher:
        futures = [
            hold_engine(gated, batcher),
            batcher.submit(tagged(1)),
            batcher.submit(tagged(2)),
        ]
        blocked = threading.Thread(target=lambda: late.append(batcher.submit(tagged(3))))

        # Execute
        blocked.start()
        blocked.join(0.2)
        still_waiting = blocked.is_alive()
        gated.gate.set()
        blocked.join(WAIT)

    # Assert
    assert still_waiting
    assert not blocked.is_alive()
    assert [outcome(future) for future in [*futures, *late]] == ["ok"] * 4
    assert gated.items_seen == [0, 1, 2, 3]
    assert batcher.stats.rejected == batcher.stats.dropped == 0


# --- deadlines, cancellation and engine errors ------------------------------------------------


def test_items_past_their_deadline_are_not_computed(engine: Engine):
    # Prepare: item 0 holds the engine past item 1's deadline
    gated = Gated(engine, open_gate=False)
    policy = BatchPolicy(max_batch=4, max_wait_s=0.0)

    with MicroBatcher(gated, policy) as batcher:
        first = hold_engine(gated, batcher)
        soon = batcher.submit(tagged(1), deadline=time.monotonic() + 0.05)
        later = batcher.submit(tagged(2), deadline=time.monotonic() + 60.0)
        free = batcher.submit(tagged(3))
        gone = batcher.submit(tagged(4), deadline=time.monotonic() - 1.0)

        # Execute
        time.sleep(0.1)
        gated.gate.set()
        outcomes = [outcome(f) for f in (first, soon, later, free, gone)]
    stats = batcher.stats

    # Assert
    assert outcomes == ["ok", "DeadlineExceeded", "ok", "ok", "DeadlineExceeded"]
    with pytest.raises(DeadlineExceeded, match="deadline passed"):
        soon.result()
    assert gated.items_seen == [0, 2, 3]
    assert (stats.submitted, stats.completed, stats.expired) == (5, 3, 2)
    assert_balanced(stats)


def test_a_cancelled_future_is_not_computed(engine: Engine):
    gated = Gated(engine, open_gate=False)

    with MicroBatcher(gated, BatchPolicy(max_batch=4, max_wait_s=0.0)) as batcher:
        first = hold_engine(gated, batcher)
        dropped_by_caller = batcher.submit(tagged(1))
        kept = batcher.submit(tagged(2))
        assert dropped_by_caller.cancel()
        gated.gate.set()
        assert outcome(first) == outcome(kept) == "ok"
    stats = batcher.stats

    assert gated.items_seen == [0, 2]
    assert (stats.submitted, stats.completed, stats.cancelled) == (3, 2, 1)
    assert_balanced(stats)


def test_an_engine_error_reaches_every_future_of_the_batch(digits_onnx: Path):
    # Prepare: a real engine that has been closed, so ONNX Runtime cannot run it
    engine = load_engine(digits_onnx, options=EngineOptions(threads=1))
    engine.close()
    gated = Gated(engine)
    policy = BatchPolicy(max_batch=4, max_wait_s=60.0)

    # Execute
    with MicroBatcher(gated, policy) as batcher:
        futures = [batcher.submit(tagged(tag)) for tag in range(4)]
        errors = [future.exception(WAIT) for future in futures]
    stats = batcher.stats

    # Assert
    assert gated.batches == [[0, 1, 2, 3]]
    assert all(isinstance(error, ModelError) for error in errors)
    assert all("closed" in str(error) for error in errors)
    assert (stats.submitted, stats.failed, stats.batches) == (4, 4, 1)
    assert_balanced(stats)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (
            {"pixels": np.zeros((1, 1, 8, 8), np.float32)},
            r"shape \[1, 1, 8, 8\].*expects \[1, 8, 8\]",
        ),
        ({"pixels": np.zeros((8, 8), np.float32)}, r"shape \[8, 8\]"),
        ({"pixels": np.zeros((1, 8, 8), np.float64)}, "dtype float64.*expects float32"),
        ({}, "missing input"),
        ({"pixels": np.zeros((1, 8, 8), np.float32), "extra": np.zeros(1)}, "unknown input"),
    ],
)
def test_a_bad_item_fails_fast_and_is_not_queued(engine: Engine, item, message: str):
    with MicroBatcher(engine, BatchPolicy()) as batcher:
        with pytest.raises(SignatureMismatch, match=message):
            batcher.submit(item)
        stats = batcher.stats

    assert stats.submitted == stats.queued == 0


# --- lifecycle -------------------------------------------------------------------------------


def test_close_drains_what_is_queued(engine: Engine):
    # Prepare: a max wait long enough that only close() can cut the batch
    gated = Gated(engine)
    batcher = MicroBatcher(gated, BatchPolicy(max_batch=8, max_wait_s=60.0)).start()
    futures = [batcher.submit(tagged(tag)) for tag in range(5)]

    # Execute
    batcher.close()

    # Assert
    assert all(future.done() for future in futures)
    assert [outcome(future) for future in futures] == ["ok"] * 5
    assert gated.batches == [[0, 1, 2, 3, 4]]
    assert batcher.stats.completed == 5


def test_close_without_drain_fails_what_is_queued(engine: Engine):
    gated = Gated(engine, open_gate=False)
    batcher = MicroBatcher(gated, BatchPolicy(max_batch=1, max_wait_s=0.0)).start()
    first = hold_engine(gated, batcher)
    queued = [batcher.submit(tagged(tag)) for tag in (1, 2, 3)]

    # Execute: close while item 0 still runs, then let it finish
    closer = threading.Thread(target=batcher.close, kwargs={"drain": False})
    closer.start()
    while batcher.stats.queued:
        time.sleep(0.001)
    gated.gate.set()
    closer.join(WAIT)

    # Assert
    assert outcome(first) == "ok"
    assert [outcome(future) for future in queued] == ["NotRunning"] * 3
    with pytest.raises(NotRunning, match="without draining"):
        queued[0].result()
    stats = batcher.stats
    assert (stats.submitted, stats.completed, stats.cancelled, stats.failed) == (4, 1, 3, 0)
    assert_balanced(stats)


def test_submit_outside_the_running_state_raises(engine: Engine):
    batcher = MicroBatcher(engine, BatchPolicy())
    with pytest.raises(NotRunning, match="not started"):
        batcher.submit(tagged(0))

    with batcher:
        assert batcher.start() is batcher  # starting twice is harmless

    with pytest.raises(NotRunning, match="closed"):
        batcher.submit(tagged(0))
    with pytest.raises(NotRunning, match="cannot be restarted"):
        batcher.start()
    batcher.close()  # closing twice is harmless


# --- asyncio ---------------------------------------------------------------------------------


def test_infer_awaits_results_from_asyncio(engine: Engine, images: np.ndarray):
    # Prepare: a queue of one under block, so most calls find it full
    policy = BatchPolicy(max_batch=4, max_wait_s=0.001, queue_size=1, overflow="block")
    alone = engine.run({"pixels": images[:16]})["logits"]

    async def main(batcher: MicroBatcher) -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(batcher.infer({"pixels": image}) for image in images[:16]))

    # Execute
    with MicroBatcher(engine, policy) as batcher:
        results = asyncio.run(main(batcher))

    # Assert
    np.testing.assert_allclose(np.stack([r["logits"] for r in results]), alone, atol=1e-5)
    assert batcher.stats.completed == 16


# --- under load ------------------------------------------------------------------------------


@pytest.mark.parametrize("overflow", ["block", "drop-oldest"])
def test_many_threads_many_items_keep_the_books(engine: Engine, images: np.ndarray, overflow: str):
    # Prepare
    threads, per_thread = 8, 200
    policy = BatchPolicy(
        max_batch=16, max_wait_s=0.001, queue_size=32, overflow=overflow, workers=2
    )  # type: ignore[arg-type]
    expected = engine.run({"pixels": images})["logits"]
    futures: list[list[Future[dict[str, np.ndarray]]]] = [[] for _ in range(threads)]

    def submitter(batcher: MicroBatcher, mine: list[Future[dict[str, np.ndarray]]]) -> None:
        for i in range(per_thread):
            mine.append(batcher.submit({"pixels": images[i % len(images)]}))

    # Execute
    with MicroBatcher(engine, policy) as batcher:
        workers = [threading.Thread(target=submitter, args=(batcher, f)) for f in futures]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    stats = batcher.stats

    # Assert
    assert stats.submitted == threads * per_thread
    assert stats.completed + stats.dropped == stats.submitted
    assert stats.pending == stats.failed == stats.expired == 0
    assert max(stats.batch_sizes) <= 16
    if overflow == "block":
        assert stats.completed == stats.submitted
    assert_balanced(stats)
    for mine in futures:
        for i, future in enumerate(mine):
            error = future.exception(WAIT)
            if error is None:
                np.testing.assert_allclose(
                    future.result()["logits"], expected[i % len(images)], atol=1e-5
                )
            else:
                assert isinstance(error, Dropped)


@st.composite
def policies(draw: st.DrawFn) -> BatchPolicy:
    max_batch = draw(st.integers(1, 8))
    return BatchPolicy(
        max_batch=max_batch,
        max_wait_s=draw(st.sampled_from([0.0, 0.0005, 0.002])),
        queue_size=draw(st.integers(1, 8)),
        overflow=draw(st.sampled_from(OVERFLOWS)),
        preferred_sizes=tuple(draw(st.lists(st.integers(1, max_batch), max_size=3))),
        workers=draw(st.integers(1, 3)),
    )


@settings(max_examples=30, deadline=None)
@given(policy=policies(), items=st.integers(0, 30), submitters=st.integers(1, 3))
def test_every_future_resolves_and_the_counts_reconcile(
    engine: Engine, images: np.ndarray, policy: BatchPolicy, items: int, submitters: int
):
    expected = engine.run({"pixels": images[:items]})["logits"] if items else None
    futures: dict[int, Future[dict[str, np.ndarray]]] = {}
    rejected: list[int] = []

    def submitter(batcher: MicroBatcher, mine: range) -> None:
        for i in mine:
            try:
                futures[i] = batcher.submit({"pixels": images[i]})
            except Overloaded:
                rejected.append(i)

    with MicroBatcher(engine, policy) as batcher:
        threads = [
            threading.Thread(target=submitter, args=(batcher, range(k, items, submitters)))
            for k in range(submitters)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    stats = batcher.stats

    assert all(future.done() for future in futures.values())
    assert len(futures) + len(rejected) == items
    assert (stats.submitted, stats.rejected) == (len(futures), len(rejected))
    assert stats.completed + stats.dropped == stats.submitted
    assert stats.pending == stats.failed == stats.expired == stats.cancelled == 0
    assert all(size <= policy.max_batch for size in stats.batch_sizes)
    assert_balanced(stats)
    for i, future in futures.items():
        error = future.exception()
        if error is None:
            np.testing.assert_allclose(future.result()["logits"], expected[i], atol=1e-5)
        else:
            assert isinstance(error, Dropped)
    if policy.overflow == "block":
        assert stats.completed == items
