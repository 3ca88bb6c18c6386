"""An online learner as an :class:`~fogline.model.Engine`: a River estimator that learns as it runs.

A pipeline's ``model:`` may name a River estimator instead of a model file
(``online: river.anomaly.HalfSpaceTrees``). :class:`OnlineEngine` runs it
behind the same ``Engine.run(batch)`` the micro-batcher calls, so sources,
post-processing, rules, sinks and the store work unchanged. Per item, by
the estimator's kind:

=============  ===============================  ============================  ===============
kind           per item                         output (per item)             learns
=============  ===============================  ============================  ===============
anomaly        ``score_one`` then ``learn_one``  ``score`` (one float)         from every item
classifier     ``predict_proba_one``            ``probabilities`` (classes)   from late labels
regressor      ``predict_one``                  ``prediction`` (one float)    from late labels
=============  ===============================  ============================  ===============

so the ``anomaly`` stage reads ``score`` and ``classify`` reads
``probabilities`` (in the order of the declared ``classes``). An item's
model input is flattened into River's feature dict, ``{0: x0, 1: x1, ...}``,
or keyed by the source's column names when it gives them.

An item whose features are not finite, or on which River raises, is not
learned from; its output is NaN, which the post-processing stages count and
log as a bad item. The state is checkpointed (see :mod:`._checkpoint`)
every ``checkpoint_every_s`` while it changes, and on :meth:`close`.

Concurrency: one lock serializes everything that touches the estimator
(runs, late labels, checkpoints): River's estimators are not thread-safe,
and an online learner must see its items in stream order anyway.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fogline.errors import ConfigError, SignatureMismatch
from fogline.model import OpenedModel, Signature, TensorSpec
from fogline.monitor._checkpoint import CheckpointHeader, load_checkpoint, save_checkpoint
from fogline.monitor._memory import FeatureMemory
from fogline.monitor._river import build_estimator, last_step, river_version

log = logging.getLogger("fogline.monitor")

#: The output each kind writes, named for the post-processing stage that reads it.
OUTPUTS: dict[str, str] = {
    "anomaly": "score",
    "classifier": "probabilities",
    "regressor": "prediction",
}


@dataclass(frozen=True)
class OnlineSpec:
    """Which estimator, built how, and where its state is kept.

    ``estimator`` is a dotted path to a River estimator class
    (``river.anomaly.HalfSpaceTrees``) or ``module:function`` returning one
    (a ``river.compose`` pipeline, say); it is called with ``params``.
    ``classes`` are a classifier's labels, in the order of its output.

    >>> OnlineSpec("river.anomaly.HalfSpaceTrees", {"seed": 1}).params
    {'seed': 1}
    """

    estimator: str
    params: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    checkpoint: Path | None = None
    checkpoint_every_s: float = 60.0


def _name_of(estimator: Any) -> str:
    return type(last_step(estimator)).__name__


class OnlineEngine:
    """A River estimator behind the :class:`~fogline.model.Engine` interface.

    ``item`` is the model input of one item (no batch dimension); ``features``
    names its flattened values (default: their positions). With a
    ``checkpoint`` that exists, the estimator resumes from it.

    >>> engine = OnlineEngine(
    ...     OnlineSpec("river.anomaly.HalfSpaceTrees", {"seed": 1, "window_size": 3}),
    ...     TensorSpec("x", "float32", (2,)),
    ... )
    >>> engine.signature.output_names
    ('score',)
    >>> out = engine.run({"x": np.array([[0.1, 0.2], [0.1, 0.2], [0.9, 0.9]], np.float32)})
    >>> out["score"].shape, engine.learned
    ((3,), 3)
    >>> engine.close()
    """

    backend = "river"
    precision = "fp64"
    device = "cpu"

    def __init__(
        self, spec: OnlineSpec, item: TensorSpec, features: Sequence[str] | None = None
    ) -> None:
        self.spec = spec
        self._estimator, self.kind = build_estimator(spec.estimator, spec.params)
        self.name = _name_of(self._estimator)
        self._input = item.name
        self._keys: tuple[Any, ...] | None = _keys(item, features)
        self._classes = spec.classes
        self._binary = False
        if self.kind == "classifier":
            self._binary = self._check_classes()
        elif spec.classes is not None:
            raise ConfigError(f"classes: only a classifier has classes, and this is {self.kind}")
        output = OUTPUTS[self.kind]
        shape: tuple[int | str | None, ...] = ("batch",)
        if self._classes is not None:
            shape = ("batch", len(self._classes))
        self._signature = Signature(
            (TensorSpec(item.name, item.dtype, ("batch", *item.shape)),),
            (TensorSpec(output, "float64", shape),),
            producer=f"river {river_version()}",
        )
        self._header = CheckpointHeader(
            spec.estimator,
            dict(spec.params),
            None if spec.classes is None else list(spec.classes),
            river_version(),
            [str(k) for k in self._keys] if self._keys is not None else [],
        )
        self._lock = threading.Lock()
        self.learned = 0  #: items (or labels) the estimator has learned from, across restarts
        self.resumed = 0  #: what it had learned when this run resumed it
        self.failed = 0  #: items River raised on, or with features that are not finite
        self.checkpoints = 0
        self.refused = 0  #: labels it could not use (not a class, not a number, bad features)
        #: Where a pipeline keeps items' features for their late labels (its counts are reported).
        self.memory: FeatureMemory | None = None
        self.seconds = 0.0  #: spent in run(): River's work and the conversions around it
        self._dirty = False
        self._closed = False
        self._next_save = time.monotonic() + spec.checkpoint_every_s
        self._probe()
        if spec.checkpoint is not None:
            self._resume(spec.checkpoint)

    @property
    def version(self) -> str:
        """``online-`` and the first 8 hex digits of the spec's sha256 (see :func:`open_online`)."""
        digest = hashlib.sha256(self._header.spec_key.encode()).hexdigest()
        return f"online-{digest[:8]}"

    # --- the Engine interface -------------------------------------------------------------

    @property
    def signature(self) -> Signature:
        return self._signature

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        batch = np.asarray(inputs[self._input])
        rows = batch.reshape(len(batch), -1)
        keys = self._keys or range(rows.shape[1])
        if len(keys) != rows.shape[1]:
            raise SignatureMismatch(
                f"inputs: {rows.shape[1]} values per item, the online model takes {len(keys)}"
            )
        usable = None  # None: every item may be used (the common case, checked once per batch)
        if rows.dtype.kind in "fc":
            finite = np.isfinite(rows).all(axis=1)
            usable = None if finite.all() else finite.tolist()
        values = rows.tolist()
        with self._lock:
            if self.kind == "anomaly":
                out = self._score_and_learn(values, usable, keys)
            elif self.kind == "classifier":
                out = self._predict_proba(values, usable, keys)
            else:
                out = self._predict(values, usable, keys)
            self._maybe_save()
            self.seconds += time.perf_counter() - started
        return {OUTPUTS[self.kind]: out}

    def close(self) -> None:
        """Checkpoint what changed since the last checkpoint (once; again is a no-op)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._dirty:
                self._save()

    def summary(self) -> str:
        """One line for a run's summary: what it learned, from where, where its state goes.

        >>> engine = OnlineEngine(OnlineSpec("river.anomaly.HalfSpaceTrees"),
        ...                       TensorSpec("x", "float32", (2,)))
        >>> engine.summary()
        'online model HalfSpaceTrees: learned from 0 items, 0 in this run; no checkpoint'
        """
        unit = "items" if self.kind == "anomaly" else "labels"
        line = (
            f"online model {self.name}: learned from {self.learned:,} {unit}, "
            f"{self.learned - self.resumed:,} in this run"
        )
        if self.resumed:
            line += f" (resumed at {self.resumed:,})"
        if self.failed:
            line += f"; {self.failed:,} items failed (not learned)"
        if self.refused:
            line += f"; {self.refused:,} labels refused"
        memory = self.memory
        if memory is not None and (memory.missed or memory.forgotten):
            line += (
                f"; {memory.missed:,} labels came for items no longer remembered, "
                f"{memory.forgotten:,} items forgotten before a label came"
            )
        where = self.spec.checkpoint
        return line + (f"; state in {where}" if where is not None else "; no checkpoint")

    # --- learning from labels -------------------------------------------------------------

    def learn(self, features: np.ndarray, label: Any) -> bool:
        """Learn one item's late label; False when it cannot be used (counted by the caller).

        An anomaly detector learns from every item as it runs and takes no
        labels; a classifier takes one of its ``classes``, a regressor a number.
        """
        target = self._target(label)
        values = np.asarray(features).reshape(-1)
        if target is None or (values.dtype.kind in "fc" and not np.isfinite(values).all()):
            self.refused += 1
            return False
        keys = self._keys or range(values.size)
        if len(keys) != values.size:  # not this model's input: nothing to learn from
            self.refused += 1
            return False
        x = dict(zip(keys, values.tolist(), strict=True))
        with self._lock:
            try:
                self._estimator.learn_one(x, target)
            except Exception as exc:  # River's own refusal of this item
                self._fail(exc)
                self.refused += 1
                return False
            self.learned += 1
            self._dirty = True
            self._maybe_save()
        return True

    def _target(self, label: Any) -> Any:
        if self.kind == "anomaly":
            return None
        if self.kind == "regressor":
            try:
                value = float(label)
            except (TypeError, ValueError):
                return None
            return value if math.isfinite(value) else None
        assert self._classes is not None
        text = str(label)
        if text not in self._classes:
            return None
        return text == self._classes[1] if self._binary else text

    # --- per kind -------------------------------------------------------------------------

    def _score_and_learn(
        self, values: list[list[float]], usable: list[bool] | None, keys: Sequence[Any]
    ) -> np.ndarray:
        scores = [math.nan] * len(values)
        score_one, learn_one = self._estimator.score_one, self._estimator.learn_one
        learned = 0
        for i, row in enumerate(values):
            if usable is not None and not usable[i]:
                self.failed += 1
                continue
            # run() checked the row length; strict=True would cost a third more per dict
            x = dict(zip(keys, row))  # noqa: B905
            try:
                scores[i] = score_one(x)
                learn_one(x)
            except Exception as exc:
                self._fail(exc)
                continue
            learned += 1
        if learned:
            self.learned += learned
            self._dirty = True
        return np.array(scores, np.float64)

    def _predict_proba(
        self, values: list[list[float]], usable: list[bool] | None, keys: Sequence[Any]
    ) -> np.ndarray:
        assert self._classes is not None
        classes: Sequence[Any] = (False, True) if self._binary else self._classes
        out = np.full((len(values), len(classes)), math.nan)
        proba = self._estimator.predict_proba_one
        for i, row in enumerate(values):
            if usable is not None and not usable[i]:
                self.failed += 1
                continue
            try:
                got = proba(dict(zip(keys, row)))  # noqa: B905 (see _score_and_learn)
            except Exception as exc:
                self._fail(exc)
                continue
            vector = [float(got.get(c, 0.0)) for c in classes]
            total = sum(vector)
            # Nothing learned yet (an empty dict): every class equally likely.
            out[i] = [v / total for v in vector] if total > 0 else 1.0 / len(classes)
        return out

    def _predict(
        self, values: list[list[float]], usable: list[bool] | None, keys: Sequence[Any]
    ) -> np.ndarray:
        out = [math.nan] * len(values)
        predict = self._estimator.predict_one
        for i, row in enumerate(values):
            if usable is not None and not usable[i]:
                self.failed += 1
                continue
            try:
                out[i] = float(predict(dict(zip(keys, row))))  # noqa: B905 (as above)
            except Exception as exc:
                self._fail(exc)
        return np.array(out, np.float64)

    def _fail(self, exc: Exception) -> None:
        self.failed += 1
        if self.failed <= 20 or self.failed % 1000 == 0:
            log.warning(
                "online model %s: an item failed: %s (%d so far)", self.name, exc, self.failed
            )

    def _check_classes(self) -> bool:
        """True for a binary classifier (River's labels False/True for ``classes[0]``/``[1]``)."""
        classes = self._classes
        if not classes:
            raise ConfigError(
                "classes: an online classifier needs its classes, e.g. `classes: [normal, fault]`"
            )
        if len(set(classes)) != len(classes):
            raise ConfigError(f"classes: {list(classes)} names a class twice")
        binary = not last_step(self._estimator)._multiclass
        if binary and len(classes) != 2:
            raise ConfigError(
                f"classes: {self.name} is a binary classifier; give it two classes "
                f"(got {len(classes)})"
            )
        return binary

    def _probe(self) -> None:
        """Run a copy on one item of zeros: River checks few values, so a bad one shows here."""
        x = dict.fromkeys(self._keys or (0,), 0.0)
        trial = copy.deepcopy(self._estimator)
        try:
            if self.kind == "anomaly":
                trial.score_one(x)
                trial.learn_one(x)
            elif self.kind == "classifier":
                assert self._classes is not None
                trial.predict_proba_one(x)
                trial.learn_one(x, self._target(self._classes[0]))
            else:
                trial.predict_one(x)
                trial.learn_one(x, 0.0)
        except Exception as exc:
            raise ConfigError(
                f"params: {self.name} fails on a first item: {type(exc).__name__}: {exc}"
            ) from exc

    # --- checkpoints ----------------------------------------------------------------------

    def _resume(self, path: Path) -> None:
        if not path.exists():
            try:
                _pickles(self._estimator)
            except ConfigError as exc:
                raise ConfigError(f"checkpoint: {exc}") from exc
            return
        try:
            header, estimator = load_checkpoint(path, self._header)
        except ConfigError as exc:
            raise ConfigError(f"checkpoint: {exc}") from exc
        self._estimator = estimator
        self.learned = self.resumed = header.learned
        log.info("online model %s resumed from %s (%d learned)", self.name, path, header.learned)

    def _maybe_save(self) -> None:
        if self._dirty and time.monotonic() >= self._next_save:
            self._save()

    def _save(self) -> None:
        path = self.spec.checkpoint
        self._next_save = time.monotonic() + self.spec.checkpoint_every_s
        if path is None:
            return
        header = self._header.with_progress(learned=self.learned, saved_at=time.time())
        try:
            save_checkpoint(path, header, self._estimator)
        except (ConfigError, OSError) as exc:  # the run goes on; the next interval retries
            log.error("online model %s: checkpoint to %s failed: %s", self.name, path, exc)
            return
        self.checkpoints += 1
        self._dirty = False


def _pickles(estimator: Any) -> None:
    import pickle

    try:
        pickle.dumps(estimator)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"the online model cannot be pickled, so it cannot be checkpointed: {exc}"
        ) from exc


