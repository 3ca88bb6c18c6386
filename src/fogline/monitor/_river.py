"""Naming a River estimator in a spec: import it, check its parameters, tell its kind.

``online: river.anomaly.HalfSpaceTrees`` (a class) or ``online:
package.module:function`` (a factory, for what ``params`` alone cannot
build, such as a ``river.compose`` pipeline), called with ``params``. Every
refusal names the key at fault (``online: ...``, ``params.<key>: ...``)
and says what would be accepted, before anything runs. River is imported
here only when a spec names an estimator.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

from fogline.errors import ConfigError

Kind = Literal["anomaly", "classifier", "regressor"]
INSTALL = "River is not installed; install it with: pip install 'fogline[monitor]'"


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
            f"online: {estimator} is a {type(last_step(made)).__name__}; an online model must be "
            "an anomaly detector (score_one), a classifier (predict_proba_one) or a regressor "
            "(predict_one)"
        )
    return made, kind


def kind_of(estimator: Any) -> Kind | None:
    """``anomaly``, ``classifier`` or ``regressor`` by the last step of a pipeline; else None."""
    from river import base

    last = last_step(estimator)
    if isinstance(last, base.AnomalyDetector | base.AnomalyFilter):
        return "anomaly"
    if isinstance(last, base.Classifier) and not isinstance(last, base.MultiLabelClassifier):
        return "classifier"
    if isinstance(last, base.Regressor) and not isinstance(last, base.MultiTargetRegressor):
        return "regressor"
    return None


def last_step(estimator: Any) -> Any:
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
