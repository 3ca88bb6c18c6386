"""The template's parts: the value types, sampling clients, FedProx's proximal term, the registry."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import ConfigError, ItemError
from fogline.federated.strategy import (
    FedAvg,
    FedProx,
    Krum,
    Update,
    Weights,
    proximal_gradient,
    strategy_for,
)

tensors = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=4),
    hnp.arrays(
        st.sampled_from([np.float16, np.float32, np.float64]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
        elements=st.floats(-100, 100, width=16),
    ),
    min_size=1,
    max_size=4,
)


@given(tensors)
def test_weights_round_trip_through_a_vector(arrays: dict[str, np.ndarray]) -> None:
    weights = Weights(arrays)

    again = weights.like(weights.vector())

    assert again == weights
    assert weights.size == sum(a.size for a in arrays.values())


def test_weights_are_a_read_only_copy() -> None:
    source = np.zeros(3)
    weights = Weights({"w": source})
    source[0] = 5.0

    assert weights["w"][0] == 0.0
    with pytest.raises(ValueError, match="read-only"):
        weights["w"][0] = 1.0


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({}, "at least one tensor"),
        ({"": np.zeros(1)}, "non-empty string"),
        ({"w": np.zeros(2, np.int32)}, "tensor 'w' has dtype int32; weights are floating-point"),
    ],
)
def test_weights_refuse_what_is_not_a_model(arrays: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Weights(arrays)


@pytest.mark.parametrize("examples", [0, -3, 2.5, True])
def test_an_update_needs_a_positive_number_of_examples(examples: object) -> None:
    with pytest.raises(ItemError, match="client 'dev-7': num_examples must be a positive integer"):
        Update("dev-7", Weights({"w": np.zeros(1)}), examples)  # type: ignore[arg-type]


CLIENTS = [f"dev-{i:02d}" for i in range(20)]


@given(st.floats(0.01, 1.0), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_configure_samples_a_fraction_but_at_least_min_clients(
    fraction: float, min_clients: int, seed: int
) -> None:
    strategy = FedAvg(fraction=fraction, min_clients=min_clients)

    first = strategy.configure(4, CLIENTS, np.random.default_rng(seed))
    again = strategy.configure(4, CLIENTS, np.random.default_rng(seed))

    assert first == again
    chosen = [i.client for i in first]
    assert len(chosen) == max(min_clients, int(np.ceil(fraction * len(CLIENTS))))
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(CLIENTS)
    assert all(i.config == {"round": 4} for i in first)


def test_configure_refuses_too_few_clients() -> None:
    with pytest.raises(ConfigError, match="FedAvg: 2 clients available, min_clients is 3"):
        FedAvg(min_clients=3).configure(1, ["a", "b"], np.random.default_rng(0))


def test_fedprox_sends_mu_to_every_client() -> None:
    chosen = FedProx(mu=0.25).configure(2, CLIENTS, np.random.default_rng(0))

    assert {i.config["mu"] for i in chosen} == {0.25}


@given(tensors, st.floats(0, 10))
def test_proximal_gradient_is_mu_times_the_distance(
    arrays: dict[str, np.ndarray], mu: float
) -> None:
    weights = Weights(arrays)
    zero = weights.like(np.zeros(weights.size))

    gradient = proximal_gradient(weights, zero, mu)

    for name, array in weights.items():
        np.testing.assert_allclose(
            gradient[name], (mu * array.astype(np.float64)).astype(array.dtype)
        )
    assert not proximal_gradient(weights, weights, mu).vector().any()


def test_proximal_gradient_refuses_a_negative_mu_and_other_tensors() -> None:
    w = Weights({"w": np.ones(2)})
    with pytest.raises(ConfigError, match="mu must be >= 0"):
        proximal_gradient(w, w, -1.0)
    with pytest.raises(ConfigError, match="differ in tensors"):
        proximal_gradient(w, Weights({"w": np.ones(3)}), 0.1)


def test_evaluate_is_none_unless_given_a_function() -> None:
    w = Weights({"w": np.ones(2)})

    assert FedAvg().evaluate(1, w) is None
    assert FedAvg(evaluate_fn=lambda r, x: {"sum": float(x["w"].sum()) + r}).evaluate(1, w) == {
        "sum": 3.0
    }


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("fedsgd", {}, "unknown strategy 'fedsgd'; known: fedadagrad, fedadam, fedavg"),
        ("krum", {"mu": 1}, "strategy 'krum': .*unexpected keyword argument 'mu'"),
        ("krum", {"f": -1}, "Krum: f must be an integer >= 0"),
        ("trimmed-mean", {"beta": 0.5}, r"TrimmedMean: beta must be in \(0, 0.5\)"),
        ("fedadam", {"tau": 0}, "FedAdam: tau must be > 0"),
        ("fedavg", {"fraction": 0}, r"FedAvg: fraction must be in \(0, 1\]"),
    ],
)
def test_strategy_for_refuses_unknown_names_and_bad_options(
    name: str, options: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        strategy_for(name, **options)


def test_strategy_for_builds_with_options() -> None:
    strategy = strategy_for("krum", f=3, fraction=0.5)

    assert isinstance(strategy, Krum) and strategy.f == 3 and strategy.fraction == 0.5
