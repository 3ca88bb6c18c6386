"""Several variants of one model behind one :class:`Engine`, switched between batches.

A device that must slow down under load (or when its battery runs low) keeps
every variant of its model loaded, best first and cheapest last (FP32, INT8,
a pruned or distilled student), and runs each batch on the one that is
active now. :meth:`VariantEngine.use` switches: a batch already running
finishes on the variant it started with, the next one runs on the new one, so
a switch never drops or splits an item and the batcher in front of the engine
does not notice it. Every variant stays in memory all the time (the cost of
switching in microseconds rather than the seconds a load takes).

Each batch's outputs carry one extra output, :data:`VARIANT_OUTPUT`: per row,
the index of the variant that computed it, so whoever splits the batch into
items knows which variant answered each one (the pipeline records it in the
result's model version and removes it before post-processing).

Concurrency: ``run`` may be called from several batcher workers at once (the
variants' engines must be thread-safe, as ONNX Runtime's are); ``use`` from
any thread. The active index is one attribute, read once per batch.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np

from fogline.errors import ConfigError
from fogline.model._engine import Engine, engine_fallback
from fogline.model._signature import Signature, TensorSpec

#: The extra output of every batch a :class:`VariantEngine` runs: the variant's index per row.
VARIANT_OUTPUT = "fogline.variant"


class VariantEngine:
    """An :class:`Engine` that runs each batch on the active one of several variants.

    The variants' signatures must be the same (inputs and outputs, names,
    dtypes and shapes); the first is active at the start.

    >>> from fogline.examples import digits_model_path
    >>> from fogline.model import load_engine
    >>> fp32, copy = load_engine(digits_model_path()), load_engine(digits_model_path())
    >>> engine = VariantEngine([("fp32", fp32), ("copy", copy)])
    >>> batch = {"pixels": np.zeros((3, 1, 8, 8), np.float32)}
    >>> engine.run(batch)[VARIANT_OUTPUT].tolist()
    [0, 0, 0]
    >>> engine.use(1), engine.active, engine.run(batch)[VARIANT_OUTPUT].tolist()
    (0, 'copy', [1, 1, 1])
    >>> engine.served()
    {'fp32': 3, 'copy': 3}
    """

    def __init__(self, variants: Sequence[tuple[str, Engine]]) -> None:
        if not variants:
            raise ConfigError("a variant engine needs at least one variant")
        names = [name for name, _ in variants]
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"two variants are named {twice[0]!r}; give each a distinct name")
        first_name, first = variants[0]
        for name, engine in variants[1:]:
            if not _same(engine.signature, first.signature):
                raise ConfigError(
                    f"variant {name!r} has signature {describe(engine.signature)}, but "
                    f"{first_name!r} has {describe(first.signature)}; every variant must take "
                    "and give the same tensors"
                )
        self.names: tuple[str, ...] = tuple(names)
        self.engines: tuple[Engine, ...] = tuple(engine for _, engine in variants)
        self._index = 0
        self._lock = threading.Lock()
        self._served = [0] * len(self.engines)
        self._cost: list[float | None] = [None] * len(self.engines)  # seconds per item, recent
        self._best: list[float | None] = [None] * len(self.engines)  # the lowest _cost seen
        #: What runs the active variant (the Engine attributes), updated by :meth:`use`.
        self.backend, self.precision, self.device = first.backend, first.precision, first.device
        self.fallback = engine_fallback(first)

    # --- what runs now --------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The index of the active variant (0: the best)."""
        return self._index

    @property
    def active(self) -> str:
        """The name of the active variant."""
        return self.names[self._index]

    def use(self, index: int) -> int:
        """Make variant ``index`` the active one from the next batch on; returns the previous."""
        if not 0 <= index < len(self.engines):
            raise ConfigError(f"no variant {index}; there are {len(self.engines)}")
        engine = self.engines[index]
        with self._lock:
            previous, self._index = self._index, index
            self.backend, self.precision, self.device = (
                engine.backend,
                engine.precision,
                engine.device,
            )
            self.fallback = engine_fallback(engine)
        return previous

    def cost(self, index: int, *, best: bool = False) -> float | None:
        """Seconds of compute per item of variant ``index`` lately (None: it has not run).

        A moving average over its batches (each weighs a fifth), so it follows
        what the device can do now (other processes' load, thermal throttling);
        ``best``: the lowest that average has been, what the variant can do on
        a device that is not busy with anything else.
        """
        with self._lock:
            return self._best[index] if best else self._cost[index]

    def warm(self) -> None:
        """Run one item of zeros through every variant (not counted), so none is cold when
        switched to: a session's first run allocates and is many times slower than the next.

        Skipped for a model whose input has a size other than the batch left open.
        """
        feeds: dict[str, np.ndarray] = {}
        for spec in self.signature.inputs:
            dims = spec.shape[1:]
            if not all(isinstance(d, int) for d in dims):
                return
            feeds[spec.name] = np.zeros((1, *dims), spec.dtype)  # type: ignore[arg-type]
        for engine in self.engines:
            engine.run(feeds)

    def served(self) -> dict[str, int]:
        """Items each variant has computed so far, by name."""
        with self._lock:
            return dict(zip(self.names, self._served, strict=True))

    # --- the Engine interface -------------------------------------------------------------

    @property
    def signature(self) -> Signature:
        return self.engines[0].signature

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        index = self._index  # read once: the whole batch runs on one variant
        started = time.perf_counter()
        outputs = dict(self.engines[index].run(inputs))
        took = time.perf_counter() - started
        rows = len(next(iter(inputs.values()))) if inputs else 0
        outputs[VARIANT_OUTPUT] = np.full(rows, index, np.int32)
        with self._lock:
            self._served[index] += rows
            if rows:
                each, before = took / rows, self._cost[index]
                now = each if before is None else before + 0.2 * (each - before)
                self._cost[index] = now
                lowest = self._best[index]
                self._best[index] = now if lowest is None else min(lowest, now)
        return outputs

    def close(self) -> None:
        for engine in self.engines:
            engine.close()


def _same(a: Signature, b: Signature) -> bool:
    """Same names, dtypes and fixed dims; a dynamic dim matches any dynamic dim, whatever its name."""

    def dims(spec: TensorSpec) -> tuple[int | None, ...]:
        return tuple(d if isinstance(d, int) else None for d in spec.shape)

    def side(specs: Sequence[TensorSpec]) -> list[tuple[str, str, tuple[int | None, ...]]]:
        return [(s.name, s.dtype, dims(s)) for s in specs]

    return side(a.inputs) == side(b.inputs) and side(a.outputs) == side(b.outputs)


def describe(signature: Signature) -> str:
    """``pixels float32 [batch, 1, 8, 8] -> logits float32 [batch, 10]``"""

    def side(specs: Sequence[TensorSpec]) -> str:
        return ", ".join(f"{s.name} {s.dtype} {s.describe_shape()}" for s in specs)

    return f"{side(signature.inputs)} -> {side(signature.outputs)}"


__all__ = ["VARIANT_OUTPUT", "VariantEngine"]
