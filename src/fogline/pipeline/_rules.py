"""Conditions on results (``label == "7" and score > 0.9``) and the rules that use them.

A :class:`Condition` is parsed once, when the spec is loaded, by
`simpleeval <https://github.com/danthedeckie/simpleeval>`_: comparisons,
``and``/``or``/``not``, arithmetic, ``in``, indexing (``top_k[0]["score"]``),
comprehensions over lists (``any(d["label"] == "person" for d in
detections)``) and a few functions (``abs``, ``min``, ``max``, ``len``,
``round``, ``any``, ``all``), with no imports and no attribute access but
one: ``drift.alarm`` reads key ``alarm`` of a mapping field (``drift["alarm"]``),
so a pipeline file cannot run code. The names it uses are checked against what
the pipeline's post-processing produces, so a typo fails at load time.

Evaluation is single-threaded: the runner evaluates every condition on its
collector thread.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simpleeval import (
    EvalWithCompoundTypes,
    FeatureNotAvailable,
    InvalidExpression,
    NameNotDefined,
)

from fogline.errors import ConfigError, ItemError

#: Names every condition may use, whatever the post-processing makes.
BASE_NAMES = frozenset({"source", "sequence", "position", "captured_at", "model", "truth"})
_FUNCTIONS = {
    "abs": abs,
    "min": min,
    "max": max,
    "len": len,
    "round": round,
    "any": any,
    "all": all,
}


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval with ``a.b`` meaning ``a["b"]`` on mappings, and refused on anything else."""

    def _eval_attribute(self, node: ast.Attribute) -> Any:
        value = self._eval(node.value)
        if not isinstance(value, Mapping):
            raise FeatureNotAvailable(f"`.{node.attr}` reads a key of a mapping, not of {value!r}")
        try:
            return value[node.attr]
        except KeyError:
            raise FeatureNotAvailable(f"no key {node.attr!r} in {value!r}") from None


@dataclass(frozen=True)
class Condition:
    """A boolean expression over a result's fields, parsed and checked once.

    >>> hot = Condition('label == "7" and score > 0.9')
    >>> sorted(hot.names)
    ['label', 'score']
    >>> hot({"label": "7", "score": 0.95}), hot({"label": "1", "score": 0.99})
    (True, False)
    >>> person = Condition('any(d["label"] == "person" and d["score"] > 0.5 for d in detections)')
    >>> sorted(person.names), person({"detections": [{"label": "person", "score": 0.7}]})
    (['detections'], True)
    >>> Condition("drift.alarm and score < 0.5")({"drift": {"alarm": True}, "score": 0.3})
    True
    >>> Condition("score >")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: cannot parse the condition 'score >': invalid syntax
    """

    text: str
    names: frozenset[str] = field(init=False, compare=False)
    #: ``(name, key)`` of each ``name.key`` the condition reads.
    keys: frozenset[tuple[str, str]] = field(init=False, compare=False)
    _tree: ast.Expr = field(init=False, repr=False, compare=False)
    _evaluator: EvalWithCompoundTypes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ConfigError("a condition must be a non-empty expression")
        evaluator = _Evaluator(functions=_FUNCTIONS)
        try:
            tree = evaluator.parse(self.text.strip())
        except SyntaxError as exc:
            raise ConfigError(f"cannot parse the condition {self.text!r}: {exc.msg}") from exc
        except InvalidExpression as exc:  # e.g. only a comment: nothing to evaluate
            raise ConfigError(
                f"cannot parse the condition {self.text!r}: there is no expression in it"
            ) from exc
        except (ValueError, RecursionError, MemoryError) as exc:
            # ast.parse: a NUL byte (ValueError on 3.11), or nesting past the parser's stack
            raise ConfigError(
                f"cannot parse the condition {self.text[:80]!r}: {type(exc).__name__}: {exc}"
            ) from exc
        loaded = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        bound = {  # loop variables of comprehensions are not result fields
            node.id
            for comp in ast.walk(tree)
            if isinstance(comp, ast.comprehension)
            for node in ast.walk(comp.target)
            if isinstance(node, ast.Name)
        }
        names = loaded - bound - set(_FUNCTIONS) - {"True", "False", "None", "true", "false"}
        evaluator.names = {"true": True, "false": False}
        object.__setattr__(self, "_tree", tree)
        object.__setattr__(self, "_evaluator", evaluator)
        object.__setattr__(self, "names", frozenset(names))
        keys = {
            (node.value.id, node.attr)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        }
        object.__setattr__(self, "keys", frozenset(keys))

    def check(self, known: frozenset[str]) -> None:
        """Raise :class:`ConfigError` if the condition uses a name no result will have.

        ``known`` may hold ``name.key`` entries: the keys of a mapping field
        (``drift.alarm``); ``name.key`` is accepted only for those.
        """
        unknown = sorted(self.names - known - BASE_NAMES)
        if unknown:
            have = ", ".join(sorted(k for k in known | BASE_NAMES if "." not in k))
            raise ConfigError(
                f"the condition {self.text!r} uses {', '.join(unknown)}, which no result has "
                f"(results have: {have})"
            )
        for name, key in sorted(self.keys):
            if name not in known or f"{name}.{key}" in known:
                continue  # a comprehension's variable, or a key the field has
            keys = sorted(k.partition(".")[2] for k in known if k.startswith(name + "."))
            has = f"{name} has {', '.join(keys)}" if keys else f"{name} is not a mapping"
            raise ConfigError(f"the condition {self.text!r} reads {name}.{key}, but {has}")

    def __call__(self, values: Mapping[str, Any]) -> bool:
        """Evaluate on ``values``; a name the result lacks or a type clash is an :class:`ItemError`."""
        evaluator = self._evaluator
        evaluator.names = {"true": True, "false": False, **values}
        try:
            return bool(evaluator.eval(self.text, previously_parsed=self._tree))
        except NameNotDefined as exc:
            raise ItemError(f"the condition {self.text!r} needs {exc.name!r}") from exc
        except Exception as exc:  # a type clash in the user's expression, e.g. "7" > 3
            raise ItemError(f"the condition {self.text!r} failed: {exc}") from exc


@dataclass(frozen=True)
class Rule:
    """A named condition and the sinks (actions) it triggers.

    >>> Rule("unsure", Condition("score < 0.6"), ("review",)).then
    ('review',)
    """

    name: str
    when: Condition
    then: tuple[str, ...] = ()
