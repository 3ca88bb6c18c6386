"""Splitting one labelled set into the local data of N simulated clients.

Three ways, as ``fogline fl simulate --split`` spells them:

* ``iid``: a seeded shuffle cut into N nearly equal parts;
* ``dirichlet:ALPHA``: label skew; for every class, its examples are dealt to
  the clients in proportions drawn from ``Dirichlet(ALPHA, ..., ALPHA)``
  (small ALPHA: each client sees few classes; large: close to iid);
* ``shards:K``: the examples sorted by label and cut into ``N * K`` shards,
  K of them dealt to each client (McMahan et al. 2017), so a client sees
  about K classes.

The same seed gives the same split. Every client gets at least one example:
a split needs at least N examples (``shards:K`` at least ``N * K``), and a
client that the Dirichlet draw leaves empty takes one example from the
client that holds the most (seeded, so still deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fogline.errors import ConfigError

__all__ = ["SplitSpec", "split_clients"]

SplitKind = Literal["iid", "dirichlet", "shards"]
Data = tuple[npt.NDArray[Any], npt.NDArray[Any]]


@dataclass(frozen=True)
class SplitSpec:
    """How to split: ``kind`` and its parameter (ALPHA for dirichlet, K for shards).

    >>> SplitSpec.parse("dirichlet:0.5")
    SplitSpec(kind='dirichlet', param=0.5)
    >>> SplitSpec.parse("shards:0")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: --split shards:K needs a whole number K >= 1, not '0'
    """

    kind: SplitKind = "iid"
    param: float = 0.0

    def __post_init__(self) -> None:
        if self.kind == "dirichlet" and not (np.isfinite(self.param) and self.param > 0):
            raise ConfigError(f"--split dirichlet:ALPHA needs ALPHA > 0, not {self.param}")
        if self.kind == "shards" and (self.param < 1 or self.param != int(self.param)):
            raise ConfigError(f"--split shards:K needs a whole number K >= 1, not {self.param}")
        if self.kind not in ("iid", "dirichlet", "shards"):
            raise ConfigError(f"unknown split {self.kind!r}")

    @classmethod
    def parse(cls, text: str) -> SplitSpec:
        """``iid``, ``dirichlet:ALPHA`` or ``shards:K``; a :class:`ConfigError` for anything else."""
        kind, colon, value = text.strip().partition(":")
        if kind == "iid" and not colon:
            return cls("iid")
        if kind == "dirichlet" and colon:
            try:
                alpha = float(value)
            except ValueError:
                alpha = float("nan")
            if not (np.isfinite(alpha) and alpha > 0):
                raise ConfigError(
                    f"--split dirichlet:ALPHA needs a number ALPHA > 0, not {value!r}"
                )
            return cls("dirichlet", alpha)
        if kind == "shards" and colon:
            if not value.isdigit() or int(value) < 1:
                raise ConfigError(f"--split shards:K needs a whole number K >= 1, not {value!r}")
            return cls("shards", float(value))
        raise ConfigError(f"--split must be iid, dirichlet:ALPHA or shards:K, not {text!r}")

    def __str__(self) -> str:
        if self.kind == "iid":
            return "iid"
        return f"{self.kind}:{int(self.param) if self.kind == 'shards' else self.param}"


def _labels(y: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    if y.dtype.kind not in "iu":
        raise ConfigError(f"splitting needs integer labels, not {y.dtype}")
    return y.astype(np.int64)


def split_clients(data: Data, clients: int, spec: SplitSpec, seed: int = 0) -> list[Data]:
    """``data`` dealt to ``clients`` clients the way ``spec`` says; each gets at least one example.

    >>> X, y = np.arange(20).reshape(10, 2), np.arange(10) % 2
    >>> [len(part[1]) for part in split_clients((X, y), 3, SplitSpec("iid"))]
    [4, 3, 3]
    """
    X, y = np.asarray(data[0]), np.asarray(data[1])
    if len(X) != len(y) or y.ndim != 1:
        raise ConfigError(f"X and y disagree: {X.shape} and {y.shape}")
    if isinstance(clients, bool) or not isinstance(clients, int) or clients < 1:
        raise ConfigError(f"the number of clients must be a positive integer, not {clients!r}")
    need = clients * (int(spec.param) if spec.kind == "shards" else 1)
    if len(y) < need:
        raise ConfigError(
            f"{len(y)} examples cannot give {clients} clients at least one example each"
            + (f" with {int(spec.param)} shards each" if spec.kind == "shards" else "")
        )
    rng = np.random.default_rng(seed)
    if spec.kind == "iid":
        parts = np.array_split(rng.permutation(len(y)), clients)
    elif spec.kind == "dirichlet":
        parts = _dirichlet(_labels(y), clients, spec.param, rng)
    else:
        parts = _shards(_labels(y), clients, int(spec.param), rng)
    return [(X[p], y[p]) for p in parts]


def _dirichlet(
    y: npt.NDArray[np.int64], clients: int, alpha: float, rng: np.random.Generator
) -> list[npt.NDArray[np.int64]]:
    members: list[list[int]] = [[] for _ in range(clients)]
    for label in np.unique(y):
        index = rng.permutation(np.flatnonzero(y == label))
        proportions = rng.dirichlet(np.full(clients, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(index)).astype(int)
        for client, part in enumerate(np.split(index, cuts)):
            members[client].extend(part.tolist())
    for client in range(clients):
        if not members[client]:  # an empty client takes one example from the largest
            donor = max(range(clients), key=lambda c: len(members[c]))
            taken = members[donor].pop(int(rng.integers(len(members[donor]))))
            members[client].append(taken)
    return [np.sort(np.array(m, dtype=np.int64)) for m in members]


def _shards(
    y: npt.NDArray[np.int64], clients: int, per_client: int, rng: np.random.Generator
) -> list[npt.NDArray[np.int64]]:
    # ties in the label are broken by a seeded shuffle, so a shard is not always the same examples
    order = rng.permutation(len(y))
    by_label = order[np.argsort(y[order], kind="stable")]
    shards = np.array_split(by_label, clients * per_client)
    dealt = rng.permutation(len(shards)).reshape(clients, per_client)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in dealt]
