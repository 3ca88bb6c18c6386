"""The strategies by name, as ``fogline fl --strategy NAME`` spells them."""

from __future__ import annotations

from typing import Any

from fogline.errors import ConfigError
from fogline.federated.strategy._base import Strategy
from fogline.federated.strategy.fedadagrad import FedAdagrad
from fogline.federated.strategy.fedadam import FedAdam
from fogline.federated.strategy.fedavg import FedAvg
from fogline.federated.strategy.fedmedian import FedMedian
from fogline.federated.strategy.fedprox import FedProx
from fogline.federated.strategy.fedyogi import FedYogi
from fogline.federated.strategy.krum import Krum, MultiKrum
from fogline.federated.strategy.trimmed_mean import TrimmedMean

__all__ = ["STRATEGIES", "strategy_for"]

#: Every strategy, by its registry name.
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedProx,
        FedAdam,
        FedYogi,
        FedAdagrad,
        FedMedian,
        TrimmedMean,
        Krum,
        MultiKrum,
    )
}


def strategy_for(name: str, **options: Any) -> Strategy:
    """The strategy called ``name``, built with ``options``.

    >>> strategy_for("krum", f=2)
    Krum(f=2)
    >>> strategy_for("fedsgd")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: unknown strategy 'fedsgd'; known: fedadagrad, fedadam, fedavg, fedmedian, fedprox, fedyogi, krum, multi-krum, trimmed-mean
    """
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}")
    try:
        return cls(**options)
    except TypeError as exc:
        raise ConfigError(f"strategy {name!r}: {exc}") from exc
