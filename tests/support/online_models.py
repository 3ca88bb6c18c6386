"""River models for the online-learner tests that a YAML ``params:`` cannot build."""

from __future__ import annotations

from typing import Any


def unpicklable_detector() -> Any:
    """A detector with a lambda in it: it runs, but pickle (so a checkpoint) cannot take it."""
    from river import anomaly, compose

    return compose.FuncTransformer(lambda x: x) | anomaly.HalfSpaceTrees(seed=1)
