"""The architecture search on a real (tiny) family: trained, exported, timed through the Engine."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.data import Dataset
from fogline.errors import ConfigError, OptimizeError
from fogline.examples.digits_nas import DigitsFamily
from fogline.model import Signature, TensorSpec
from fogline.optimize import (
    Candidate,
    Family,
    NasOptions,
    OptimizeOptions,
    family_names,
    load_dataset,
    load_family,
    nas_finish,
    nas_search,
    pareto_front,
)
from fogline.optimize._compress import load_torch_factory
from fogline.optimize._nas import build_trained, grid, holdout, pick, prepared

FAST = OptimizeOptions(threads=1, batches=(8,), duration_s=0.05, sensitivity=False)


class TinyDigits(DigitsFamily):
    """Two networks: the search, the front and the choice in seconds."""

    space: Mapping[str, tuple[int, ...]] = {
        "width": (4, 16),
        "depth": (1,),
        "kernel": (3,),
        "resolution": (8,),
    }


class Unnamed:
    """A family that names no inputs: the defaults apply; it has no ``prepare``."""

    space: Mapping[str, tuple[int, ...]] = {"width": (2,)}
    metric = "accuracy"

    def build(self, knobs):  # pragma: no cover - never built here
        raise NotImplementedError

    example_input = fit = score = build


def digits(split: str) -> Dataset:
    signature = Signature((TensorSpec("pixels", "float32", ("batch", 1, 8, 8)),), ())
    return load_dataset(f"fogline.examples:digits_{split}", signature)


@pytest.fixture(scope="module")
def searched():
    family = TinyDigits()
    result = nas_search(
        family,
        digits("train"),
        None,  # ranked on a seeded fifth of the training data, never on the eval data
        NasOptions(latency_budget_ms=1e6, epochs=2),
        FAST,
        name="tiny",
    )
    return family, result


def candidate(latency: float, metric: float) -> Candidate:
    return Candidate({"latency": latency, "metric": metric}, latency_ms=latency, metric=metric)


def test_a_candidate_dominated_on_both_axes_is_not_on_the_front():
    fast, good, dominated = candidate(1.0, 90.0), candidate(2.0, 95.0), candidate(3.0, 89.0)
    front = pareto_front([dominated, good, fast])
    assert front == [fast, good]
    assert dominated not in front


@given(st.lists(st.tuples(st.floats(0.01, 10), st.floats(0, 100)), min_size=1, max_size=25))
def test_the_front_is_exactly_the_candidates_no_other_dominates(points):
    candidates = [candidate(latency, metric) for latency, metric in points]
    front = pareto_front(candidates)
    assert front, "a non-empty set always has a front"
    for c in candidates:
        beaten = any(
            o.latency_ms <= c.latency_ms
            and o.metric >= c.metric
            and (o.latency_ms < c.latency_ms or o.metric > c.metric)
            for o in candidates
        )
        assert (c in front) == (not beaten)
    assert [c.latency_ms for c in front] == sorted(c.latency_ms for c in front)


def test_the_search_times_and_scores_every_candidate(searched):
    _, result = searched
    assert [c.knobs for c in result.candidates] == grid(TinyDigits.space)
    assert result.grid_size == 2 and not result.sampled
    train = digits("train")
    assert result.val_items == round(0.2 * train.size)
    assert result.train_items + result.val_items == train.size
    for c in result.candidates:
        assert c.status == "ok", c.error
        assert c.latency_ms > 0 and c.p99_ms >= c.latency_ms
        assert c.metric is not None and 0 <= c.metric <= 100
        assert c.params > 0 and c.size_bytes > 0
    wide = next(c for c in result.candidates if c.knobs["width"] == 16)
    narrow = next(c for c in result.candidates if c.knobs["width"] == 4)
    assert wide.params > narrow.params
    # the front holds exactly the candidates no other one dominates
    for c in result.candidates:
        assert c.on_front == (not any(o.dominates(c) for o in result.candidates))
    # a budget that holds everything: the best metric is chosen
    assert result.chosen is not None
    assert result.chosen.metric == max(c.metric for c in result.candidates)


def test_the_budget_is_respected(searched):
    _, result = searched
    fastest = min(result.candidates, key=lambda c: c.latency_ms)
    result.budget_ms = fastest.latency_ms
    try:
        chosen = result.decide()
        assert chosen is fastest
        assert [c for c in result.candidates if c.within_budget] == [fastest]
        result.budget_ms = fastest.latency_ms / 2
        assert result.decide() is None
        assert result.chosen is None
    finally:
        result.budget_ms = 1e6
        result.decide()


def test_no_candidate_inside_the_budget_names_the_fastest(searched, tmp_path):
    family, result = searched
    fastest = min(result.candidates, key=lambda c: c.latency_ms)
    result.budget_ms = fastest.latency_ms / 2
    try:
        result.decide()
        with pytest.raises(OptimizeError, match="no candidate runs within") as caught:
            nas_finish(family, result, digits("train"), digits("eval"), tmp_path / "out", FAST)
        assert fastest.label in str(caught.value)
        assert not (tmp_path / "out").exists()
    finally:
        result.budget_ms = 1e6
        result.decide()


def test_a_seeded_sample_is_the_same_every_time_and_in_grid_order():
    everything = grid({"width": (4, 8, 12, 16), "depth": (1, 2), "kernel": (3, 5)})
    first, again = pick(everything, 5, seed=7), pick(everything, 5, seed=7)
    assert first == again and len(first) == 5
    assert first == [k for k in everything if k in first]  # grid order
    assert {str(pick(everything, 5, seed=s)) for s in range(10)} != {str(first)}
    assert pick(everything, None, seed=7) == everything == pick(everything, 99, seed=7)


def test_training_is_deterministic_with_a_seed():
    family = TinyDigits()
    knobs = {"width": 4, "depth": 1, "kernel": 3, "resolution": 8}
    train = digits("train").limit(128)
    first = build_trained(family, knobs, train, epochs=1, seed=3).state_dict()
    second = build_trained(family, knobs, train, epochs=1, seed=3).state_dict()
    other = build_trained(family, knobs, train, epochs=1, seed=4).state_dict()
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert not all(np.array_equal(first[k].numpy(), other[k].numpy()) for k in first)


def test_inputs_are_resized_to_a_candidate_without_prepare():
    signature = Signature((TensorSpec("input", "float32", ("batch", 1, 4, 4)),), ())
    data = Dataset("d", ({"input": np.ones((3, 1, 8, 8), np.float32)},), np.arange(3))
    fitted = prepared(Unnamed(), data, {"width": 2}, signature)
    assert fitted.array("input").shape == (3, 1, 4, 4)
    assert np.allclose(fitted.array("input"), 1.0)
    assert fitted.labels is not None and fitted.labels.tolist() == [0, 1, 2]
    assert family_names(Unnamed()) == (("input",), ("output",))


def test_load_family_takes_instances_and_classes_and_refuses_the_rest():
    assert isinstance(load_family("fogline.examples.digits_nas:family"), Family)
    assert isinstance(load_family("fogline.examples.digits_nas:DigitsFamily"), Family)
    with pytest.raises(ConfigError, match="module:name"):
        load_family("fogline.examples.digits_nas")
    with pytest.raises(ConfigError, match="cannot import 'nope'"):
        load_family("fogline.examples.digits_nas:nope")
    with pytest.raises(ConfigError, match=r"is not a fogline.optimize.Family \(it lacks space"):
        load_family("fogline.examples:LABELS")


def test_nas_options_are_checked():
    with pytest.raises(ConfigError, match="latency budget"):
        NasOptions(latency_budget_ms=-1)
    with pytest.raises(ConfigError, match="sample"):
        NasOptions(latency_budget_ms=1, sample=0)


def test_the_validation_split_is_seeded_disjoint_and_covers_the_training_data():
    train = digits("train")
    rest, held = holdout(train, 0.2, seed=3)
    again_rest, again_held = holdout(train, 0.2, seed=3)
    _, other = holdout(train, 0.2, seed=4)
    assert np.array_equal(held.array("pixels"), again_held.array("pixels"))
    assert np.array_equal(rest.labels, again_rest.labels)
    assert not np.array_equal(held.array("pixels"), other.array("pixels"))
    assert rest.size + held.size == train.size and held.size == round(0.2 * train.size)
    rows = {p.tobytes() for p in train.array("pixels")}
    rest_rows = {p.tobytes() for p in rest.array("pixels")}
    held_rows = {p.tobytes() for p in held.array("pixels")}
    assert rest_rows | held_rows == rows and not rest_rows & held_rows
    with pytest.raises(ConfigError, match="cannot be split"):
        holdout(train.limit(2), 0.1, seed=0)
    with pytest.raises(ConfigError, match="validation fraction"):
        NasOptions(latency_budget_ms=1, val_fraction=1.0)


BROKEN = "import numpy\n\ndef family(:\n    pass\n"
UNDEFINED = "x = 1\nfamily = NoSuchName()\n"


@pytest.mark.parametrize(
    "source, fragments",
    [
        (BROKEN, ["SyntaxError in", "line 3"]),
        (UNDEFINED, ["NameError", "line 2"]),
    ],
    ids=["syntax", "name"],
)
def test_a_broken_user_module_is_a_config_error_naming_its_file_and_line(
    tmp_path, monkeypatch, request, source, fragments
):
    module = f"broken_{request.node.callspec.id}_mod"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    for load, what in ((load_family, "--nas "), (load_torch_factory, "")):
        with pytest.raises(ConfigError) as caught:
            load(f"{module}:family")
        message = str(caught.value)
        assert message.startswith(f"{what}{module}:family: cannot import {module!r}")
        assert str(tmp_path / f"{module}.py") in message
        for fragment in fragments:
            assert fragment in message, message
