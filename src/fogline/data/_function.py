"""Data sets written in Python: ``module:function`` yields batches (dicts of arrays, or arrays)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fogline.data._dataset import LABELS_KEY, Dataset, check_fits
from fogline.errors import DataError
from fogline.model import Signature


def import_function(spec: str) -> Callable[..., Any]:
    """The callable named ``module:function``, imported; a :class:`DataError` when it is not there.

    >>> import_function("fogline.examples:digits_eval").__name__
    'digits_eval'
    >>> import_function("fogline.examples:nothing")
    Traceback (most recent call last):
    fogline.errors.DataError: fogline.examples:nothing: cannot import 'nothing' from ...
    """
    module_name, _, func_name = spec.partition(":")
    try:
        func: Callable[..., Any] = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"{spec}: cannot import {func_name!r} from {module_name!r}: {exc}") from exc
    return func


def from_function(spec: str, signature: Signature) -> Dataset:
    """Call ``spec`` and read the batches it yields; modules in the working folder import too."""
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    func = import_function(spec)
    batches: list[dict[str, np.ndarray]] = []
    labels: list[np.ndarray] = []
    try:
        produced: Iterable[Any] = func()
        for item in produced:
            batch = _as_batch(item, signature, spec)
            if LABELS_KEY in batch:
                labels.append(np.asarray(batch.pop(LABELS_KEY)))
            batches.append(batch)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{spec}: raised {type(exc).__name__}: {exc}") from exc
    if not batches:
        raise DataError(f"{spec}: yielded no batches")
    if labels and len(labels) != len(batches):
        raise DataError(f"{spec}: some batches carry labels and some do not")
    check_fits(batches, signature, spec)
    return Dataset(spec, tuple(batches), np.concatenate(labels) if labels else None)


def _as_batch(item: Any, signature: Signature, spec: str) -> dict[str, np.ndarray]:
    if isinstance(item, np.ndarray):
        if len(signature.inputs) != 1:
            raise DataError(f"{spec}: yielded a bare array but the model has several inputs")
        return {signature.inputs[0].name: item}
    if isinstance(item, Mapping):
        return {str(k): np.asarray(v) for k, v in item.items()}
    raise DataError(f"{spec}: yields {type(item).__name__}; yield dicts of arrays or arrays")
