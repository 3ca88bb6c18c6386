"""Simulated federated rounds on the bundled digits task: accuracy, secure aggregation, privacy, dropouts."""

from __future__ import annotations

import numpy as np
import pytest

from fogline.errors import ConfigError, DataError
from fogline.federated import (
    FieldQuantizer,
    PrivacyAccountant,
    SimulationConfig,
    SplitSpec,
    load_task,
    simulate,
)

TASK = "fogline.examples:digits_task"


def run(**options: object):  # type: ignore[no-untyped-def]
    config = SimulationConfig(**{"clients": 10, "rounds": 5, **options})  # type: ignore[arg-type]
    return simulate(load_task(TASK), config)


def test_fedavg_on_digits_reaches_a_real_accuracy() -> None:
    result = run()
    accuracy = [r.accuracy for r in result.history]
    # measured 0.920 after 5 rounds (seed 0); 0.77 after the first
    assert accuracy[-1] >= 0.88
    assert accuracy[-1] > accuracy[0]
    assert [r.round for r in result.history] == [1, 2, 3, 4, 5]
    assert all(r.participants == 10 and r.epsilon is None for r in result.history)


def test_secure_aggregation_at_32_bits_matches_the_plain_run() -> None:
    plain, secure = run(rounds=3), run(rounds=3, secagg=True, secagg_bits=32)
    assert np.allclose(plain.weights.vector(), secure.weights.vector(), atol=1e-5)
    assert [r.accuracy for r in plain.history] == pytest.approx(
        [r.accuracy for r in secure.history], abs=0.002
    )


def test_secure_aggregation_at_16_bits_is_off_by_at_most_the_fields_rounding() -> None:
    plain, secure = run(rounds=1), run(rounds=1, secagg=True)
    assert secure.config.secagg_bits == 16
    # each client sends [s_i * delta_i, s_i] with s_i <= 1 and the largest s_i = 1; the field
    # sum of 10 rows is off by at most 10 * clip / levels per coordinate, the mean (sum / sum
    # of s_i >= 1) by at most that times (1 + |mean|), |mean| being at most what FedAvg moved
    field = FieldQuantizer(bits=16, clip=8.0, num_clients=10)
    moved = float(np.abs(plain.weights.vector()).max())  # from zero weights
    bound = field.sum_error_bound(10) * (1 + moved) * 1.01
    error = np.abs(plain.weights.vector() - secure.weights.vector()).max()
    assert 0 < error <= bound
    assert secure.history[0].accuracy == pytest.approx(plain.history[0].accuracy, abs=0.01)


def test_bytes_up_is_the_encoded_change_plainly_and_the_protocol_under_secure_aggregation() -> None:
    plain, secure = run(rounds=1), run(rounds=1, secagg=True)
    size = plain.weights.size  # 64 * 10 + 10
    # float16 is 2 bytes a coordinate; deflate keeps it at most that (plus a few bytes framing)
    # and the change of SGD on digits is not compressible below 1 byte a coordinate
    assert 10 * size <= plain.history[0].bytes_up <= 10 * (2 * size + 16)
    # keys (2 * 32), a sealed pair of shares (92) and an unmask share (32) for each of the 9
    # others, and the masked vector of size + 1 coordinates at 2 bytes each
    assert secure.history[0].bytes_up == 10 * (64 + 9 * 92 + 9 * 32 + 2 * (size + 1))
    at32 = run(rounds=1, secagg=True, secagg_bits=32).history[0].bytes_up
    assert at32 - secure.history[0].bytes_up == 10 * 2 * (size + 1)


def test_a_label_skewed_split_with_fedprox_still_learns() -> None:
    result = run(strategy="fedprox", split=SplitSpec.parse("dirichlet:0.5"))
    assert result.history[-1].accuracy >= 0.75


def test_differential_privacy_records_increasing_epsilon() -> None:
    result = run(dp_noise=1.0, dp_clip=1.0, fraction=0.5)
    epsilon = [r.epsilon for r in result.history]
    assert all(e is not None for e in epsilon)
    assert epsilon == sorted(epsilon) and epsilon[0] < epsilon[-1]  # type: ignore[type-var]
    assert all(r.participants == 5 for r in result.history)


def test_dropouts_complete_with_and_without_secure_aggregation() -> None:
    plain = run(dropout=0.3, rounds=3)
    secure = run(dropout=0.3, rounds=3, secagg=True)
    for result in (plain, secure):
        assert len(result.history) == 3
        assert min(r.participants for r in result.history) < 10
        assert result.history[-1].accuracy > 0.7


def test_sign_flip_attackers_hurt_fedavg_and_krum_resists() -> None:
    attacked = run(malicious=0.2, attack="sign-flip")
    robust = run(malicious=0.2, attack="sign-flip", strategy="krum")
    assert robust.history[-1].accuracy > attacked.history[-1].accuracy
    assert robust.history[-1].accuracy >= 0.85
    # two attackers in ten: Multi-Krum told f=2 averages the eight best, none of them flipped
    told = run(malicious=0.2, attack="sign-flip", strategy="multi-krum", strategy_options={"f": 2})
    assert told.history[-1].accuracy >= 0.85
    noisy = run(malicious=0.2, attack="gaussian", strategy="trimmed-mean")
    assert noisy.history[-1].accuracy >= 0.8


