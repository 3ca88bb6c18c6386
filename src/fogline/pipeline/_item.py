"""The unit that flows through a pipeline: an :class:`Item`, or a :class:`Corrupt` marker.

A source yields one :class:`Item` per frame, row or message. Preprocessing
replaces ``data``; the engine fills ``outputs`` (one item's outputs, no batch
dimension); post-processing builds ``result``, the JSON-able record that
sinks receive. ``meta`` carries what later steps need to know about earlier
ones: the position in the source (``"log.csv:17"``), a known label, the
geometry that maps model coordinates back to the source image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(eq=False, slots=True)
class Item:
    """One frame, row or message, with where and when it was captured.

    >>> item = Item("cam0", 3, 1_700_000_000.0, np.zeros((2, 2), np.uint8), {"position": "a.png"})
    >>> item.source, item.sequence, item.data.shape, item.result
    ('cam0', 3, (2, 2), {})
    """

    source: str
    sequence: int
    captured_at: float  # wall-clock epoch seconds at capture
    data: Any
    meta: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    t0: float = field(default_factory=time.monotonic)  # monotonic capture time: end-to-end latency

    @property
    def position(self) -> str:
        """Where the item came from: ``meta["position"]``, else ``source#sequence``.

        Error messages name the item by it, and its result carries it.
        """
        return str(self.meta.get("position") or f"{self.source}#{self.sequence}")


@dataclass(frozen=True, slots=True)
class Corrupt:
    """A source's report that one frame or row at ``position`` could not be read.

    The runner counts it as an error of that source, logs it, and goes on.
    """

    source: str
    position: str
    reason: str
