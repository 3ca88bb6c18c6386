"""Federated strategies: one :class:`Strategy` template, one file per algorithm.

>>> import numpy as np
>>> strategy = strategy_for("fedavg", fraction=0.5)
>>> [i.client for i in strategy.configure(1, ["a", "b", "c", "d"], np.random.default_rng(0))]
['c', 'd']
"""

from __future__ import annotations

from fogline.federated.strategy._base import Aggregate, Bound, Instruction, Strategy
from fogline.federated.strategy._registry import STRATEGIES, strategy_for
from fogline.federated.strategy._weights import Update, Weights
from fogline.federated.strategy.fedadagrad import FedAdagrad
from fogline.federated.strategy.fedadam import FedAdam
from fogline.federated.strategy.fedavg import FedAvg
from fogline.federated.strategy.fedmedian import FedMedian
from fogline.federated.strategy.fedprox import FedProx, proximal_gradient
from fogline.federated.strategy.fedyogi import FedYogi
from fogline.federated.strategy.krum import Krum, MultiKrum
from fogline.federated.strategy.trimmed_mean import TrimmedMean

__all__ = [
    "STRATEGIES",
    "Aggregate",
    "Bound",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedMedian",
    "FedProx",
    "FedYogi",
    "Instruction",
    "Krum",
    "MultiKrum",
    "Strategy",
    "TrimmedMean",
    "Update",
    "Weights",
    "proximal_gradient",
    "strategy_for",
]
