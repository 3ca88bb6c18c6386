"""Federated rounds in one process: the same strategies, secure aggregation and privacy code as the fleet.

:func:`load_task` calls a ``module:function`` task and checks what it returns;
:func:`simulate` splits the task's training set among the clients and plays
the rounds: sample (the strategy), train (the client trainer), drop out or
attack (as configured), aggregate (plainly, or through the secure-aggregation
protocol), noise (differential privacy), evaluate on the task's test set.

Aggregation through secure aggregation or with privacy noise sums the
clients' changes from the global model, so it needs a strategy that only uses
their (weighted) mean: FedAvg, FedProx and the server optimizers. Under
secure aggregation each client sends ``[n_i/s * delta_i, n_i/s]`` (``s`` the
largest client's size, public in a simulation), so the field sum gives the
examples-weighted mean whoever survives. With privacy each client's change
is clipped, the sum is divided by the expected number of clients and the
server adds Gaussian noise (central mode), or each client adds its share of
that noise to its clipped change before it is summed (masked, under secure
aggregation) and the server adds only the shares of clients that dropped
(distributed mode). The accountant counts ε per round; with an ε budget the
run stops before the first round that would take it over.

A round that ends with fewer updates than it needs (dropouts, or secure
aggregation below its threshold) leaves the global model as it was and is
recorded with its participants. Synchronous and single-threaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fogline.data import import_function
from fogline.errors import BackendUnavailable, ConfigError, Conflict, DataError, FoglineError
from fogline.federated._client import ClientTrainer, SoftmaxTrainer, TorchTrainer
from fogline.federated._codec import encode_update
from fogline.federated._privacy import (
    GaussianMechanism,
    NoiseMode,
    PrivacyAccountant,
    PrivacyConfig,
    PrivacySpent,
)
from fogline.federated._secagg import SecAggClient, SecAggServer
from fogline.federated._secagg_field import FieldQuantizer, upload_cost
from fogline.federated._secagg_messages import SecAggParams
from fogline.federated._split import SplitSpec, split_clients
from fogline.federated.strategy import STRATEGIES, Strategy, Update, Weights, strategy_for

__all__ = [
    "RoundRecord",
    "SimulationConfig",
    "SimulationResult",
    "Task",
    "history_json",
    "load_device_data",
    "load_task",
    "simulate",
]

Data = tuple[npt.NDArray[Any], npt.NDArray[Any]]
Attack = Literal["sign-flip", "gaussian"]

#: Strategies whose aggregate is a function of the clients' weighted mean only.
MEAN_STRATEGIES = frozenset({"fedavg", "fedprox", "fedadam", "fedyogi", "fedadagrad"})
#: Bits per coordinate of the field in simulated secure aggregation (``--secagg-bits``): 16
#: halves the masked upload of 32, and its rounding (a step of 2 * 8 / 6553 for ten
#: clients) costs the digits tasks no accuracy (benchmarks/bench_federated.py).
SECAGG_BITS = 16
#: The field's clipping bound per coordinate of a client's weighted change.
SECAGG_CLIP = 8.0


@dataclass(frozen=True, eq=False)
class Task:
    """What a task function returns, checked: a torch module or numpy softmax weights, and data."""

    name: str
    train: Data
    test: Data
    model: Any = None
    weights: Weights | None = None  # numpy softmax weights W and b
    lr: float | None = None
    batch_size: int | None = None
    input_names: tuple[str, ...] = ("input",)

    def trainer(self, epochs: int) -> ClientTrainer:
        """The client trainer this task needs (numpy softmax, or torch for a module)."""
        options: dict[str, Any] = {"epochs": epochs}
        if self.lr is not None:
            options["lr"] = self.lr
        if self.batch_size is not None:
            options["batch_size"] = self.batch_size
        if self.model is not None:
            return TorchTrainer(self.model, **options)
        return SoftmaxTrainer(**options)

    def initial_weights(self, trainer: ClientTrainer) -> Weights:
        if isinstance(trainer, TorchTrainer):
            return trainer.initial_weights()
        assert self.weights is not None
        return self.weights


def _data(spec: str, key: str, value: Any) -> Data:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise DataError(f"{spec}: {key!r} must be a tuple (X, y) of numpy arrays")
    X, y = np.asarray(value[0]), np.asarray(value[1])
    if X.ndim < 2 or y.ndim != 1 or len(X) != len(y) or len(y) == 0:
        raise DataError(
            f"{spec}: {key!r} needs X of shape (n, ...) and y of shape (n,), not {X.shape} and {y.shape}"
        )
    if y.dtype.kind not in "iu" or X.dtype.kind != "f":
        raise DataError(
            f"{spec}: {key!r} needs float X and integer labels, not {X.dtype} and {y.dtype}"
        )
    return X, y


def load_task(spec: str) -> Task:
    """Import and call the task function ``module:function``; a :class:`DataError` naming what is wrong."""
    func = import_function(spec)
    try:
        result = func()
    except FoglineError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name == "torch":
            raise BackendUnavailable(
                f"{spec} needs torch, which is not installed: pip install 'fogline[train]'"
            ) from exc
        raise DataError(f"{spec}: raised {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise DataError(f"{spec}: raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(result, Mapping):
        raise DataError(f"{spec}: must return a dict, not {type(result).__name__}")
    known = {"model", "weights", "train", "test", "lr", "batch_size", "input_names"}
    unknown = sorted(set(result) - known)
    if unknown:
        raise DataError(f"{spec}: unknown keys {unknown}; known: {', '.join(sorted(known))}")
    if ("model" in result) == ("weights" in result):
        raise DataError(f"{spec}: must return exactly one of 'model' (torch) or 'weights' (numpy)")
    for key in ("train", "test"):
        if key not in result:
            raise DataError(f"{spec}: the dict has no {key!r} (a tuple (X, y))")
    weights = result.get("weights")
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise DataError(f"{spec}: 'weights' must be a mapping of 'W' and 'b' to numpy arrays")
        try:
            weights = Weights(dict(weights))
            SoftmaxTrainer.check_weights(weights)
        except ConfigError as exc:
            raise DataError(f"{spec}: {exc}") from exc
    names = result.get("input_names", ("input",))
    if isinstance(names, str) or not all(isinstance(n, str) and n for n in names):
        raise DataError(f"{spec}: 'input_names' must be a list of names, not {names!r}")
    return Task(
        name=spec.partition(":")[2] or spec,
        train=_data(spec, "train", result["train"]),
        test=_data(spec, "test", result["test"]),
        model=result.get("model"),
        weights=weights,
        lr=result.get("lr"),
        batch_size=result.get("batch_size"),
        input_names=tuple(names),
    )


def load_device_data(spec: str, device_id: str, args: Mapping[str, Any] | None = None) -> Data:
    """A device's own ``(X, y)``: ``module:function`` called as ``function(device_id=..., **args)``.

    What a ``learner`` release's ``data`` names; a :class:`DataError` says
    what is wrong with what it returned (checked as a task's ``train``).
    """
    func = import_function(spec)
    try:
        result = func(device_id=device_id, **dict(args or {}))
    except FoglineError:
        raise
    except Exception as exc:
        raise DataError(f"{spec}: raised {type(exc).__name__}: {exc}") from exc
    return _data(spec, "the device's data", result)


@dataclass(frozen=True)
class SimulationConfig:
    """A simulated run, validated when made (``fogline fl simulate``'s options)."""

    clients: int
    rounds: int
    strategy: str = "fedavg"
    #: Keyword options of the strategy (``{"f": 2}`` for Krum with two attackers, ``{"mu": 0.1}``).
    strategy_options: Mapping[str, Any] = field(default_factory=dict)
    split: SplitSpec = field(default_factory=SplitSpec)
    local_epochs: int = 1
    fraction: float = 1.0
    secagg: bool = False
    secagg_bits: int = SECAGG_BITS
    dp_noise: float | None = None
    dp_clip: float | None = None
    dp_delta: float = 1e-5
    dp_mode: NoiseMode = "central"
    epsilon_budget: float | None = None
    dropout: float = 0.0
    malicious: float = 0.0
    attack: Attack = "sign-flip"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("clients", "rounds", "local_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')} must be an integer >= 1, not {value!r}"
                )
        if self.clients < 2:
            raise ConfigError(f"--clients must be at least 2, not {self.clients}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown strategy {self.strategy!r}; known: {', '.join(sorted(STRATEGIES))}"
            )
        if "fraction" in self.strategy_options:
            raise ConfigError("the strategy's fraction is --fraction, not a strategy option")
        strategy_for(self.strategy, fraction=1.0, **self.strategy_options)  # refuses bad options
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"--fraction must be in (0, 1], not {self.fraction}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), not {self.dropout}")
        if not 0 <= self.malicious < 1:
            raise ConfigError(f"--malicious FRACTION must be in [0, 1), not {self.malicious}")
        if self.attack not in ("sign-flip", "gaussian"):
            raise ConfigError(f"unknown attack {self.attack!r}; use sign-flip or gaussian")
        if (self.dp_noise is None) != (self.dp_clip is None):
            raise ConfigError("--dp-noise and --dp-clip go together")
        mean_only = [opt for opt, on in (("--secagg", self.secagg), ("--dp-noise", self.dp)) if on]
        if mean_only and self.strategy not in MEAN_STRATEGIES:
            raise ConfigError(
                f"strategy {self.strategy!r} needs each client's update, and "
                f"{' and '.join(mean_only)} {'give' if len(mean_only) > 1 else 'gives'} it only "
                "their mean; "
                f"use one of {', '.join(sorted(MEAN_STRATEGIES))}"
            )
        if self.dp_mode not in ("central", "distributed"):
            raise ConfigError(f"--dp-mode must be central or distributed, not {self.dp_mode!r}")
        if self.epsilon_budget is not None and not self.dp:
            raise ConfigError("--epsilon-budget needs --dp-noise and --dp-clip")
        if self.dp_mode != "central" and not self.dp:
            raise ConfigError(f"--dp-mode {self.dp_mode} needs --dp-noise and --dp-clip")
        if self.epsilon_budget is not None and not (
            math.isfinite(self.epsilon_budget) and self.epsilon_budget > 0
        ):
            raise ConfigError(
                f"--epsilon-budget must be a finite number > 0, not {self.epsilon_budget}"
            )
        if self.secagg and self.clients < 2:
            raise ConfigError("--secagg needs at least 2 clients")
        if self.secagg:
            self._check_secagg_bits()
        if self.dp:
            self.privacy  # noqa: B018 -- refuses a bad noise or clip now

    def _check_secagg_bits(self) -> None:
        bits = self.secagg_bits
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise ConfigError(f"--secagg-bits must be an integer, not {bits!r}")
        try:  # the field must hold the sum of every sampled client's quantized change
            FieldQuantizer(bits=bits, clip=SECAGG_CLIP, num_clients=self.sampled())
        except ConfigError as exc:
            raise ConfigError(f"--secagg-bits {bits}: {exc}") from exc

    @property
    def dp(self) -> bool:
        return self.dp_noise is not None

    @property
    def privacy(self) -> PrivacyConfig:
        assert self.dp_noise is not None and self.dp_clip is not None
        return PrivacyConfig(
            noise_multiplier=self.dp_noise,
            clip_norm=self.dp_clip,
            sampling_rate=self.fraction,
            delta=self.dp_delta,
            mode=self.dp_mode,
        )

    def sampled(self) -> int:
        """How many clients each round samples (at least two, as the strategies ask)."""
        return min(self.clients, max(2, math.ceil(self.fraction * self.clients)))


@dataclass(frozen=True)
class RoundRecord:
    """One round of the history (``history.json``): ``accuracy`` 0..1, ``epsilon`` in total so far."""

    round: int
    accuracy: float
    loss: float
    participants: int
    bytes_up: int
    bytes_down: int
    seconds: float
    epsilon: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """The history of a run and the global model it ended with.

    ``privacy`` is what the run spent (None without privacy); ``stopped_at`` the
    round the ε budget did not allow, which was not played (None: all were).
    """

    task: Task
    config: SimulationConfig
    history: tuple[RoundRecord, ...]
    weights: Weights
    trainer: ClientTrainer
    privacy: PrivacySpent | None = None
    stopped_at: int | None = None


def _attack(
    current: Weights, trained: Weights, attack: Attack, rng: np.random.Generator
) -> Weights:
    delta = trained.vector() - current.vector()
    if attack == "sign-flip":
        return current.like(current.vector() - 10.0 * delta)
    noise = rng.normal(size=delta.shape)
    scale = float(np.linalg.norm(delta)) / max(float(np.linalg.norm(noise)), 1e-12)
    return current.like(current.vector() + scale * noise)


def _secure_sum(
    round: int,
    rows: Mapping[str, npt.NDArray[np.float64]],
    dropped: set[str],
    clip: float,
    bits: int = SECAGG_BITS,
) -> tuple[npt.NDArray[np.float64], int, int] | None:
    """The sum of the survivors' rows through the protocol; None when below its threshold.

    Every client in ``rows`` advertises and shares keys; those in ``dropped``
    drop after that, before sending their masked input. Also returns the
    survivors' count and the bytes one client uploads.
    """
    dimension = len(next(iter(rows.values())))
    params = SecAggParams(
        num_clients=len(rows), dimension=dimension, clip=clip, bits=bits, round_id=str(round)
    )
    clients = [SecAggClient(name, params) for name in sorted(rows)]
    server = SecAggServer(params)
    try:
        adverts = server.collect_adverts([c.advertise() for c in clients])
        inbox = server.route_shares([s for c in clients for s in c.share_keys(adverts)])
        alive = [c for c in clients if c.client_id not in dropped]
        request = server.collect_masked(
            [c.mask(rows[c.client_id], inbox[c.client_id]) for c in alive]
        )
        result = server.aggregate([c.unmask(request) for c in alive])
    except Conflict:
        return None
    return result.total, len(result.survivors), upload_cost(dimension, len(rows), bits).total


def simulate(
    task: Task,
    config: SimulationConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """Play ``config.rounds`` rounds of ``task``; ``on_round`` is called after each.

    With ``config.epsilon_budget``, the run stops before the first round after
    which the accountant's ε would exceed the budget (see ``stopped_at``).
    """
    rng = np.random.default_rng(config.seed)
    trainer = task.trainer(config.local_epochs)
    current = task.initial_weights(trainer)
    parts = split_clients(task.train, config.clients, config.split, config.seed)
    names = [f"client-{i:03d}" for i in range(config.clients)]
    data = dict(zip(names, parts, strict=True))
    attackers = set(
        rng.choice(names, size=round(config.malicious * len(names)), replace=False).tolist()
    )
    strategy: Strategy = strategy_for(
        config.strategy, fraction=config.fraction, **config.strategy_options
    )
    mechanism = accountant = None
    if config.dp:
        mechanism = GaussianMechanism(config.privacy, seed=config.seed)
        accountant = PrivacyAccountant(config.privacy)
    model_bytes = 4 * current.size
    history: list[RoundRecord] = []
    stopped_at = None
    for r in range(1, config.rounds + 1):
        budget = config.epsilon_budget
        if accountant is not None and budget is not None and accountant.would_exceed(budget):
            stopped_at = r
            break
        start = time.perf_counter()
        instructions = strategy.configure(r, names, rng)
        updates: list[Update] = []
        for instruction in instructions:
            update = trainer.fit(
                instruction.client, current, data[instruction.client], instruction.config, rng
            )
            if instruction.client in attackers:
                update = Update(
                    update.client,
                    _attack(current, update.weights, config.attack, rng),
                    update.num_examples,
                )
            updates.append(update)
        dropped = {u.client for u in updates if rng.random() < config.dropout}
        new, participants, up = _aggregate(
            r, strategy, current, updates, dropped, config, mechanism
        )
        if new is not None:
            current = new
        epsilon = accountant.step() if accountant is not None else None
        evaluation = trainer.evaluate(current, task.test)
        record = RoundRecord(
            round=r,
            accuracy=evaluation.accuracy,
            loss=evaluation.loss,
            participants=participants,
            bytes_up=up,
            bytes_down=model_bytes * len(instructions),
            seconds=round(time.perf_counter() - start, 4),
            epsilon=epsilon,
        )
        history.append(record)
        if on_round is not None:
            on_round(record)
    spent = accountant.spent() if accountant is not None else None
    return SimulationResult(task, config, tuple(history), current, trainer, spent, stopped_at)


def _aggregate(
    r: int,
    strategy: Strategy,
    current: Weights,
    updates: Sequence[Update],
    dropped: set[str],
    config: SimulationConfig,
    mechanism: GaussianMechanism | None,
) -> tuple[Weights | None, int, int]:
    """The new global weights (None: the round failed), the participants, and bytes uploaded.

    A plain round's upload is what the survivors send on the wire: each one's
    change through :func:`encode_update` (deflated float16). Under secure
    aggregation it is :func:`upload_cost` of every sampled client (keys,
    shares, the masked vector at ``config.secagg_bits``, unmasking).
    """
    survivors = [u for u in updates if u.client not in dropped]
    if not config.secagg and mechanism is None:
        up = sum(len(encode_update(u.weights, current)) for u in survivors)
        if len(survivors) < strategy.bound(len(survivors)).minimum or not survivors:
            return None, len(survivors), up
        return strategy.aggregate(r, current, survivors).weights, len(survivors), up
    base = current.vector()
    rows: dict[str, npt.NDArray[np.float64]] = {}
    largest = max(u.num_examples for u in updates)
    for u in updates:
        delta = u.weights.vector() - base
        if mechanism is not None:  # clipped, unweighted: each client counts once
            # distributed mode: plus this client's share of the noise on the sum of all sent
            (sent,) = mechanism.client_update([delta], clients=len(updates))
            rows[u.client] = np.append(sent, 1.0)
        else:
            share = u.num_examples / largest
            rows[u.client] = np.append(share * delta, share)
    up = 0
    if config.secagg:
        clip = SECAGG_CLIP if mechanism is None else max(SECAGG_CLIP, _field_clip(mechanism))
        secured = _secure_sum(r, rows, dropped, clip, config.secagg_bits)
        if secured is None:
            return None, len(updates) - len(dropped), up
        total, count, per_client = secured
        up = per_client * len(updates)
    else:
        # what a survivor sends: its clipped change (with its noise share when distributed)
        up = sum(
            len(encode_update(current.like(base + rows[u.client][:-1]), current)) for u in survivors
        )
        if not survivors:
            return None, 0, 0
        total = np.sum([rows[u.client] for u in survivors], axis=0)
        count = len(survivors)
    if mechanism is not None:
        if mechanism.config.mode == "distributed" and count < len(updates):
            # the shares of the clients that dropped left with them: the server adds them back
            missing = mechanism.share_std(len(updates)) * math.sqrt(len(updates) - count)
            (noised,) = mechanism.add_noise([total[:-1]], missing)
            total = np.append(noised, count)
        (mean,) = mechanism.server_average(
            [total[:-1] / config.sampled()], expected_clients=config.sampled()
        )
    else:
        mean = total[:-1] / total[-1]
    examples = sum(u.num_examples for u in survivors) or 1
    pooled = Update("aggregate", current.like(base + mean), examples)
    return strategy.aggregate(r, current, [pooled]).weights, count, up


def _field_clip(mechanism: GaussianMechanism) -> float:
    """The field's per-coordinate bound for clipped updates, with room for a noise share."""
    c = mechanism.config
    if c.mode == "central":
        return c.clip_norm
    return c.clip_norm + 6 * mechanism.share_std(1)  # six standard deviations of the largest share


def history_json(history: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    """The history as ``history.json`` holds it."""
    return [record.to_dict() for record in history]
