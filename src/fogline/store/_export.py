"""Captured hard examples as a dataset: an ``.npz`` that ``fogline.data.load_dataset`` reads.

The file holds one array per model input name (the captures' inputs stacked,
so a model's ``pixels`` come back as ``pixels[N, 1, 8, 8]``) and, when every
exported capture has a late label, ``labels``: class indices (``int64``) when
the labels are whole numbers or are named by ``classes``, numbers
(``float32``) for a regressor. That is the format ``fogline optimize``,
``fogline fl`` and ``fogline learn finetune`` take.

The file is written whole or not at all (a temporary file beside it, synced,
then renamed over it). numpy is imported when an export runs, not before.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fogline._files import atomic_output, atomic_write
from fogline.errors import DataError
from fogline.store._captures import CaptureRecord

if TYPE_CHECKING:
    import numpy as np

    from fogline.security import DeviceKey
    from fogline.store._store import ResultStore

log = logging.getLogger("fogline.store")

#: The key of the labels in the file (``fogline.data``'s ``LABELS_KEY``).
LABELS = "labels"


@dataclass(frozen=True)
class Export:
    """What an export wrote: how many items, the arrays' shapes, how many carry labels."""

    path: Path
    items: int
    shapes: dict[str, tuple[int, ...]]
    labelled: int
    with_labels: bool
    duplicates: int = 0  # older captures of an item id already exported (left out)


def export_captures(
    store: ResultStore,
    out: str | Path,
    *,
    since: float | None = None,
    labelled_only: bool = False,
    classes: Sequence[str] | None = None,
    key: DeviceKey | None = None,
) -> Export:
    """Write the store's captures (``since``: captured at or after it) to the ``.npz`` ``out``.

    One capture per item id goes in (the newest): an item captured on several
    passes (a looped or replayed data set) would otherwise land on both sides
    of a train/holdout split; ``Export.duplicates`` counts those left out.
    ``labelled_only`` keeps those with a late label. Labels go in the file
    when every exported capture has one. ``classes`` names the classes in
    index order, for labels that are class names (``"cat"``) rather than
    indices. Raises :class:`~fogline.errors.DataError` when there is nothing
    to export, the inputs differ in name, shape or dtype, or a label cannot be
    turned into a number; ``out`` is then left as it was. With ``key`` the
    file is sealed (:func:`fogline.security.seal`, purpose
    :data:`~fogline.security.CAPTURES_PURPOSE`): captures from an encrypted
    store never reach the disk in plain; ``fogline learn finetune`` opens it
    with the same key.

    >>> import pathlib, tempfile, numpy as np
    >>> from fogline.store import Capture, ResultStore
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with ResultStore(folder / "r.db") as store:
    ...     _ = store.add_captures([Capture.of(np.zeros((1, 8, 8), np.float32), item_id=f"i{n}",
    ...         source="s", captured_at=float(n), model="m", model_version="1", reason="r",
    ...         input_name="pixels", answer={}) for n in range(3)])
    ...     done = export_captures(store, folder / "hard.npz")
    >>> done.items, done.shapes, done.with_labels
    (3, {'pixels': (3, 1, 8, 8)}, False)
    """
    import numpy as np

    out = Path(out)
    if out.suffix != ".npz":
        raise DataError(f"{out}: the export is an .npz file; name it so (e.g. data.npz)")
    records = store.captures(since=since, labelled_only=labelled_only)
    if not records:
        what = "labelled captures" if labelled_only else "captures"
        after = "" if since is None else " at or after the --since time"
        raise DataError(f"{store.path}: no {what}{after} to export")
    records, duplicates = newest_per_item(records)
    if duplicates:
        log.warning(
            "%s: %d older captures of items captured more than once left out (one per item id)",
            store.path,
            duplicates,
        )
    arrays = _inputs(records, store.path)
    labelled = sum(r.labelled for r in records)
    with_labels = labelled == len(records)
    if with_labels:
        arrays[LABELS] = _labels([r.label for r in records], classes)
    out.parent.mkdir(parents=True, exist_ok=True)
    savez: Any = np.savez  # its stubs read **arrays as its own keyword options
    if key is not None:
        from fogline.security import CAPTURES_PURPOSE, seal

        buffer = io.BytesIO()
        savez(buffer, **arrays)
        atomic_write(out, seal(buffer.getvalue(), key, purpose=CAPTURES_PURPOSE))
    else:
        with atomic_output(out) as tmp, open(tmp, "wb") as fh:
            # A file object: given a name, savez would add .npz to the temporary one.
            savez(fh, **arrays)
    shapes = {name: tuple(a.shape) for name, a in arrays.items() if name != LABELS}
    return Export(out, len(records), shapes, labelled, with_labels, duplicates)


def newest_per_item(records: Sequence[CaptureRecord]) -> tuple[list[CaptureRecord], int]:
    """The newest capture of each item id (by ``captured_at``, then id), in their order, and
    how many older ones were left out."""
    newest: dict[str, CaptureRecord] = {}
    for record in records:
        key = record.capture.item_id
        best = newest.get(key)
        if best is None or (record.capture.captured_at, record.id) > (
            best.capture.captured_at,
            best.id,
        ):
            newest[key] = record
    kept = {id(r) for r in newest.values()}
    chosen = [r for r in records if id(r) in kept]
    return chosen, len(records) - len(chosen)


def _inputs(records: Sequence[CaptureRecord], path: Path) -> dict[str, np.ndarray]:
    """The inputs stacked under their input name; refuses mixed names, shapes or dtypes."""
    import numpy as np

    names = sorted({r.capture.input_name for r in records})
    if len(names) > 1:
        raise DataError(
            f"{path}: the captures were fed to different model inputs ({', '.join(names)}); "
            "export one model's captures at a time (--since the switch)"
        )
    arrays = [r.capture.array() for r in records]
    kinds: dict[tuple[tuple[int, ...], str], list[int]] = {}
    for record, array in zip(records, arrays, strict=True):
        kinds.setdefault((array.shape, array.dtype.name), []).append(record.id)
    if len(kinds) > 1:
        found = "; ".join(
            f"{list(shape)} {dtype} (captures {_ids(ids)})"
            for (shape, dtype), ids in sorted(kinds.items(), key=lambda kv: kv[1][0])
        )
        raise DataError(
            f"{path}: the captured inputs differ in shape or dtype: {found}; "
            "export one kind at a time (--since the change)"
        )
    return {names[0]: np.stack(arrays)}


def _ids(ids: list[int]) -> str:
    return f"{ids[0]}" if len(ids) == 1 else f"{ids[0]}…{ids[-1]}, {len(ids)} of them"


def _labels(values: Sequence[Any], classes: Sequence[str] | None) -> np.ndarray:
    """Late labels as an array: class indices (int64), or numbers (float32) for a regressor."""
    import numpy as np

    index = {name: i for i, name in enumerate(classes)} if classes is not None else None
    numbers: list[float] = []
    for value in values:
        if index is not None and str(value) in index:
            numbers.append(index[str(value)])
            continue
        number = _number(value)
        if number is None:
            hint = (
                f"it is not one of --classes ({', '.join(index)})"
                if index is not None
                else "name the classes in index order with --classes"
            )
            raise DataError(f"the late label {value!r} is not a class index or a number; {hint}")
        numbers.append(number)
    if all(float(n).is_integer() for n in numbers):
        return np.asarray(numbers, dtype=np.int64)
    return np.asarray(numbers, dtype=np.float32)


def _number(value: Any) -> float | None:
    """``value`` as a finite number (``3``, ``"3"``, ``0.25``), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None