def _keys(item: TensorSpec, features: Sequence[str] | None) -> tuple[Any, ...] | None:
    """The feature dict's keys: names when given, else positions (None: size known per item)."""
    size = math.prod(d for d in item.shape if isinstance(d, int))
    known = all(isinstance(d, int) for d in item.shape)
    if features is not None:
        if known and len(features) != size:
            raise ConfigError(f"features: {len(features)} names for {size} values per item")
        return tuple(features)
    return tuple(range(size)) if known else None


def open_online(
    spec: OnlineSpec,
    item: TensorSpec,
    *,
    features: Sequence[str] | None = None,
    name: str | None = None,
    version: str | None = None,
) -> OpenedModel:
    """An :class:`OnlineEngine` as an opened model, named after the estimator.

    The version defaults to ``online-`` and eight hex digits of the spec's
    hash: it changes when the estimator, its parameters or classes do (a
    different model), not as the model learns.

    >>> opened = open_online(OnlineSpec("river.linear_model.LinearRegression"),
    ...                      TensorSpec("x", "float32", (3,)))
    >>> opened.name, opened.version, opened.engine.signature.output_names
    ('LinearRegression', 'online-5084b672', ('prediction',))
    """
    engine = OnlineEngine(spec, item, features)
    file = spec.checkpoint if spec.checkpoint is not None else Path(spec.estimator)
    return OpenedModel(engine, name or engine.name, version or engine.version, file)
