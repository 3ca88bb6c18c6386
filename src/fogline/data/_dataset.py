"""The :class:`Dataset` value object: batches of model inputs, and labels when known."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from fogline.errors import DataError, SignatureMismatch
from fogline.model import Signature

#: The key under which a batch (or an ``.npz`` file) carries the labels.
LABELS_KEY = "labels"


@dataclass(frozen=True)
class Dataset:
    """Batches of model inputs (input name → array), and one label per item when known.

    It checks itself when it is built: every batch holds at least one array,
    the arrays of a batch hold the same number of items, and the labels, when
    given, one per item.

    >>> import numpy as np
    >>> x = np.arange(10, dtype=np.float32).reshape(5, 2)
    >>> data = Dataset("five", ({"x": x[:3]}, {"x": x[3:]}), labels=np.arange(5))
    >>> data.size, data.limit(4).size, data.limit(4).labels.tolist()
    (5, 4, [0, 1, 2, 3])
    >>> data.array("x").shape
    (5, 2)
    >>> Dataset("bad", ({"x": x},), labels=np.arange(2))
    Traceback (most recent call last):
    fogline.errors.DataError: bad: 5 items but 2 labels
    """

    source: str
    batches: tuple[dict[str, np.ndarray], ...]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        for i, batch in enumerate(self.batches):
            lengths = {len(v) if v.ndim else 0 for v in batch.values()}
            if len(lengths) != 1:
                raise DataError(
                    f"{self.source}: batch {i} "
                    + ("holds no arrays" if not batch else "has arrays of different lengths")
                )
        if self.labels is not None and len(self.labels) != self.size:
            raise DataError(f"{self.source}: {self.size} items but {len(self.labels)} labels")

    @property
    def size(self) -> int:
        """How many items the batches hold together."""
        return sum(len(next(iter(b.values()))) for b in self.batches)

    def array(self, name: str) -> np.ndarray:
        """Every item's ``name`` array, the batches joined into one."""
        return np.concatenate([b[name] for b in self.batches])

    def limit(self, items: int) -> Dataset:
        """The first ``items`` items (whole batches, the last one cut)."""
        kept: list[dict[str, np.ndarray]] = []
        count = 0
        for batch in self.batches:
            if count >= items:
                break
            n = len(next(iter(batch.values())))
            take = min(n, items - count)
            kept.append({k: v[:take] for k, v in batch.items()})
            count += take
        labels = None if self.labels is None else self.labels[:count]
        return Dataset(self.source, tuple(kept), labels)


def split_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int
) -> tuple[dict[str, np.ndarray], ...]:
    """``arrays`` (all of one length) cut into batches of ``batch_size`` items."""
    n = len(next(iter(arrays.values())))
    return tuple(
        {k: np.ascontiguousarray(v[i : i + batch_size]) for k, v in arrays.items()}
        for i in range(0, n, batch_size)
    )


def check_fits(
    batches: Iterable[Mapping[str, np.ndarray]], signature: Signature, where: str
) -> None:
    """Refuse batches that do not fit ``signature``, with a hint for float64 data."""
    for i, batch in enumerate(batches):
        try:
            signature.check_feeds(batch, where=f"{where} (batch {i})")
        except SignatureMismatch as exc:
            hint = ""
            if "dtype float64" in str(exc):
                hint = "; cast it with .astype('float32') when you build the data"
            raise DataError(f"{exc}{hint}") from exc