def test_the_epsilon_budget_stops_before_the_round_the_accountant_says_would_exceed_it() -> None:
    result = run(rounds=10, dp_noise=1.0, dp_clip=1.0, fraction=0.3, epsilon_budget=5.0)
    accountant = PrivacyAccountant(result.config.privacy)
    expected = next(r for r in range(1, 11) if accountant.epsilon(r) > 5.0)
    assert result.stopped_at == expected
    assert [r.round for r in result.history] == list(range(1, expected))
    assert result.privacy is not None and result.privacy.rounds == expected - 1
    assert result.privacy.epsilon == pytest.approx(accountant.epsilon(expected - 1))
    assert result.history[-1].epsilon == pytest.approx(result.privacy.epsilon)
    assert run(rounds=2, dp_noise=1.0, dp_clip=1.0, epsilon_budget=1e6).stopped_at is None


def zero_task() -> object:
    """A toy whose clients barely move (lr 1e-9): the aggregate is the privacy noise alone."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 40)), np.arange(400) % 5
    weights = {"W": np.zeros((40, 5)), "b": np.zeros(5)}
    return {"weights": weights, "train": (X, y), "test": (X, y), "lr": 1e-9}


@pytest.mark.parametrize("secagg", [False, True])
def test_distributed_noise_on_the_aggregate_matches_central_noise(secagg: bool) -> None:
    task = load_task(f"{__name__}:zero_task")
    options = {"clients": 10, "rounds": 1, "dp_noise": 2.0, "dp_clip": 1.0, "secagg": secagg}
    stds, epsilons = {}, {}
    for mode in ("central", "distributed"):
        result = simulate(task, SimulationConfig(dp_mode=mode, **options))  # type: ignore[arg-type]
        stds[mode] = float(np.std(result.weights.vector()))
        epsilons[mode] = result.history[0].epsilon
    # z*C/m = 0.2 on each of 205 coordinates: the sample std is within 5 % (one sigma)
    assert stds["central"] == pytest.approx(0.2, rel=0.2)
    assert stds["distributed"] == pytest.approx(0.2, rel=0.2)
    assert epsilons["central"] == epsilons["distributed"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "krum", "secagg": True}, "krum.*only their mean"),
        ({"strategy": "fedmedian", "dp_noise": 1.0, "dp_clip": 1.0}, "fedmedian"),
        ({"strategy": "fedsgd"}, "unknown strategy"),
        ({"dp_noise": 1.0}, "go together"),
        ({"clients": 1}, "at least 2"),
        ({"fraction": 0.0}, "--fraction"),
        ({"dropout": 1.0}, "--dropout"),
        ({"epsilon_budget": 1.0}, "--epsilon-budget needs --dp-noise"),
        ({"dp_mode": "distributed"}, "needs --dp-noise"),
        ({"dp_noise": 1.0, "dp_clip": 1.0, "dp_mode": "local"}, "--dp-mode"),
        ({"dp_noise": 1.0, "dp_clip": 1.0, "epsilon_budget": 0.0}, "--epsilon-budget"),
        ({"secagg": True, "secagg_bits": 4}, "--secagg-bits 4"),
        ({"strategy": "krum", "strategy_options": {"g": 2}}, "strategy 'krum'.*'g'"),
        ({"strategy_options": {"fraction": 0.5}}, "--fraction, not a strategy option"),
        ({"secagg": True, "secagg_bits": 16.0}, "--secagg-bits must be an integer"),
    ],
)
def test_a_bad_configuration_is_refused_before_anything_runs(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SimulationConfig(**{"clients": 10, "rounds": 1, **options})  # type: ignore[arg-type]


def bad_not_a_dict() -> object:
    return [1, 2]


def bad_no_test() -> object:
    return {
        "weights": {"W": np.zeros((64, 10)), "b": np.zeros(10)},
        "train": (np.zeros((3, 64)), np.zeros(3, int)),
    }


def bad_both() -> object:
    return {"weights": {}, "model": object(), "train": None, "test": None}


def bad_labels() -> object:
    data = (np.zeros((3, 64)), np.zeros(3))
    return {"weights": {"W": np.zeros((64, 10)), "b": np.zeros(10)}, "train": data, "test": data}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad_not_a_dict", "must return a dict"),
        ("bad_no_test", "no 'test'"),
        ("bad_both", "exactly one of"),
        ("bad_labels", "integer labels"),
        ("nothing_here", "cannot import"),
    ],
)
def test_a_task_that_returns_the_wrong_thing_is_one_data_error(name: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_task(f"{__name__}:{name}")
