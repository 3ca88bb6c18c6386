"""Delivering the outbox: the :class:`OutboxTransport` role and the :class:`OutboxSender`.

Delivery is at least once: a message leaves the outbox only after its
transport's ``send`` returned, so a crash in between sends it again, with the
same idempotency key, and the receiver dedupes (exactly-once effect).

Concurrency: one sender per store, driven by one thread — :meth:`OutboxSender.run`
in a background thread, or :meth:`OutboxSender.deliver_once` called by the
owner. ``send`` is called without holding the store's lock, so producers keep
adding while a slow transport works. Stop the sender before closing the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from fogline.errors import ConfigError
from fogline.store._result import OutboxMessage
from fogline.store._store import ResultStore


@runtime_checkable
class OutboxTransport(Protocol):
    """Carries one outbox message (topic, payload bytes, key) to its receiver; raises on any failure.

    Returning means the receiver has the message durably: it will not be
    sent again unless the device crashes before recording the delivery.
    A transport may also offer ``send_many(messages)``, which the sender
    then uses for a whole round (one fsync, one round of acknowledgements);
    if it raises, every message of the round is sent again later.
    """

    def send(self, message: OutboxMessage) -> None: ...


class OutboxSender:
    """Deliver a store's pending outbox messages in id order, with exponential backoff.

    On a failed ``send`` the round stops (so order is kept), the message's
    attempt count and error are recorded in the store, and the next round
    waits ``min(backoff_max, backoff_initial * 2 ** (attempts - 1))`` seconds
    of ``clock``. The wait itself is kept in memory, not in the store: the
    clock is monotonic and means nothing after a reboot, so a sender made
    after a restart tries at once and resumes with whatever is still pending.
    A message that always fails blocks the ones behind it; that is the price
    of ordered delivery. ``gate``, when given, is asked before each round
    whether it may send now (``(allowed, reason)``); while it says no,
    nothing is sent and the messages wait in the store (a deferral policy).

    >>> import json, pathlib, tempfile
    >>> from fogline.store import ResultStore, Result
    >>> class Printer:
    ...     def send(self, message):
    ...         print(message.id, message.topic, json.loads(message.payload)["result"]["outputs"])
    >>> store = ResultStore(pathlib.Path(tempfile.mkdtemp()) / "r.db")
    >>> _ = store.add([Result("cam0", i, 0.0, "m", "1", {"i": i}, sync=True) for i in range(2)])
    >>> OutboxSender(store, Printer()).deliver_once()
    1 fogline/cam0/outbox {'i': 0}
    2 fogline/cam0/outbox {'i': 1}
    2
    >>> store.stats().pending, store.stats().delivered
    (0, 2)
    >>> store.close()
    """

    def __init__(
        self,
        store: ResultStore,
        transport: OutboxTransport,
        *,
        batch: int = 100,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        gate: Callable[[], tuple[bool, str]] | None = None,
    ) -> None:
        if batch < 1:
            raise ConfigError(f"batch must be at least 1, got {batch}")
        if not 0 < backoff_initial <= backoff_max:
            raise ConfigError(
                "backoff needs 0 < backoff_initial <= backoff_max, "
                f"got {backoff_initial} and {backoff_max}"
            )
        if poll_interval <= 0:
            raise ConfigError(f"poll_interval must be positive, got {poll_interval}")
        self.store = store
        self.transport = transport
        self.batch = batch
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.clock = clock
        self.gate = gate
        self._next_attempt = float("-inf")
        self.last_error: BaseException | None = None

    @property
    def next_attempt(self) -> float:
        """The ``clock`` time before which :meth:`deliver_once` does not try (after a failure)."""
        return self._next_attempt

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after a message's ``attempts``-th failure.

        >>> s = OutboxSender.__new__(OutboxSender); s.backoff_initial, s.backoff_max = 0.5, 4
        >>> [s.backoff(n) for n in range(1, 6)]
        [0.5, 1.0, 2.0, 4, 4]
        """
        return min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempts - 1, 64))

    def deliver_once(self) -> int:
        """Send up to ``batch`` pending messages; return how many were delivered.

        Does nothing while backing off, or while the ``gate`` says no. Stops at the first failure.
        """
        if self.clock() < self._next_attempt:
            return 0
        if self.gate is not None and not self.gate()[0]:
            return 0
        delivered: list[int] = []
        try:
            messages = self.store.pending(self.batch)
            send_many = getattr(self.transport, "send_many", None)
            if callable(send_many) and len(messages) > 1:
                try:
                    send_many(messages)
                except Exception as exc:  # which ones arrived is unknown: all are resent
                    self._failed(messages[0], exc)
                else:
                    delivered = [message.id for message in messages]
                    self._next_attempt = float("-inf")
                return len(delivered)
            for message in messages:
                try:
                    self.transport.send(message)
                except Exception as exc:  # any transport failure: retry later, keep order
                    self._failed(message, exc)
                    break
                delivered.append(message.id)
            else:
                self._next_attempt = float("-inf")
        finally:
            # One transaction for the round; a crash before it means these are resent.
            self.store.mark_delivered(delivered)
        return len(delivered)

    def _failed(self, message: OutboxMessage, exc: Exception) -> None:
        self.last_error = exc
        attempts = self.store.record_failure(message.id, f"{type(exc).__name__}: {exc}")
        self._next_attempt = self.clock() + self.backoff(max(attempts, 1))

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set, waiting ``poll_interval`` when idle or backing off."""
        while not stop.is_set():
            if self.deliver_once() < self.batch:
                wait = self.poll_interval
                if self._next_attempt > self.clock():
                    wait = min(wait, self._next_attempt - self.clock())
                stop.wait(max(wait, 0.001))
