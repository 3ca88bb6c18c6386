"""Recent items' features by item id, kept until their late label comes (or they age out).

An online classifier or regressor learns from a label that arrives long
after the item it belongs to; by then the item is gone, and the results
store keeps the model's answer, not its input. :class:`FeatureMemory` keeps
each item's model input under its id, bounded twice: by age (the labels'
retention: a later label is refused anyway) and by count (memory). What is
pushed out before its label came is counted as ``forgotten``, a label whose
item is not (or no longer) remembered as ``missed``; nothing is dropped
silently.

Concurrency: one lock; the pipeline's collector remembers, the label join
thread recalls.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class FeatureMemory:
    """Features by item id, oldest first, at most ``max_items`` no older than ``max_age_s``.

    >>> clock = iter([0.0, 1.0, 2.0, 3.0, 10.0]).__next__  # the seconds of each call below
    >>> memory = FeatureMemory(max_items=2, max_age_s=5.0, clock=clock)
    >>> memory.remember("a", [1.0]); memory.remember("b", [2.0]); memory.remember("c", [3.0])
    >>> memory.forgotten, len(memory)  # "a" made room for "c"
    (1, 2)
    >>> memory.recall("c"), memory.recall("b")  # "b" aged out by t=10
    ([3.0], None)
    >>> memory.recalled, memory.missed, memory.forgotten
    (1, 1, 2)
    """

    def __init__(
        self, max_items: int, max_age_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_items = max_items
        self.max_age_s = max_age_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.remembered = 0  #: items kept
        self.forgotten = 0  #: pushed out (by count or age) before a label came for them
        self.recalled = 0  #: labels that found their item's features
        self.missed = 0  #: labels for an id not remembered (never seen, forgotten, or recalled)

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, item_id: str | None, features: Any) -> None:
        """Keep ``features`` under ``item_id`` (an item without an id cannot be labelled)."""
        if item_id is None:
            return
        now = self._clock()
        with self._lock:
            items = self._items
            if item_id in items:
                del items[item_id]  # a repeated id: the newest item is the one a label means
            items[item_id] = (now, features)
            self.remembered += 1
            self._expire(now)
            while len(items) > self.max_items:
                items.popitem(last=False)
                self.forgotten += 1

    def recall(self, item_id: str) -> Any | None:
        """The features kept for ``item_id`` (and forget them: a label is learned once), or None."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            kept = self._items.pop(item_id, None)
            if kept is None:
                self.missed += 1
                return None
            self.recalled += 1
            return kept[1]

    def _expire(self, now: float) -> None:
        items = self._items
        while items:
            first = next(iter(items.values()))
            if now - first[0] <= self.max_age_s:
                return
            items.popitem(last=False)
            self.forgotten += 1
