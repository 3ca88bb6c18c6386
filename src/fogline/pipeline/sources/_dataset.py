"""A data set replayed item by item: an ``.npz`` file or a Python function.

Loading goes through :func:`fogline.data.load_dataset`, the same reader
the optimizer uses for calibration and evaluation data, so a function that
feeds ``fogline optimize`` (``fogline.examples:digits_eval``) feeds a pipeline
too. Besides its conventions (arrays or dicts of arrays yielded
in batches, labels under ``labels``), this source takes an ``.npz`` with
arrays ``x`` and ``y``, and a function that returns ``x`` or ``(x, y)``.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
from pydantic import PrivateAttr, field_validator, model_validator

from fogline.data import import_function, load_dataset
from fogline.errors import ConfigError, DataError
from fogline.model import Signature, TensorSpec
from fogline.pipeline._base import ArraySpec, ExistingPath, SourceSpec
from fogline.pipeline._item import Corrupt, Item

#: Array names that hold labels, besides ``labels`` (:func:`load_dataset` takes those).
LABEL_NAMES = ("y",)
_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _AnyInput(Signature):
    """A one-input signature that takes any array: a data source has no model to fit yet."""

    def __init__(self) -> None:
        super().__init__((TensorSpec("x", "float32", ()),), ())

    def check_feeds(self, feeds: Mapping[str, np.ndarray], where: str = "inputs") -> None:
        return None


class DatasetSpec(SourceSpec):
    """Replays the items of a data set: ``path`` (``.npz``) or ``function`` (``module:function``).

    Each item is one ``x[i]`` (no batch dimension), its id (``meta["id"]``)
    ``name#i``; when the data set has labels, ``meta["label"]`` is ``str(y[i])``. The data is loaded once, the
    first time :meth:`output` or :meth:`build` needs it, and kept.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "d.npz"
    >>> np.savez(path, x=np.zeros((5, 1, 8, 8), np.float32), y=np.arange(5))
    >>> DatasetSpec(path=path).output().describe()
    '(1, 8, 8) float32'
    """

    type: Literal["dataset"] = "dataset"
    path: ExistingPath | None = None
    function: str | None = None
    loop: bool = False

    _arrays: tuple[np.ndarray, np.ndarray | None] | None = PrivateAttr(None)

    @field_validator("function")
    @classmethod
    def _function_form(cls, value: str | None) -> str | None:
        if value is not None and not _FUNCTION.match(value):
            raise ValueError(f"function {value!r}: write it module:function")
        return value

    @model_validator(mode="after")
    def _one(self) -> DatasetSpec:
        if (self.path is None) == (self.function is None):
            raise ValueError("dataset takes either `path` (an .npz file) or `function`")
        return self

    @property
    def where(self) -> str:
        """The data set's name in positions and messages."""
        return self.path.name if self.path is not None else str(self.function)

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(x, y)``, loaded on first use; ``y`` is None without labels."""
        if self._arrays is None:  # two threads racing here would only load it twice
            try:
                self._arrays = self._load()
            except DataError as exc:
                raise ConfigError(str(exc)) from exc
        return self._arrays

    def _load(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self.function is not None:
            direct = _returned_arrays(self.function)
            if direct is not None:
                return _checked(direct[0], direct[1], self.where)
        dataset = load_dataset(str(self.path or self.function), _AnyInput(), batch_size=1 << 62)
        names = {name for batch in dataset.batches for name in batch}
        labels = dataset.labels
        for name in LABEL_NAMES:
            if labels is None and name in names:
                labels = dataset.array(name)
                names.discard(name)
        if len(names) != 1:
            raise DataError(
                f"{self.where}: holds arrays {', '.join(sorted(names))}; a dataset source "
                "replays one array (x) with optional labels (y or labels)"
            )
        (x_name,) = names
        x = dataset.array(x_name)
        return _checked(x, labels, self.where)

    def output(self) -> ArraySpec:
        x, _ = self.arrays()
        return ArraySpec(tuple(x.shape[1:]), x.dtype.name)

    def build(self, name: str) -> DatasetSource:
        x, y = self.arrays()
        return DatasetSource(name, x, y, where=self.where, loop=self.loop)


def _returned_arrays(spec: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``(x, y)`` when the function returns ``x`` or ``(x, y)``; None when it yields batches.

    A generator function is only inspected, not run: ``load_dataset`` runs it.
    """
    func = import_function(spec)
    if inspect.isgeneratorfunction(func):
        return None
    try:
        produced: Any = func()
    except Exception as exc:
        raise DataError(f"{spec}: raised {type(exc).__name__}: {exc}") from exc
    if isinstance(produced, np.ndarray):
        return produced, None
    if isinstance(produced, tuple) and len(produced) == 2:
        return np.asarray(produced[0]), np.asarray(produced[1])
    return None  # batches in a list: load_dataset calls it again and reads them


def _checked(
    x: np.ndarray, y: np.ndarray | None, where: str
) -> tuple[np.ndarray, np.ndarray | None]:
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{where}: holds no items (x has shape {list(x.shape)})")
    if y is not None and len(y) != len(x):
        raise DataError(f"{where}: {len(x)} items but {len(y)} labels")
    return x, y


class DatasetSource:
    """Yields ``x[i]`` (a copy: stages may not change the data set) with ``str(y[i])`` labels."""

    def __init__(
        self,
        name: str,
        x: np.ndarray,
        y: np.ndarray | None = None,
        *,
        where: str = "dataset",
        loop: bool = False,
    ) -> None:
        self.name = name
        self._x = x
        self._y = y
        self._where = where
        self._loop = loop

    def read(self, stop: threading.Event) -> Iterator[Item | Corrupt]:
        sequence = 0
        while True:
            for i in range(len(self._x)):
                if stop.is_set():
                    return
                where = f"{self._where}#{i}"  # also the id: a late label names the item by it
                meta: dict[str, Any] = {"position": where, "id": where}
                if self._y is not None:
                    meta["label"] = str(self._y[i])
                yield Item(self.name, sequence, time.time(), np.array(self._x[i]), meta)
                sequence += 1
            if not self._loop:
                return
