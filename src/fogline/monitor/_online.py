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
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fogline.errors import ConfigError, SignatureMismatch
from fogline.model import OpenedModel, Signature, TensorSpec
from fogline.monitor._checkpoint import CheckpointHeader, load_checkpoint, save_checkpoint
from fogline.monitor._memory import FeatureMemory

log = logging.getLogger("fogline.monitor")

Kind = Literal["anomaly", "classifier", "regressor"]
#: The output each kind writes, named for the post-processing stage that reads it.
OUTPUTS: dict[str, str] = {
    "anomaly": "score",
    "classifier": "probabilities",
    "regressor": "prediction",
}
INSTALL = "River is not installed; install it with: pip install 'fogline[monitor]'"


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


def river_version() -> str:
    """The installed River's version; :class:`ConfigError` with the install hint without it."""
    if importlib.util.find_spec("river") is None:
        raise ConfigError(f"online: {INSTALL}")
    return importlib.metadata.version("river")


def build_estimator(estimator: str, params: Mapping[str, Any]) -> tuple[Any, Kind]:
    """The estimator ``estimator`` names, built with ``params``, and its kind.

    Errors name the key at fault: ``online: ...`` for the path,
    ``params.<key>: ...`` for a parameter the constructor does not take.

    >>> model, kind = build_estimator("river.anomaly.HalfSpaceTrees", {"n_trees": 5})
    >>> type(model).__name__, kind
    ('HalfSpaceTrees', 'anomaly')
    >>> build_estimator("river.anomaly.HalfSpaceTrees", {"trees": 5})
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: params.trees: HalfSpaceTrees takes no parameter 'trees'; it takes n_trees, height, window_size, limits, seed
    """
    river_version()
    from river import base

    target = _import(estimator)
    if inspect.isclass(target):
        if not issubclass(target, base.Estimator):
            raise ConfigError(f"online: {estimator} is not a River estimator")
        _check_params(target, params)
        made = _call(target, params, target.__name__)
    elif callable(target):
        _check_params(target, params)
        made = _call(target, params, estimator)
        if not isinstance(made, base.Estimator):
            raise ConfigError(
                f"online: {estimator} returned {type(made).__name__}, not a River estimator"
            )
    else:
        raise ConfigError(f"online: {estimator} is neither an estimator class nor a function")
    kind = kind_of(made)
    if kind is None:
        raise ConfigError(
            f"online: {estimator} is a {type(_last_step(made)).__name__}; an online model must be "
            "an anomaly detector (score_one), a classifier (predict_proba_one) or a regressor "
            "(predict_one)"
        )
    return made, kind


def kind_of(estimator: Any) -> Kind | None:
    """``anomaly``, ``classifier`` or ``regressor`` by the last step of a pipeline; else None."""
    from river import base

    last = _last_step(estimator)
    if isinstance(last, base.AnomalyDetector | base.AnomalyFilter):
        return "anomaly"
    if isinstance(last, base.Classifier) and not isinstance(last, base.MultiLabelClassifier):
        return "classifier"
    if isinstance(last, base.Regressor) and not isinstance(last, base.MultiTargetRegressor):
        return "regressor"
    return None


def _last_step(estimator: Any) -> Any:
    from river import compose

    while isinstance(estimator, compose.Pipeline):
        estimator = estimator._last_step
    return estimator


def _import(path: str) -> Any:
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(
            f"online: {path!r} names no estimator; write a dotted path such as "
            "river.anomaly.HalfSpaceTrees, or module:function"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"online: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"online: {module_name} has no {attr!r}") from None


def _check_params(target: Callable[..., Any], params: Mapping[str, Any]) -> None:
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # nothing to check against: the call itself will tell
    taken = [
        name
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    what = getattr(target, "__name__", str(target))
    for key in params:
        if key not in taken:
            raise ConfigError(
                f"params.{key}: {what} takes no parameter {key!r}; "
                f"it takes {', '.join(taken) or 'none'}"
            )
    for key, value in params.items():
        default = signature.parameters[key].default
        if not _same_kind(value, default):
            raise ConfigError(
                f"params.{key}: {what} takes {type(default).__name__} here "
                f"(its default is {default!r}), got {value!r}"
            )
    missing = [
        name
        for name, p in signature.parameters.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and name not in params
    ]
    if missing:
        raise ConfigError(f"params: {what} needs {', '.join(missing)}")


def _same_kind(value: Any, default: Any) -> bool:
    """Whether ``value`` may stand where the constructor's ``default`` is (numbers, text, flags).

    >>> _same_kind(3, 0.5), _same_kind("many", 10), _same_kind(None, 10), _same_kind([1], None)
    (True, False, True, True)
    """
    if value is None or default is None or default is inspect.Parameter.empty:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _call(target: Callable[..., Any], params: Mapping[str, Any], what: str) -> Any:
    try:
        return target(**params)
    except Exception as exc:  # the constructor's own check of a value
        raise ConfigError(f"params: {what} refused them: {type(exc).__name__}: {exc}") from exc


def _name_of(estimator: Any) -> str:
    return type(_last_step(estimator)).__name__


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
        binary = not _last_step(self._estimator)._multiclass
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
