"""Client-level differential privacy for federated averaging, and its accountant.

The mechanism is McMahan et al. 2018 ("Learning Differentially Private
Recurrent Language Models"): each client's update (its delta from the global
model) is clipped to L2 norm ``C``, measured across all of its tensors; the
server averages the clipped updates over the *expected* number of clients
``m`` (a fixed denominator, so one client's presence changes the average by at
most ``C / m``) and Gaussian noise of standard deviation ``z * C / m`` is added
to the average. The noise is added either

* ``central``: by the server, to the average (:meth:`GaussianMechanism.server_average`); or
* ``distributed``: by each of ``n`` clients, to its clipped update, with
  standard deviation ``z * C / sqrt(n)`` (:meth:`GaussianMechanism.client_update`),
  so that the sum the server learns through secure aggregation carries noise
  of standard deviation ``z * C``, the same as central noise before dividing
  by ``m``. Clients that drop after masking take their share of the noise
  with them: the sum of the survivors carries less, which the caller should
  size ``n`` for (or add the missing share at the server).

The privacy spent is counted by :class:`PrivacyAccountant`, backed by Google's
``dp-accounting`` library: each round is a Poisson-sampled Gaussian event
(sampling rate ``q``, noise multiplier ``z``) composed under the RDP
accountant, or under the PLD accountant (tighter, slower). It answers ε for the
configured δ after any number of rounds, and whether the next round would go
over a budget, so a run stops *before* it spends more than it may. What was
spent is a frozen :class:`PrivacySpent`, which goes as JSON into the release
document's provenance.

Noise is drawn from a :class:`numpy.random.Generator` seeded from
:mod:`secrets` (a fixed seed only for tests). Like most DP libraries in
floating point, the sampler is not hardened against the floating-point attacks
of Mironov 2012; the guarantee is the textbook one.

Synchronous and CPU-bound; nothing here waits on the network. ``dp_accounting``
(which loads scipy, about two seconds) is imported when ε is first asked for,
not when this module is.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from fogline.errors import ConfigError

__all__ = [
    "GaussianMechanism",
    "PrivacyAccountant",
    "PrivacyConfig",
    "PrivacySpent",
    "clip_update",
]

NoiseMode = Literal["central", "distributed"]
AccountantKind = Literal["rdp", "pld"]

Update = Sequence[NDArray[Any]]


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _check_sampling_rate(value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ConfigError(f"sampling_rate must be in (0, 1], got {value!r}")


def _check_delta(value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ConfigError(f"delta must be in (0, 1), got {value!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class PrivacyConfig:
    """The privacy settings of a federated run, validated when made.

    ``noise_multiplier`` is z (noise std over the clip norm), ``clip_norm`` is C
    (the L2 bound on one client's whole update), ``sampling_rate`` is q (the
    chance that a client takes part in a round), ``delta`` is the δ that ε is
    reported for.

    >>> PrivacyConfig(noise_multiplier=1.0, clip_norm=0.5, sampling_rate=0.3, delta=1e-5).mode
    'central'
    >>> PrivacyConfig(noise_multiplier=1.0, clip_norm=0.0, sampling_rate=0.3, delta=1e-5)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: clip_norm must be a finite number > 0, got 0.0
    """

    noise_multiplier: float
    clip_norm: float
    sampling_rate: float
    delta: float
    mode: NoiseMode = "central"
    accountant: AccountantKind = "rdp"

    def __post_init__(self) -> None:
        _check_positive("noise_multiplier", self.noise_multiplier)
        _check_positive("clip_norm", self.clip_norm)
        _check_sampling_rate(self.sampling_rate)
        _check_delta(self.delta)
        _check_choice("mode", self.mode, get_args(NoiseMode))
        _check_choice("accountant", self.accountant, get_args(AccountantKind))


def _float_arrays(update: Update) -> list[NDArray[np.floating[Any]]]:
    arrays = [np.asarray(tensor) for tensor in update]
    return [a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64) for a in arrays]


def _global_norm(arrays: Sequence[NDArray[Any]]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))


def clip_update(update: Update, clip_norm: float) -> list[NDArray[np.floating[Any]]]:
    """Scale ``update`` (one client's tensors) so their joint L2 norm is at most ``clip_norm``.

    The direction is kept; an update already within the bound comes back
    unchanged (as copies). Integer tensors come back as float64.

    >>> [t.round(6).tolist() for t in clip_update([np.array([3.0]), np.array([4.0])], 1.0)]
    [[0.6], [0.8]]
    """
    _check_positive("clip_norm", clip_norm)
    arrays = _float_arrays(update)
    norm = _global_norm(arrays)
    if norm <= clip_norm:
        return [a.copy() for a in arrays]
    scale = clip_norm / norm
    return [(a * scale).astype(a.dtype, copy=False) for a in arrays]


class GaussianMechanism:
    """Clipping and Gaussian noise for one run, with its own random generator.

    A client calls :meth:`client_update` on its delta before it is sent (or
    masked); the server calls :meth:`server_average` on the average of the
    clipped updates (the sum divided by the expected number of clients).

    >>> config = PrivacyConfig(noise_multiplier=1.0, clip_norm=1.0, sampling_rate=0.5, delta=1e-5)
    >>> mechanism = GaussianMechanism(config, seed=0)
    >>> [t.round(6).tolist() for t in mechanism.client_update([np.array([3.0, 4.0])], clients=10)]
    [[0.6, 0.8]]
    >>> mechanism.average_std(expected_clients=10)
    0.1
    """

    def __init__(self, config: PrivacyConfig, *, seed: int | None = None) -> None:
        self._config = config
        self._rng = np.random.default_rng(secrets.randbits(128) if seed is None else seed)

    @property
    def config(self) -> PrivacyConfig:
        return self._config

    def average_std(self, expected_clients: float) -> float:
        """The noise std on the average of ``expected_clients`` clipped updates: z·C/m."""
        _check_positive("expected_clients", expected_clients)
        return self._config.noise_multiplier * self._config.clip_norm / expected_clients

    def share_std(self, clients: int) -> float:
        """The noise std one of ``clients`` adds in distributed mode: z·C/√n."""
        if not (isinstance(clients, int) and clients >= 1):
            raise ConfigError(f"clients must be an integer >= 1, got {clients!r}")
        return self._config.noise_multiplier * self._config.clip_norm / math.sqrt(clients)

    def clip(self, update: Update) -> list[NDArray[np.floating[Any]]]:
        """``update`` clipped to the configured norm (see :func:`clip_update`)."""
        return clip_update(update, self._config.clip_norm)

    def add_noise(self, update: Update, std: float) -> list[NDArray[np.floating[Any]]]:
        """``update`` plus independent Gaussian noise of standard deviation ``std`` per entry."""
        return [
            (a + self._rng.normal(0.0, std, size=a.shape)).astype(a.dtype, copy=False)
            for a in _float_arrays(update)
        ]

    def client_update(self, update: Update, *, clients: int) -> list[NDArray[np.floating[Any]]]:
        """What a client sends: its update clipped, and in distributed mode its share of noise.

        ``clients`` is the number of clients whose noisy updates will be summed.
        """
        clipped = self.clip(update)
        if self._config.mode == "central":
            return clipped
        return self.add_noise(clipped, self.share_std(clients))

    def server_average(
        self, average: Update, *, expected_clients: float
    ) -> list[NDArray[np.floating[Any]]]:
        """The average the server releases: noised in central mode, as it is in distributed mode."""
        if self._config.mode == "distributed":
            return _float_arrays(average)
        return self.add_noise(average, self.average_std(expected_clients))


@dataclass(frozen=True)
class PrivacySpent:
    """The privacy a run has spent: ε at δ after ``rounds`` rounds, and how it was counted.

    >>> spent = PrivacySpent(1.0, 0.5, 0.3, 0, 1e-5, 0.0, "rdp")
    >>> PrivacySpent.from_json(spent.to_json()) == spent
    True
    """

    noise_multiplier: float
    clip_norm: float
    sampling_rate: float
    rounds: int
    delta: float
    epsilon: float
    accountant: str

    def __post_init__(self) -> None:
        _check_positive("noise_multiplier", self.noise_multiplier)
        _check_positive("clip_norm", self.clip_norm)
        _check_sampling_rate(self.sampling_rate)
        _check_delta(self.delta)
        if not (isinstance(self.rounds, int) and self.rounds >= 0):
            raise ConfigError(f"rounds must be an integer >= 0, got {self.rounds!r}")
        if not (math.isfinite(self.epsilon) and self.epsilon >= 0):
            raise ConfigError(f"epsilon must be a finite number >= 0, got {self.epsilon!r}")
        _check_choice("accountant", self.accountant, get_args(AccountantKind))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> PrivacySpent:
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {f for f in cls.__dataclass_fields__}:
            raise ConfigError(f"not a privacy record: {text[:200]!r}")
        return cls(**data)


@dataclass
class PrivacyAccountant:
    """ε spent by a run of identical rounds, counted by ``dp-accounting``.

    Each round is ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``; ``rounds``
    of them are composed in the RDP (or PLD) accountant and converted to ε at
    the configured δ. Call :meth:`would_exceed` before a round and
    :meth:`step` after it.

    >>> config = PrivacyConfig(noise_multiplier=1.0, clip_norm=1.0, sampling_rate=0.3, delta=1e-5)
    >>> accountant = PrivacyAccountant(config)
    >>> accountant.step() > 0, accountant.rounds
    (True, 1)
    >>> accountant.would_exceed(0.01)
    True
    """

    config: PrivacyConfig
    rounds: int = 0
    _cache: dict[int, float] = field(default_factory=dict, init=False, repr=False, compare=False)
    _round_rdp: tuple[NDArray[np.float64], NDArray[np.float64]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not (isinstance(self.rounds, int) and self.rounds >= 0):
            raise ConfigError(f"rounds must be an integer >= 0, got {self.rounds!r}")

    def epsilon(self, rounds: int | None = None) -> float:
        """ε at the configured δ after ``rounds`` rounds (by default, those counted so far)."""
        count = self.rounds if rounds is None else rounds
        if not (isinstance(count, int) and count >= 0):
            raise ConfigError(f"rounds must be an integer >= 0, got {count!r}")
        if count not in self._cache:
            self._cache[count] = self._compute(count)
        return self._cache[count]

    def epsilon_per_round(self) -> float:
        """ε at the configured δ of one round alone."""
        return self.epsilon(1)

    def would_exceed(self, budget: float) -> bool:
        """Whether one more round would take the total ε above ``budget``."""
        _check_positive("budget", budget)
        return self.epsilon(self.rounds + 1) > budget

    def step(self) -> float:
        """Count one more round; returns the total ε so far."""
        self.rounds += 1
        return self.epsilon()

    def spent(self) -> PrivacySpent:
        """The record of what has been spent, for the run's history and the release document."""
        c = self.config
        return PrivacySpent(
            noise_multiplier=c.noise_multiplier,
            clip_norm=c.clip_norm,
            sampling_rate=c.sampling_rate,
            rounds=self.rounds,
            delta=c.delta,
            epsilon=self.epsilon(),
            accountant=c.accountant,
        )

    def _compute(self, rounds: int) -> float:
        if rounds == 0:
            return 0.0
        import dp_accounting  # deferred: it loads scipy (about two seconds)
        from dp_accounting import pld, rdp

        c = self.config
        event = dp_accounting.PoissonSampledDpEvent(
            c.sampling_rate, dp_accounting.GaussianDpEvent(c.noise_multiplier)
        )
        if c.accountant == "rdp":
            # One round's RDP curve is costly (about 0.15 s); rounds compose by adding
            # curves, so ε(r) is the library's own conversion of r times that curve,
            # which is what RdpAccountant.compose(event, r).get_epsilon(δ) computes.
            if self._round_rdp is None:
                one = rdp.RdpAccountant()
                one.compose(event)
                self._round_rdp = (np.asarray(one.orders), np.asarray(one.rdp))
            orders, curve = self._round_rdp
            epsilon = float(rdp.compute_epsilon(orders, curve * rounds, c.delta)[0])
        else:
            accountant = pld.PLDAccountant()
            accountant.compose(event, rounds)
            epsilon = float(accountant.get_epsilon(c.delta))
        if not math.isfinite(epsilon):
            raise ConfigError(
                f"noise_multiplier {c.noise_multiplier} gives no finite epsilon at delta {c.delta}"
            )
        return epsilon
