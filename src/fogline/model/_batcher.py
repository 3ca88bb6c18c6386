"""The one micro-batcher: single items in, batches through the engine, a future per item.

The pipeline's infer stage and the inference server both hand single items
to a :class:`MicroBatcher`, which stacks waiting items into one
``Engine.run`` call and splits the outputs again. A batch is cut when
``max_batch`` items wait, when a preferred size is reached, or when the
oldest waiting item has waited ``max_wait_s``. The queue is bounded, and
the policy's ``overflow`` says what a full queue does: ``block``,
``drop-oldest`` or ``reject``. Nothing is lost silently: every item's future
ends with its outputs or an error, and :attr:`MicroBatcher.stats` counts
each outcome.

Concurrency: threads, because the work is compute and the engines release
the GIL. ``submit`` may be called from any thread. ``policy.workers``
threads take turns to cut a batch (one gathers at a time, so batches are as
full as the waiting items allow) and run their batches concurrently, so an
engine shared by several workers must be thread-safe (ONNX Runtime's is).
Futures are resolved on the worker threads, outside the batcher's lock.
Asyncio callers (the server) use :meth:`MicroBatcher.infer`, which awaits
the same future.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

import numpy as np

from fogline.errors import (
    ConfigError,
    DeadlineExceeded,
    Dropped,
    ModelError,
    NotRunning,
    Overloaded,
)
from fogline.model._engine import Engine
from fogline.model._signature import Signature, TensorSpec

Overflow = Literal["block", "drop-oldest", "reject"]
OVERFLOWS: tuple[Overflow, ...] = ("block", "drop-oldest", "reject")
LaneOverflow = Literal["block", "drop-oldest", "drop-newest", "reject"]
LANE_OVERFLOWS: tuple[LaneOverflow, ...] = ("block", "drop-oldest", "drop-newest", "reject")

Outputs = dict[str, np.ndarray]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BatchPolicy:
    """How single items become batches: size, wait, queue bound, what a full queue does.

    ``preferred_sizes`` (as in Triton's dynamic batcher) lets a batch be cut
    as soon as that many items wait, at the largest such size, instead of
    waiting out ``max_wait_s``. They are kept sorted and unique.

    ``idle_dispatch`` cuts an item at once when it arrives to an empty queue
    and no batch is running: an idle engine would otherwise sit out
    ``max_wait_s`` for company that may not come, which is the whole latency
    of a lone request (the server's choice). Items that arrive while a batch
    runs wait as usual, so batches still form under load. Off by default:
    a pipeline replaying a file wants its first batch full.

    >>> BatchPolicy(max_batch=8, max_wait_s=0.005, preferred_sizes=(8, 4, 4)).preferred_sizes
    (4, 8)
    >>> BatchPolicy(max_batch=8, preferred_sizes=(16,))
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: preferred_sizes must lie between 1 and max_batch (8); got 16
    """

    max_batch: int = 8
    max_wait_s: float = 0.005
    queue_size: int = 1024
    overflow: Overflow = "block"
    preferred_sizes: tuple[int, ...] = ()
    workers: int = 1
    idle_dispatch: bool = False

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "workers"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be a whole number of at least 1; got {value!r}")
        if not isinstance(self.idle_dispatch, bool):
            raise ConfigError(f"idle_dispatch must be true or false; got {self.idle_dispatch!r}")
        wait = self.max_wait_s
        if not (_is_int(wait) or isinstance(wait, float)) or not math.isfinite(wait) or wait < 0:
            raise ConfigError(f"max_wait_s must be a finite number of seconds >= 0; got {wait!r}")
        if self.overflow not in OVERFLOWS:
            raise ConfigError(
                f"overflow must be one of {', '.join(OVERFLOWS)}; got {self.overflow!r}"
            )
        for size in self.preferred_sizes:
            if not _is_int(size) or not 1 <= size <= self.max_batch:
                raise ConfigError(
                    f"preferred_sizes must lie between 1 and max_batch ({self.max_batch}); "
                    f"got {size!r}"
                )
        object.__setattr__(self, "preferred_sizes", tuple(sorted(set(self.preferred_sizes))))

    def cut_size(self, waiting: int, due: bool) -> int:
        """How many of ``waiting`` items to batch now (0: keep waiting).

        >>> policy = BatchPolicy(max_batch=8, preferred_sizes=(2, 4))
        >>> policy.cut_size(9, due=False), policy.cut_size(5, due=False), policy.cut_size(1, due=False)
        (8, 4, 0)
        >>> policy.cut_size(1, due=True)
        1
        """
        if waiting >= self.max_batch:
            return self.max_batch
        fitting = [size for size in self.preferred_sizes if size <= waiting]
        if fitting:
            return fitting[-1]
        return waiting if due else 0


@dataclass(frozen=True)
class Lane:
    """One producer's share of the queue, with its own overflow policy.

    Several producers can feed one batcher: a file replay that must not skip
    anything (``block``) next to a live camera where a stale frame is
    worthless (``drop-oldest``: a new frame evicts the camera's own oldest
    waiting frame, never another producer's). At most ``limit`` items of a
    lane wait at once, so one producer cannot take the whole queue from the
    others, and a live lane's waiting time stays bounded. ``drop-newest``
    drops the item being submitted instead.

    >>> Lane("cam0", 4, "drop-oldest")
    Lane(name='cam0', limit=4, overflow='drop-oldest')
    >>> Lane("cam0", 0)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: lane 'cam0': limit must be a whole number of at least 1; got 0
    """

    name: str
    limit: int
    overflow: LaneOverflow = "block"

    def __post_init__(self) -> None:
        if not _is_int(self.limit) or self.limit < 1:
            raise ConfigError(
                f"lane {self.name!r}: limit must be a whole number of at least 1; got {self.limit!r}"
            )
        if self.overflow not in LANE_OVERFLOWS:
            raise ConfigError(
                f"lane {self.name!r}: overflow must be one of {', '.join(LANE_OVERFLOWS)}; "
                f"got {self.overflow!r}"
            )


@dataclass(frozen=True)
class BatcherStats:
    """A snapshot of what a batcher has done.

    Every submitted item is in exactly one place, so at any moment::

        submitted == completed + failed + dropped + expired + cancelled + pending

    where ``pending = queued + in_flight``. ``failed`` counts items whose
    batch raised, so ``completed + failed`` is the sum of ``batch_sizes``;
    ``cancelled`` counts items not computed because the caller cancelled the
    future or ``close(drain=False)`` abandoned them. ``rejected``
    items were refused by ``submit`` under the ``reject`` policy and are not
    counted as submitted. ``batch_sizes`` maps a batch size to how many
    batches of that size were handed to the engine.

    >>> BatcherStats(submitted=3, completed=2, queued=1).pending
    1
    """

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    dropped: int = 0
    expired: int = 0
    cancelled: int = 0
    rejected: int = 0
    batches: int = 0
    batch_sizes: Mapping[int, int] = field(default_factory=dict)
    queued: int = 0
    in_flight: int = 0
    queue_seconds: float = 0.0  # summed over computed items: submit to batch cut
    compute_seconds: float = 0.0  # summed over batches: the engine's run

    @property
    def pending(self) -> int:
        return self.queued + self.in_flight

    @property
    def settled(self) -> int:
        """Items whose future has an outcome (or is about to: counts move first)."""
        return self.completed + self.failed + self.dropped + self.expired + self.cancelled


@dataclass(eq=False)
class _Item:
    inputs: dict[str, np.ndarray]
    deadline: float | None
    lane: str | None = None
    future: Future[Outputs] = field(default_factory=Future)
    queued_at: float = 0.0
    alone: bool = False  # it found the queue empty and no batch running


_CANCELLED = _Item({}, None)  # an eviction that freed a slot held by a cancelled item
_CANCELLED.future.set_running_or_notify_cancel()
_CANCELLED.future.set_result({})


def _item_signature(signature: Signature, policy: BatchPolicy) -> Signature:
    """The signature of one item: every input without its leading batch dimension."""
    for spec in signature.inputs:
        first = spec.shape[0] if spec.shape else None
        if not spec.shape or (isinstance(first, int) and (first != 1 or policy.max_batch != 1)):
            raise ConfigError(
                f"input {spec.name!r} has shape {spec.describe_shape()}: micro-batching needs "
                "a dynamic first (batch) dimension, or a fixed 1 with max_batch=1"
            )
    items = tuple(TensorSpec(s.name, s.dtype, s.shape[1:]) for s in signature.inputs)
    return Signature(items, signature.outputs)


class MicroBatcher:
    """Batch single items through one engine; each ``submit`` returns a future.

    Items are given without the batch dimension and checked against the
    engine's signature at once; outputs come back without it. The batcher
    does not own the engine: closing the batcher leaves the engine open.

    >>> from fogline.examples import digits_model_path
    >>> from fogline.model import load_engine
    >>> engine = load_engine(digits_model_path())
    >>> item = {"pixels": np.zeros((1, 8, 8), np.float32)}
    >>> with MicroBatcher(engine, BatchPolicy(max_batch=4, max_wait_s=0.01)) as batcher:
    ...     futures = [batcher.submit(item) for _ in range(3)]
    ...     [future.result()["logits"].shape for future in futures]
    [(10,), (10,), (10,)]
    >>> batcher.stats.completed
    3
    """

    def __init__(self, engine: Engine, policy: BatchPolicy | None = None) -> None:
        self.engine = engine
        self.policy = policy or BatchPolicy()
        self._items = _item_signature(engine.signature, self.policy)
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._gather = threading.Lock()  # one worker cuts a batch at a time
        self._queue: deque[_Item] = deque()
        self._state: Literal["new", "running", "closing", "closed"] = "new"
        self._threads: list[threading.Thread] = []
        # submitted, completed, failed, dropped, expired, cancelled, rejected, batches
        self._tally: Counter[str] = Counter()
        self._sizes: Counter[int] = Counter()
        self._lanes: Counter[str | None] = Counter()  # waiting items per lane
        self._lane_limits: dict[str, int] = {}
        # When the oldest wait began: evicting the oldest item does not restart the clock.
        self._since: float | None = None
        self._in_flight = 0
        self._queue_s = 0.0
        self._compute_s = 0.0

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> MicroBatcher:
        """Start the worker threads (again is a no-op; after close it raises)."""
        with self._lock:
            if self._state == "running":
                return self
            if self._state != "new":
                raise NotRunning("this batcher is closed; a closed batcher cannot be restarted")
            self._state = "running"
            self._threads = [
                threading.Thread(target=self._work, name=f"fogline-batcher-{i}", daemon=True)
                for i in range(self.policy.workers)
            ]
        for thread in self._threads:
            thread.start()
        return self

    def close(self, drain: bool = True) -> None:
        """Stop taking items; run what is queued (``drain``) or fail it, then join the workers.

        Without ``drain``, queued items fail with :class:`NotRunning`; batches
        already running finish either way.
        """
        with self._lock:
            if self._state in ("new", "running"):
                self._state = "closing"
            abandoned = [] if drain else self._take(len(self._queue))
            self._tally["cancelled"] += len(abandoned)
            self._not_empty.notify_all()
            self._not_full.notify_all()
        error = NotRunning("the batcher was closed without draining; this item was not computed")
        for item in abandoned:
            item.future.set_exception(error)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        with self._lock:
            self._state = "closed"

    def __enter__(self) -> MicroBatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- submitting -----------------------------------------------------------------------

    def submit(
        self,
        inputs: Mapping[str, Any],
        *,
        deadline: float | None = None,
        lane: Lane | None = None,
    ) -> Future[Outputs]:
        """Queue one item (no batch dimension); the future gets its outputs or an error.

        ``deadline`` is a :func:`time.monotonic` time: an item whose deadline
        has passed when its batch is cut is not computed and its future gets
        :class:`DeadlineExceeded`. A full queue blocks here, evicts the oldest
        item (:class:`Dropped`) or raises :class:`Overloaded`, by the policy.
        A bad item raises :class:`SignatureMismatch` and is not queued;
        submitting to a batcher that is not running raises :class:`NotRunning`.
        With a :class:`Lane`, the lane's limit and overflow policy apply on top
        of the queue's size. Do not change the arrays until the future is done.
        """
        future = self._submit(inputs, deadline, lane, block=True)
        assert future is not None  # a blocking submit always queues or raises
        return future

    async def infer(self, inputs: Mapping[str, Any], *, deadline: float | None = None) -> Outputs:
        """``submit`` for asyncio callers: await one item's outputs.

        Under the ``block`` policy a full queue is waited out on a helper
        thread, never on the event loop. Cancelling the awaiting task
        cancels the item if its batch has not been cut yet.
        """
        future = self._submit(inputs, deadline, None, block=False)
        if future is None:
            future = await asyncio.to_thread(self.submit, inputs, deadline=deadline)
        return await asyncio.wrap_future(future)

    def _submit(
        self,
        inputs: Mapping[str, Any],
        deadline: float | None,
        lane: Lane | None,
        *,
        block: bool,
    ) -> Future[Outputs] | None:
        feeds = {name: np.asarray(value) for name, value in inputs.items()}
        self._items.check_feeds(feeds, where="one item (without the batch dimension)")
        item = _Item(feeds, deadline, None if lane is None else lane.name)
        overflow: LaneOverflow = self.policy.overflow if lane is None else lane.overflow
        evicted: _Item | None = None
        with self._lock:
            while True:
                if self._state != "running":
                    started = self._state != "new"
                    raise NotRunning(
                        "the batcher is closed"
                        if started
                        else "the batcher is not started; use it in a with block or call start()"
                    )
                lane_full = lane is not None and self._lanes[lane.name] >= lane.limit
                if not lane_full and len(self._queue) < self.policy.queue_size:
                    break
                if overflow == "reject":
                    self._tally["rejected"] += 1
                    where = f"lane {lane.name!r}" if lane_full and lane else "queue"
                    raise Overloaded(f"the batcher's {where} is full")
                if overflow == "drop-oldest":
                    evicted = self._evict(item.lane)
                    if evicted is not None:
                        break
                    overflow = "drop-newest"  # the queue is full of other lanes' items
                if overflow == "drop-newest":
                    self._tally["submitted"] += 1
                    self._tally["dropped"] += 1
                    item.future.set_exception(
                        Dropped("the queue was full; this newest item was dropped")
                    )
                    return item.future
                if not block:
                    return None
                self._not_full.wait()
            item.queued_at = time.monotonic()
            item.alone = not self._queue and not self._in_flight
            if self._since is None:
                self._since = item.queued_at
            self._queue.append(item)
            self._lanes[item.lane] += 1
            if lane is not None:
                self._lane_limits[lane.name] = lane.limit
            self._tally["submitted"] += 1
            self._not_empty.notify()
        if evicted is not None and evicted is not _CANCELLED:
            evicted.future.set_exception(Dropped("evicted from the full queue by a newer item"))
        return item.future

    def _evict(self, lane: str | None) -> _Item | None:
        """Remove the oldest waiting item (of ``lane``, when given) to make room; lock held.

        Returns the evicted item (counted as dropped), or None when there was
        none to take. A caller-cancelled item found on the way is removed and
        counted as cancelled; it made room too, so the search ends there.
        """
        for queued in self._queue:
            if lane is not None and queued.lane != lane:
                continue
            self._queue.remove(queued)
            self._lanes[queued.lane] -= 1
            if not queued.future.set_running_or_notify_cancel():
                self._tally["cancelled"] += 1
                return _CANCELLED
            self._tally["dropped"] += 1
            return queued
        return None

    def _lanes_full(self) -> bool:
        """True when every item waiting is in a lane at its limit: waiting longer adds nothing.

        (A full drop-oldest lane would only swap its items for newer ones, so
        the batch is cut now rather than after ``max_wait_s``.) Lock held.
        """
        limits = self._lane_limits
        return all(
            count == 0 or (lane is not None and count >= limits.get(lane, count + 1))
            for lane, count in self._lanes.items()
        )

    def _take(self, count: int) -> list[_Item]:
        """Pop ``count`` waiting items, leaving out (and counting) the ones cancelled by callers.

        Called with the lock held. The futures returned are marked running, so
        a caller can no longer cancel them and they must be resolved.
        """
        taken: list[_Item] = []
        for _ in range(count):
            item = self._queue.popleft()
            self._lanes[item.lane] -= 1
            if item.future.set_running_or_notify_cancel():
                taken.append(item)
            else:
                self._tally["cancelled"] += 1
        # What stays waits from its own arrival; an empty queue waits for nothing.
        self._since = self._queue[0].queued_at if self._queue else None
        self._not_full.notify(count)
        return taken

    # --- the workers ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._gather:
                cut = self._cut()
            if cut is None:
                return
            batch, expired = cut
            for item in expired:
                item.future.set_exception(
                    DeadlineExceeded("the deadline passed before the item's batch ran")
                )
            if batch:
                self._run(batch)

    def _cut(self) -> tuple[list[_Item], list[_Item]] | None:
        """Wait for the next batch; split it into live and expired items (None: stop)."""
        with self._lock:
            while True:
                if self._queue:
                    now = time.monotonic()
                    since = self._queue[0].queued_at if self._since is None else self._since
                    due = since + self.policy.max_wait_s
                    closing = self._state != "running"
                    eager = self.policy.idle_dispatch and self._queue[0].alone
                    ready = closing or eager or now >= due or self._lanes_full()
                    size = self.policy.cut_size(len(self._queue), ready)
                    if size:
                        break
                    self._not_empty.wait(due - now)
                elif self._state != "running":
                    return None
                else:
                    self._not_empty.wait()
            now = time.monotonic()
            batch: list[_Item] = []
            expired: list[_Item] = []
            for item in self._take(size):
                late = item.deadline is not None and item.deadline <= now
                (expired if late else batch).append(item)
            self._tally["expired"] += len(expired)
            self._in_flight += len(batch)
            self._queue_s += sum(now - item.queued_at for item in batch)
        return batch, expired

    def _run(self, batch: list[_Item]) -> None:
        size = len(batch)
        try:
            feeds = {
                name: _stack([item.inputs[name] for item in batch])
                for name in self._items.input_names
            }
            started = time.perf_counter()
            outputs = self.engine.run(feeds)
            took = time.perf_counter() - started
            results = _split(outputs, size)
        except Exception as exc:  # every item of the batch gets the engine's own error
            with self._lock:
                self._record(size, failed=True)
            for item in batch:
                item.future.set_exception(exc)
            return
        with self._lock:
            self._record(size, failed=False)
            self._compute_s += took
        for item, result in zip(batch, results, strict=True):
            item.future.set_result(result)

    def _record(self, size: int, *, failed: bool) -> None:
        # Counts move before the futures resolve, so a caller that has seen every
        # future done also sees final counts.
        self._in_flight -= size
        self._tally["batches"] += 1
        self._sizes[size] += 1
        if failed:
            self._tally["failed"] += size
        else:
            self._tally["completed"] += size

    @property
    def stats(self) -> BatcherStats:
        """A consistent snapshot of the counters (see :class:`BatcherStats`)."""
        with self._lock:
            return BatcherStats(
                **self._tally,
                batch_sizes=dict(sorted(self._sizes.items())),
                queued=len(self._queue),
                in_flight=self._in_flight,
                queue_seconds=self._queue_s,
                compute_seconds=self._compute_s,
            )


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """``np.stack``, but a lone contiguous array becomes a view with a batch axis, not a copy.

    >>> item = np.arange(3.0)
    >>> batch = _stack([item])
    >>> batch.shape, np.shares_memory(batch, item)
    ((1, 3), True)
    """
    if len(arrays) == 1 and arrays[0].flags.c_contiguous:
        return arrays[0][np.newaxis]
    return np.stack(arrays)


def _split(outputs: Mapping[str, np.ndarray], size: int) -> list[Outputs]:
    """One output dict per item: row ``i`` of every output."""
    results: list[Outputs] = [{} for _ in range(size)]
    for name, value in outputs.items():
        array = np.asarray(value)
        if array.ndim == 0 or array.shape[0] != size:
            raise ModelError(
                f"output {name!r} has shape {list(array.shape)} for a batch of {size}; "
                "the batcher needs one row per item to split it"
            )
        for row, result in zip(array, results, strict=True):
            result[name] = row
    return results
