"""One contract for every stage: generated over PRE_SPECS and POST_SPECS.

A new spec fails ``test_every_spec_has_an_example`` until it gets an
example here, and is then held to the same checks as the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from fogline.errors import ConfigError, ItemError
from fogline.model import Signature, TensorSpec
from fogline.pipeline._base import ArraySpec, PostprocessSpec, PreprocessSpec
from fogline.pipeline._item import Item
from fogline.pipeline.stages import POST_SPECS, PRE_SPECS

Make = Callable[[np.random.Generator], Any]


@dataclass(frozen=True)
class PreExample:
    config: dict[str, Any]
    given: ArraySpec
    data: Make  # one item's data, fitting ``given``
    bad: Any  # data the stage must refuse with ItemError
    refused: ArraySpec | None = None  # a given that output() must refuse


def _image(h: int, w: int, c: int = 3) -> Make:
    return lambda rng: rng.integers(0, 256, (h, w, c), dtype=np.uint8)


def _floats(*shape: int) -> Make:
    return lambda rng: rng.standard_normal(shape).astype(np.float32)


HWC = ArraySpec((None, None, 3), "uint8", "HWC")

PRE: dict[str, PreExample] = {
    "resize": PreExample(
        {"size": [8, 12]},
        HWC,
        _image(20, 30),
        np.zeros((20, 30), np.uint8),
        ArraySpec((20, 30), "uint8"),
    ),
    "letterbox": PreExample(
        {"size": [16, 16], "fill": 0},
        HWC,
        _image(10, 20),
        np.zeros((10, 20), np.uint8),
        ArraySpec((3, 10, 20), "uint8", "CHW"),
    ),
    "crop": PreExample(
        {"box": [2, 1, 5, 4]},
        HWC,
        _image(10, 12),
        np.zeros((10, 12), np.uint8),
        ArraySpec((3, 3, 3), "uint8", "HWC"),
    ),
    "colour": PreExample(
        {"to": "gray"},
        HWC,
        _image(6, 7),
        np.zeros((6, 7), np.uint8),
        ArraySpec((6, 7, 4), "uint8", "HWC"),
    ),
    "normalize": PreExample(
        {"mean": [0.5] * 3, "std": [0.2] * 3, "scale": 1 / 255},
        HWC,
        _image(6, 7),
        np.zeros((6, 7, 4), np.uint8),
        ArraySpec((6, 7, 4), "uint8", "HWC"),
    ),
    "layout": PreExample(
        {"to": "chw"},
        HWC,
        _image(6, 7),
        np.zeros((6, 7), np.uint8),
        ArraySpec((3, 6, 7), "uint8", "CHW"),
    ),
    "cast": PreExample(
        {"dtype": "float32"},
        ArraySpec((4,), "uint8"),
        lambda rng: rng.integers(0, 9, 4, dtype=np.uint8),
        np.array(["a", "b"]),
    ),
    "reshape": PreExample(
        {"shape": [2, -1]},
        ArraySpec((8,), "float32"),
        _floats(8),
        np.zeros(7, np.float32),
        ArraySpec((7,), "float32"),
    ),
    "window": PreExample(
        {"size": 4, "hop": 2},
        ArraySpec((3,), "float32"),
        _floats(3),
        np.zeros((2, 3), np.float32),
        ArraySpec((2, 3), "float32"),
    ),
    "fft": PreExample(
        {"axis": 0},
        ArraySpec((16, 3), "float32"),
        _floats(16, 3),
        np.array(1.0, np.float32),  # rank 0: no axis 0
        ArraySpec((), "float32"),
    ),
    "bands": PreExample(
        {"count": 4},
        ArraySpec((9, 3), "float32"),
        _floats(9, 3),
        np.zeros((9, 3, 2), np.float32),
        ArraySpec((3, 3), "float32"),
    ),
    "scale": PreExample(
        {"mean": [1, 2, 3], "std": [1, 2, 3]},
        ArraySpec((3,), "float32"),
        _floats(3),
        np.zeros(4, np.float32),
        ArraySpec((4,), "float32"),
    ),
}


def _spec_type(cls: type[Any]) -> str:
    return str(cls.model_fields["type"].annotation.__args__[0])


PRE_BY_TYPE = {_spec_type(cls): cls for cls in PRE_SPECS}
POST_BY_TYPE = {_spec_type(cls): cls for cls in POST_SPECS}


def _pre(kind: str) -> PreprocessSpec:
    return PRE_BY_TYPE[kind].model_validate({"type": kind, **PRE[kind].config})


def _run(stage: Any, items: list[Item]) -> list[Item]:
    return [out for item in items if (out := stage(item)) is not None]


def _stream(kind: str, source: str, seed: int, count: int = 9) -> list[Item]:
    rng = np.random.default_rng(seed)
    return [
        Item(source, i, 1000.0 + i, PRE[kind].data(rng), {"position": f"{source}:{i}"})
        for i in range(count)
    ]


def test_every_spec_has_an_example() -> None:
    assert set(PRE) == set(PRE_BY_TYPE)
    assert set(POST) == set(POST_BY_TYPE)
    assert len(PRE_SPECS) == len(PRE_BY_TYPE) and len(POST_SPECS) == len(POST_BY_TYPE)


@pytest.mark.parametrize("kind", sorted(PRE))
def test_output_predicts_what_the_stage_produces(kind: str) -> None:
    # Prepare
    spec, example = _pre(kind), PRE[kind]
    predicted = spec.output(example.given)
    # Execute
    produced = _run(spec.build(), _stream(kind, "a", 0))
    # Assert
    assert produced, f"{kind} produced nothing from 9 items"
    for item in produced:
        assert isinstance(item.data, np.ndarray)
        assert predicted.shape is not None and item.data.ndim == len(predicted.shape)
        assert item.data.dtype.name == predicted.dtype
        for want, got in zip(predicted.shape, item.data.shape, strict=True):
            assert want is None or want == got, (
                f"{kind}: {predicted.describe()} vs {item.data.shape}"
            )
        if predicted.layout == "HWC":
            assert predicted.shape[-1] in (None, item.data.shape[-1])


@pytest.mark.parametrize("kind", sorted(PRE))
def test_bad_data_is_an_item_error_with_the_position(kind: str) -> None:
    stage = _pre(kind).build()
    item = Item("a", 5, 0.0, PRE[kind].bad, {"position": "feed.csv:5"})
    with pytest.raises(ItemError, match=r"feed\.csv:5"):
        stage(item)
    with pytest.raises(ItemError):
        stage(Item("a", 6, 0.0, "not an array"))


@pytest.mark.parametrize("kind", sorted(k for k in PRE if PRE[k].refused is not None))
def test_output_refuses_data_it_cannot_take(kind: str) -> None:
    refused = PRE[kind].refused
    assert refused is not None
    with pytest.raises(ConfigError):
        _pre(kind).output(refused)


@pytest.mark.parametrize("kind", sorted(PRE))
def test_unknown_dims_pass_through_output(kind: str) -> None:
    given = PRE[kind].given
    assert given.shape is not None
    vague = ArraySpec(tuple(None for _ in given.shape), given.dtype, given.layout)
    predicted = _pre(kind).output(vague)
    assert predicted.rank in (None, _pre(kind).output(given).rank)


@pytest.mark.parametrize("kind", sorted(PRE))
def test_pre_state_is_per_source(kind: str) -> None:
    # Prepare: two sources interleaved through one stage, and source a alone through another
    a, b = _stream(kind, "a", 1), _stream(kind, "b", 2)
    alone = [item.data.copy() for item in _run(_pre(kind).build(), _stream(kind, "a", 1))]
    # Execute
    mixed = _run(_pre(kind).build(), [x for pair in zip(a, b, strict=True) for x in pair])
    # Assert
    from_a = [item.data for item in mixed if item.source == "a"]
    assert len(from_a) == len(alone)
    for got, want in zip(from_a, alone, strict=True):
        np.testing.assert_array_equal(got, want)


# --- post-processing --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostExample:
    config: dict[str, Any]
    outputs: tuple[TensorSpec, ...]
    make: Make  # one item's outputs
    result: Callable[[np.random.Generator], dict[str, Any]] = lambda rng: {}
    produced: frozenset[str] = frozenset()
    meta: dict[str, Any] = field(default_factory=dict)


def _yolo(rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = np.empty((6, 40), np.float32)
    out[:2] = rng.uniform(0, 64, (2, 40))
    out[2:4] = rng.uniform(2, 20, (2, 40))
    out[4:] = rng.uniform(0, 1, (2, 40))
    return {"out": out}


def _ssd(rng: np.random.Generator) -> dict[str, np.ndarray]:
    corner = rng.uniform(0, 0.7, (10, 2))
    boxes = np.concatenate((corner, corner + rng.uniform(0.05, 0.3, (10, 2))), axis=1)
    return {"boxes": boxes.astype(np.float32), "scores": rng.uniform(0, 1, (10, 3))}


def _detections(rng: np.random.Generator) -> dict[str, Any]:
    corner = rng.uniform(0, 50, (8, 2))
    boxes = np.concatenate((corner, corner + rng.uniform(5, 30, (8, 2))), axis=1)
    return {
        "detections": [
            {"label": str(rng.integers(2)), "score": float(s), "box": b.tolist()}
            for s, b in zip(rng.uniform(0, 1, 8), boxes, strict=True)
        ]
    }


POST: dict[str, PostExample] = {
    "classify": PostExample(
        {"top_k": 2, "labels": list("abcde"), "min_score": 0.5},
        (TensorSpec("logits", "float32", ("batch", 5)),),
        lambda rng: {"logits": rng.standard_normal(5).astype(np.float32)},
    ),
    "yolo": PostExample(
        {"format": "v8", "score": 0.3},
        (TensorSpec("out", "float32", (1, 6, 40)),),
        _yolo,
        meta={"geometry": (0.5, 0.5, 0.0, 8.0), "source_size": (128, 96)},
    ),
    "ssd": PostExample(
        {"boxes": "boxes", "scores": "scores", "score": 0.3},
        (TensorSpec("boxes", "float32", (1, 10, 4)), TensorSpec("scores", "float32", (1, 10, 3))),
        _ssd,
        meta={"model_size": (64, 64)},
    ),
    "nms": PostExample({"iou": 0.3}, (), lambda rng: {}, _detections, frozenset({"detections"})),
    "anomaly": PostExample(
        {"reduce": "mean", "baseline": {"items": 3, "k": 2.0}},
        (TensorSpec("err", "float32", ("batch", 8)),),
        lambda rng: {"err": rng.uniform(0, 1, 8).astype(np.float32)},
    ),
    "smooth": PostExample(
        {"window": 3},
        (),
        lambda rng: {},
        lambda rng: {"score": float(rng.uniform())},
        frozenset({"score"}),
    ),
    "debounce": PostExample(
        {"k": 2, "n": 3, "as": "alarm"},
        (),
        lambda rng: {},
        lambda rng: {"anomaly": bool(rng.integers(2))},
        frozenset({"anomaly"}),
    ),
    "drift": PostExample(
        {"on": "err", "detector": "ks", "reference": {"items": 20}, "every": 4},
        (TensorSpec("err", "float32", ("batch", 4)),),
        lambda rng: {"err": rng.uniform(0, 1, 4).astype(np.float32)},
    ),
    "offload": PostExample(  # nothing listens on port 1: each wanted item is counted refused
        {
            "url": "http://127.0.0.1:1/v2/models/teacher",
            "when": "score < 0.5",
            "timeout_ms": 500,
            "circuit": {"failures": 100},
        },
        (),
        lambda rng: {},
        lambda rng: {"score": float(rng.uniform())},
        frozenset({"score"}),
    ),
}


def _post(kind: str) -> PostprocessSpec:
    return POST_BY_TYPE[kind].model_validate({"type": kind, **POST[kind].config})


def _post_stream(kind: str, source: str, seed: int, count: int = 8) -> list[Item]:
    rng, example = np.random.default_rng(seed), POST[kind]
    return [
        Item(
            source,
            i,
            0.0,
            None,
            dict(example.meta, position=f"{source}#{i}"),
            outputs=example.make(rng),
            result=example.result(rng),
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("kind", sorted(POST))
def test_check_names_only_keys_that_are_written(kind: str) -> None:
    # Prepare
    example, spec = POST[kind], _post(kind)
    signature = Signature((), example.outputs)
    # Execute
    known = spec.check(signature, example.produced)
    stage = spec.build(signature)
    results = [item.result for item in _post_stream(kind, "a", 3) if stage(item) is not None]
    # Assert
    assert example.produced <= known
    keys = {k for k in known if "." not in k}  # "drift.alarm": key alarm of result["drift"]
    for result in results:
        assert keys <= set(result), f"{kind}: check() promised {sorted(keys - set(result))}"
        for name, _, key in (k.partition(".") for k in known - keys):
            assert key in result[name], f"{kind}: check() promised {name}.{key}"
        json.dumps(result, allow_nan=False)
        _assert_plain(result)


def _assert_plain(value: Any) -> None:
    """JSON-able *and* plain python: no numpy scalars hiding in the result."""
    if isinstance(value, dict):
        for v in value.values():
            _assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain(v)
    else:
        assert value is None or type(value) in (bool, int, float, str), type(value)


@pytest.mark.parametrize("kind", sorted(POST))
def test_post_state_is_per_source(kind: str) -> None:
    signature = Signature((), POST[kind].outputs)
    alone = [i.result for i in _run(_post(kind).build(signature), _post_stream(kind, "a", 4))]
    a, b = _post_stream(kind, "a", 4), _post_stream(kind, "b", 5)
    mixed = _run(_post(kind).build(signature), [x for pair in zip(a, b, strict=True) for x in pair])
    assert [item.result for item in mixed if item.source == "a"] == alone


@pytest.mark.parametrize("kind", sorted(k for k in POST if POST[k].outputs))
def test_missing_output_is_a_config_error_then_an_item_error(kind: str) -> None:
    example = POST[kind]
    with pytest.raises(ConfigError):
        _post(kind).check(
            Signature(
                (), (TensorSpec("other", "float32", (1, 2, 2)),) * (1 + len(example.outputs))
            ),
            frozenset(),
        )
    stage = _post(kind).build(Signature((), example.outputs))
    with pytest.raises(ItemError, match="x#0"):
        stage(Item("x", 0, 0.0, None, outputs={}))


@pytest.mark.parametrize("kind", sorted(k for k in POST if POST[k].produced))
def test_needing_an_earlier_key_is_checked(kind: str) -> None:
    with pytest.raises(ConfigError, match="earlier step"):
        _post(kind).check(Signature((), ()), frozenset())
