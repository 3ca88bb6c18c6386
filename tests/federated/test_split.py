"""Splitting a labelled set among simulated clients: sizes, determinism, label skew."""

from __future__ import annotations

import numpy as np
import pytest

from fogline.errors import ConfigError
from fogline.federated import SplitSpec, split_clients


def data(n: int = 1000, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, classes, size=n)


def classes_per_client(parts: list[tuple[np.ndarray, np.ndarray]]) -> list[int]:
    return [len(np.unique(y)) for _, y in parts]


def dominant_share(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The mean over clients of the share of their most common label."""
    return float(np.mean([np.bincount(y).max() / len(y) for _, y in parts]))


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.1", "dirichlet:5", "shards:2"])
def test_every_example_goes_to_exactly_one_client_and_each_gets_one(spec: str) -> None:
    X, y = data()
    parts = split_clients((X, y), 10, SplitSpec.parse(spec), seed=3)
    assert len(parts) == 10
    assert all(len(part[1]) >= 1 for part in parts)
    rows = np.concatenate([part[0] for part in parts])
    assert len(rows) == len(X)
    assert len({r.tobytes() for r in rows}) == len(X)


@pytest.mark.parametrize("spec", ["iid", "dirichlet:0.3", "shards:3"])
def test_the_same_seed_gives_the_same_split_and_another_seed_another(spec: str) -> None:
    X, y = data()
    one = split_clients((X, y), 7, SplitSpec.parse(spec), seed=5)
    two = split_clients((X, y), 7, SplitSpec.parse(spec), seed=5)
    other = split_clients((X, y), 7, SplitSpec.parse(spec), seed=6)
    assert all(
        np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
        for a, b in zip(one, two, strict=True)
    )
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(one, other, strict=True))


def test_iid_sizes_differ_by_at_most_one() -> None:
    sizes = [len(p[1]) for p in split_clients(data(), 7, SplitSpec.parse("iid"))]
    assert max(sizes) - min(sizes) <= 1


def test_dirichlet_0_1_is_measurably_label_skewed_and_large_alpha_is_not() -> None:
    X, y = data()
    skewed = dominant_share(split_clients((X, y), 10, SplitSpec.parse("dirichlet:0.1")))
    mixed = dominant_share(split_clients((X, y), 10, SplitSpec.parse("dirichlet:100")))
    assert skewed >= 0.5 and mixed <= 0.2, (skewed, mixed)


def test_shards_give_each_client_about_k_classes() -> None:
    parts = split_clients(data(), 10, SplitSpec.parse("shards:2"), seed=0)
    assert max(classes_per_client(parts)) <= 4
    assert [len(p[1]) for p in parts] == [100] * 10


def test_a_dirichlet_client_left_empty_takes_one_example() -> None:
    X, y = data(n=40, classes=2)
    parts = split_clients((X, y), 30, SplitSpec.parse("dirichlet:0.01"), seed=0)
    assert min(len(p[1]) for p in parts) == 1
    assert sum(len(p[1]) for p in parts) == 40


@pytest.mark.parametrize(
    "text",
    [
        "",
        "iid:3",
        "dirichlet",
        "dirichlet:0",
        "dirichlet:-1",
        "dirichlet:x",
        "shards:0",
        "shards:1.5",
        "pathological",
    ],
)
def test_a_bad_split_is_one_clear_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--split"):
        SplitSpec.parse(text)


def test_too_few_examples_for_the_clients_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least one example"):
        split_clients(data(n=5), 6, SplitSpec.parse("iid"))
    with pytest.raises(ConfigError, match="shards"):
        split_clients(data(n=10), 6, SplitSpec.parse("shards:2"))
