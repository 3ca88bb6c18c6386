"""Client-level DP: clipping, Gaussian noise (central and distributed), and the accountant against dp-accounting."""

from __future__ import annotations

import itertools
import json
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fogline.errors import ConfigError
from fogline.federated import (
    GaussianMechanism,
    PrivacyAccountant,
    PrivacyConfig,
    PrivacySpent,
    clip_update,
)


def config(**changes: object) -> PrivacyConfig:
    values: dict[str, object] = {
        "noise_multiplier": 1.0,
        "clip_norm": 1.0,
        "sampling_rate": 0.3,
        "delta": 1e-5,
    }
    values.update(changes)
    return PrivacyConfig(**values)  # type: ignore[arg-type]


def reference_epsilon(z: float, q: float, rounds: int, delta: float, kind: str = "rdp") -> float:
    """ε straight from dp_accounting, with no fogline code in between."""
    accountant = rdp.RdpAccountant() if kind == "rdp" else pld.PLDAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    accountant.compose(event, rounds)
    return float(accountant.get_epsilon(delta))


def joint_norm(tensors: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(np.square(t, dtype=np.float64))) for t in tensors))


# -- clipping ---------------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)
updates = st.lists(
    hnp.arrays(
        dtype=st.sampled_from([np.float32, np.float64]),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
        elements=finite,
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(update=updates, clip=st.floats(1e-3, 1e3))
def test_clipping_bounds_the_norm_keeps_the_direction_and_leaves_small_updates(
    update: list[np.ndarray], clip: float
) -> None:
    # Execute
    clipped = clip_update(update, clip)

    # Assert
    assert [c.shape for c in clipped] == [u.shape for u in update]
    assert [c.dtype for c in clipped] == [u.dtype for u in update]
    before = joint_norm(update)
    assert joint_norm(clipped) <= clip * (1 + 1e-5)
    if before <= clip:
        for c, u in zip(clipped, update, strict=True):
            np.testing.assert_array_equal(c, u)
    else:
        scale = clip / before
        for c, u in zip(clipped, update, strict=True):
            np.testing.assert_allclose(c, u.astype(np.float64) * scale, rtol=1e-5, atol=1e-6 * clip)


def test_clipping_returns_copies_and_floats() -> None:
    update = [np.array([1, 2], dtype=np.int64)]
    clipped = clip_update(update, 10.0)
    assert clipped[0].dtype == np.float64
    clipped[0][0] = 99
    assert update[0][0] == 1


# -- noise ------------------------------------------------------------------------------------

SIZE = 200_000
TOLERANCE = 0.02  # the std of 200k draws is within 0.2 % at one sigma; 2 % is ten sigma


@pytest.mark.parametrize(("z", "clip", "m"), [(1.0, 1.0, 10), (0.7, 2.5, 30), (3.0, 0.1, 4)])
def test_central_noise_has_std_z_c_over_expected_clients(z: float, clip: float, m: int) -> None:
    # Prepare
    mechanism = GaussianMechanism(config(noise_multiplier=z, clip_norm=clip), seed=1)
    zeros = [np.zeros(SIZE // 2), np.zeros((SIZE // 4, 2))]

    # Execute
    noised = mechanism.server_average(zeros, expected_clients=m)

    # Assert
    measured = float(np.concatenate([a.ravel() for a in noised]).std())
    assert measured == pytest.approx(z * clip / m, rel=TOLERANCE)
    assert mechanism.average_std(m) == pytest.approx(z * clip / m)


@pytest.mark.parametrize(("z", "clip", "n"), [(1.0, 1.0, 10), (1.3, 0.5, 25)])
def test_distributed_noise_sums_to_the_central_noise(z: float, clip: float, n: int) -> None:
    # Prepare
    central = GaussianMechanism(config(noise_multiplier=z, clip_norm=clip), seed=2)
    distributed = GaussianMechanism(
        config(noise_multiplier=z, clip_norm=clip, mode="distributed"), seed=3
    )
    zeros = [np.zeros(SIZE)]

    # Execute: each of n clients sends its noised (zero) update; the server sums and averages
    shares = [distributed.client_update(zeros, clients=n)[0] for _ in range(n)]
    total = np.sum(shares, axis=0)
    released = distributed.server_average([total / n], expected_clients=n)[0]
    reference = central.server_average(zeros, expected_clients=n)[0]

    # Assert
    assert float(shares[0].std()) == pytest.approx(z * clip / math.sqrt(n), rel=TOLERANCE)
    assert float(total.std()) == pytest.approx(z * clip, rel=TOLERANCE)
    assert float(released.std()) == pytest.approx(float(reference.std()), rel=2 * TOLERANCE)


def test_client_update_clips_and_only_distributed_mode_adds_noise_on_the_client() -> None:
    update = [np.array([3.0, 4.0])]
    central = GaussianMechanism(config(clip_norm=1.0), seed=0)
    np.testing.assert_allclose(central.client_update(update, clients=5)[0], [0.6, 0.8])
    distributed = GaussianMechanism(config(clip_norm=1.0, mode="distributed"), seed=0)
    noisy = distributed.client_update(update, clients=5)[0]
    assert not np.allclose(noisy, [0.6, 0.8])
    average = [np.array([0.5, 0.5])]
    np.testing.assert_array_equal(
        distributed.server_average(average, expected_clients=5)[0], average[0]
    )


def test_a_seed_repeats_the_noise_and_no_seed_does_not() -> None:
    zeros = [np.zeros(8)]
    first = GaussianMechanism(config(), seed=7).server_average(zeros, expected_clients=2)[0]
    again = GaussianMechanism(config(), seed=7).server_average(zeros, expected_clients=2)[0]
    fresh = GaussianMechanism(config()).server_average(zeros, expected_clients=2)[0]
    other = GaussianMechanism(config()).server_average(zeros, expected_clients=2)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(fresh, other)


# -- accountant -------------------------------------------------------------------------------

CASES = [
    (1.0, 0.3, 50, 1e-5, "rdp"),
    (1.1, 0.01, 1000, 1e-5, "rdp"),
    (0.8, 0.1, 20, 1e-6, "rdp"),
    (2.0, 1.0, 5, 1e-3, "rdp"),
    (1.5, 0.05, 3, 1e-5, "pld"),
]


@pytest.mark.parametrize(("z", "q", "rounds", "delta", "kind"), CASES)
def test_epsilon_is_what_dp_accounting_computes(
    z: float, q: float, rounds: int, delta: float, kind: str
) -> None:
    # Prepare
    accountant = PrivacyAccountant(
        config(noise_multiplier=z, sampling_rate=q, delta=delta, accountant=kind)
    )

    # Execute
    for _ in range(rounds):
        accountant.would_exceed(1e9)
        accountant.step()

    # Assert
    expected = reference_epsilon(z, q, rounds, delta, kind)
    assert accountant.epsilon() == pytest.approx(expected, rel=1e-9)
    assert accountant.spent().epsilon == pytest.approx(expected, rel=1e-9)
    assert accountant.epsilon_per_round() == pytest.approx(
        reference_epsilon(z, q, 1, delta, kind), rel=1e-9
    )


def test_reference_point_of_the_issue(capsys: pytest.CaptureFixture[str]) -> None:
    # ε after 50 rounds at noise multiplier 1.0, sampling 0.3, δ = 1e-5 (issue 12's benchmark figure)
    accountant = PrivacyAccountant(config(noise_multiplier=1.0, sampling_rate=0.3, delta=1e-5))
    epsilon = accountant.epsilon(50)
    with capsys.disabled():
        print(f"\nepsilon(z=1.0, q=0.3, rounds=50, delta=1e-5, RDP) = {epsilon:.4f}")
    assert epsilon == pytest.approx(reference_epsilon(1.0, 0.3, 50, 1e-5), rel=1e-9)
    assert 16.0 < epsilon < 17.5  # 16.81 with dp-accounting 0.4 / 0.5


def test_epsilon_grows_with_rounds_and_falls_with_noise() -> None:
    accountant = PrivacyAccountant(config(noise_multiplier=1.0, sampling_rate=0.1))
    by_rounds = [accountant.epsilon(r) for r in range(0, 40)]
    assert by_rounds[0] == 0.0
    assert all(a < b for a, b in itertools.pairwise(by_rounds))

    noises = [0.6, 0.8, 1.0, 1.5, 2.0, 4.0]
    by_noise = [PrivacyAccountant(config(noise_multiplier=z)).epsilon(20) for z in noises]
    assert all(a > b for a, b in itertools.pairwise(by_noise))


@pytest.mark.parametrize("budget", [1.0, 3.0, 8.0])
def test_the_budget_stops_the_run_before_the_round_that_would_exceed_it(budget: float) -> None:
    # Prepare: the first round count whose ε is over the budget, straight from dp_accounting
    z, q = 1.0, 0.2
    low, high = 0, 512  # bisection: ε(low) <= budget < ε(high), ε increasing in rounds
    while high - low > 1:
        middle = (low + high) // 2
        if reference_epsilon(z, q, middle, 1e-5) > budget:
            high = middle
        else:
            low = middle
    first_over = high
    accountant = PrivacyAccountant(config(noise_multiplier=z, sampling_rate=q))

    # Execute: the loop a federated run follows
    while not accountant.would_exceed(budget):
        accountant.step()

    # Assert
    assert accountant.rounds == first_over - 1
    assert accountant.epsilon() <= budget < accountant.epsilon(accountant.rounds + 1)


def test_a_budget_below_the_first_round_allows_no_round() -> None:
    accountant = PrivacyAccountant(config())
    assert accountant.would_exceed(1e-3)
    assert accountant.rounds == 0
    assert accountant.spent().epsilon == 0.0


def test_privacy_spent_is_json_for_the_release_document() -> None:
    # Prepare
    accountant = PrivacyAccountant(config(noise_multiplier=1.2, clip_norm=0.5, sampling_rate=0.25))
    for _ in range(3):
        accountant.step()

    # Execute
    spent = accountant.spent()
    document = json.loads(spent.to_json())

    # Assert
    assert document == {
        "accountant": "rdp",
        "clip_norm": 0.5,
        "delta": 1e-5,
        "epsilon": spent.epsilon,
        "noise_multiplier": 1.2,
        "rounds": 3,
        "sampling_rate": 0.25,
    }
    assert PrivacySpent.from_json(spent.to_json()) == spent
    with pytest.raises(ConfigError, match="not a privacy record"):
        PrivacySpent.from_json('{"epsilon": 1.0}')
    with pytest.raises(AttributeError):
        spent.epsilon = 0.0  # type: ignore[misc]


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": math.inf}, "noise_multiplier"),
        ({"clip_norm": 0}, "clip_norm"),
        ({"clip_norm": math.nan}, "clip_norm"),
        ({"sampling_rate": 0.0}, "sampling_rate"),
        ({"sampling_rate": 1.5}, "sampling_rate"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"mode": "local"}, "mode"),
        ({"accountant": "moments"}, "accountant"),
    ],
)
def test_bad_settings_are_refused_naming_the_parameter(
    changes: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{named} must be"):
        config(**changes)


def test_bad_call_arguments_are_refused_naming_the_parameter() -> None:
    mechanism = GaussianMechanism(config(mode="distributed"), seed=0)
    accountant = PrivacyAccountant(config())
    with pytest.raises(ConfigError, match=r"^clip_norm"):
        clip_update([np.ones(2)], -1.0)
    with pytest.raises(ConfigError, match=r"^clients"):
        mechanism.client_update([np.ones(2)], clients=0)
    with pytest.raises(ConfigError, match=r"^expected_clients"):
        mechanism.average_std(0)
    with pytest.raises(ConfigError, match=r"^budget"):
        accountant.would_exceed(0.0)
    with pytest.raises(ConfigError, match=r"^rounds"):
        accountant.epsilon(-1)
    with pytest.raises(ConfigError, match=r"^rounds"):
        PrivacySpent(1.0, 1.0, 0.5, -1, 1e-5, 0.0, "rdp")
    with pytest.raises(ConfigError, match=r"^epsilon"):
        PrivacySpent(1.0, 1.0, 0.5, 1, 1e-5, math.nan, "rdp")
