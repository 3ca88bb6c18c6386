"""A bounded reorder window: results that arrive out of order leave in sequence order.

Several nodes finish a stream's items out of order; a consumer that needs
the producer's order gets it back here, with bounded memory and delay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Released(Generic[T]):
    """One entry leaving the window: its sequence number, value, and whether it came too late."""

    seq: int
    value: T
    late: bool = False


class ReorderWindow(Generic[T]):
    """Hold entries until every lower sequence number has left, at most ``size`` numbers ahead.

    :meth:`push` takes an entry by sequence number and returns what may
    leave now, in order. When an entry would open a gap wider than ``size``
    behind it, the window moves on: the oldest held entries leave, skipping
    the numbers still missing (counted in ``skipped``). A missing number that
    arrives after the window moved past it leaves at once with ``late=True``
    (counted in ``late``). :meth:`skip` says a number will never come (its
    item had no result); :meth:`flush` empties the window at the end.

    >>> window = ReorderWindow[str](size=4, start=0)
    >>> [r.seq for r in window.push(1, "b")], [r.seq for r in window.push(0, "a")]
    ([], [0, 1])
    >>> window.push(7, "h")  # 2 and 3 are given up: 7 is 4 or more ahead of them
    []
    >>> [(r.seq, r.late) for r in window.push(2, "c")], window.late, window.skipped
    ([(2, True)], 1, 2)
    """

    def __init__(self, size: int = 256, start: int = 0) -> None:
        if size < 1:
            raise ValueError(f"a reorder window holds at least 1 entry, got {size}")
        self.size = size
        self.next = start  # the lowest sequence number that has not left yet
        self.late = 0
        self.skipped = 0
        self._held: dict[int, T | None] = {}  # None: a number that will not come (skip)

    @property
    def held(self) -> int:
        """How many entries wait for a lower number."""
        return sum(1 for value in self._held.values() if value is not None)

    def push(self, seq: int, value: T) -> list[Released[T]]:
        """Take ``value`` at ``seq``; return the entries that leave now, in order."""
        if seq < self.next:
            self.late += 1
            return [Released(seq, value, late=True)]
        if seq in self._held:
            return []  # a second copy of a number that is held: the first one stays
        self._held[seq] = value
        return self._release()

    def skip(self, seq: int) -> list[Released[T]]:
        """Number ``seq`` will never come (its item had no result): do not wait for it."""
        if seq < self.next or seq in self._held:
            return []
        self._held[seq] = None
        return self._release()

    def flush(self) -> list[Released[T]]:
        """Everything held, in order (the end of the stream); the window starts after it."""
        out = [Released(s, v) for s, v in sorted(self._held.items()) if v is not None]
        if self._held:
            self.skipped += max(self._held) + 1 - self.next - len(self._held)
            self.next = max(self._held) + 1
        self._held.clear()
        return out

    def _release(self) -> list[Released[T]]:
        out: list[Released[T]] = []
        while True:
            if self.next in self._held:
                value = self._held.pop(self.next)
                if value is not None:
                    out.append(Released(self.next, value))
                self.next += 1
                continue
            if not self._held or max(self._held) - self.next < self.size:
                return out
            # The newest entry is too far ahead: give up waiting for the missing one.
            self.skipped += 1
            self.next += 1
