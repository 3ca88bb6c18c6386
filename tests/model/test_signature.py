"""TensorSpec and Signature: shapes, dtypes, sample inputs and the errors that name an input."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fogline.errors import SignatureMismatch
from fogline.model import Signature, TensorSpec
from fogline.model._signature import DTYPES

# --- strategies ------------------------------------------------------------------------------

names = st.text(string.ascii_letters + string.digits + "_:./", min_size=1, max_size=16)
fixed_dims = st.integers(min_value=0, max_value=5)
dynamic_dims = st.one_of(st.none(), st.sampled_from(["batch", "n", "seq", "height"]), names)
dims = st.one_of(fixed_dims, dynamic_dims)
shapes = st.lists(dims, max_size=5).map(tuple)
dtypes = st.sampled_from(sorted(DTYPES))
specs = st.builds(TensorSpec, names, dtypes, shapes)


@st.composite
def signatures(draw: st.DrawFn) -> Signature:
    """A signature of one to four inputs with distinct names, and one output."""
    input_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    inputs = tuple(TensorSpec(n, draw(dtypes), draw(shapes)) for n in input_names)
    return Signature(inputs, (TensorSpec("out", "float32", ("batch",)),))


def pixels_and_mask() -> Signature:
    """Two inputs of different dtypes, as a realistic multi-input model has."""
    return Signature(
        (
            TensorSpec("pixels", "float32", ("batch", 1, 8, 8)),
            TensorSpec("mask", "bool", ("batch", 8)),
        ),
        (TensorSpec("logits", "float32", ("batch", 10)),),
    )


# --- TensorSpec: shapes ----------------------------------------------------------------------


@given(spec=specs, batch=st.integers(1, 64), fill=st.integers(1, 64))
def test_spec_accepts_every_concrete_shape_it_builds(spec: TensorSpec, batch: int, fill: int):
    # Execute
    shape = spec.concrete_shape(batch, fill)

    # Assert
    assert spec.accepts_shape(shape)
    assert len(shape) == spec.rank
    for i, (dim, size) in enumerate(zip(spec.shape, shape, strict=True)):
        if isinstance(dim, int):
            assert size == dim
        else:
            assert size == (batch if i == 0 else fill)
    assert spec.is_dynamic == any(not isinstance(d, int) for d in spec.shape)


@given(spec=specs, extra=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data())
def test_spec_rejects_shapes_of_another_rank(
    spec: TensorSpec, extra: list[int], data: st.DataObject
):
    # Prepare: one shape longer than the spec, and (when possible) one shorter
    shape = spec.concrete_shape(batch=3)
    longer = shape + tuple(extra)
    cut = data.draw(st.integers(0, len(shape) - 1)) if shape else None

    # Execute / Assert
    assert not spec.accepts_shape(longer)
    if cut is not None:
        assert not spec.accepts_shape(shape[:cut])


@given(spec=specs, data=st.data())
def test_spec_rejects_a_differing_fixed_dim(spec: TensorSpec, data: st.DataObject):
    # Prepare
    fixed = [i for i, d in enumerate(spec.shape) if isinstance(d, int)]
    if not fixed:
        return  # nothing fixed to contradict; covered by the rank test
    index = data.draw(st.sampled_from(fixed))
    wrong = data.draw(st.integers(0, 1000).filter(lambda v: v != spec.shape[index]))
    shape = list(spec.concrete_shape(batch=2, fill=3))
    shape[index] = wrong

    # Execute / Assert
    assert not spec.accepts_shape(tuple(shape))


def test_describe_shape_marks_unnamed_dynamic_dims():
    spec = TensorSpec("x", "float32", ("batch", None, 3))
    assert spec.describe_shape() == "[batch, ?, 3]"


# --- TensorSpec: serialization and validation ------------------------------------------------


@given(spec=specs)
def test_spec_round_trips_through_to_dict_and_json(spec: TensorSpec):
    # Execute
    direct = TensorSpec.from_dict(spec.to_dict())
    via_json = TensorSpec.from_dict(json.loads(json.dumps(spec.to_dict())))

    # Assert
    assert direct == spec
    assert via_json == spec


@given(dtype=st.text(min_size=1, max_size=12).filter(lambda d: d not in DTYPES))
def test_spec_refuses_an_unknown_dtype(dtype: str):
    with pytest.raises(ValueError, match="unknown dtype") as info:
        TensorSpec("x", dtype, (1,))
    assert "'x'" in str(info.value)


@given(dim=st.integers(max_value=-1))
def test_spec_refuses_a_negative_dim(dim: int):
    with pytest.raises(ValueError, match="negative dimension"):
        TensorSpec("x", "float32", ("batch", dim))


@pytest.mark.parametrize("dim", [True, False, 1.0, 2.5, b"batch", [1]])
def test_spec_refuses_dims_that_are_not_int_str_or_none(dim: object):
    with pytest.raises(ValueError, match="bad dimension"):
        TensorSpec("x", "float32", (dim,))  # type: ignore[arg-type]


def test_spec_refuses_an_empty_name():
    with pytest.raises(ValueError, match="non-empty name"):
        TensorSpec("", "float32", (1,))


# --- Signature: sample feeds -----------------------------------------------------------------


@given(signature=signatures(), batch=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_sample_feeds_always_pass_check_feeds(signature: Signature, batch: int, seed: int):
    # Execute
    feeds = signature.sample_feeds(batch=batch, seed=seed)

    # Assert
    signature.check_feeds(feeds)
    assert set(feeds) == set(signature.input_names)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_sample_feeds_fit_every_dtype_a_spec_may_carry(dtype: str):
    # Prepare
    signature = Signature((TensorSpec("x", dtype, ("batch", 3)),), ())

    # Execute
    feeds = signature.sample_feeds(batch=2)

    # Assert
    signature.check_feeds(feeds)
    assert feeds["x"].shape == (2, 3)


def test_sample_feeds_are_reproducible_by_seed():
    signature = pixels_and_mask()
    first, again = signature.sample_feeds(4, seed=7), signature.sample_feeds(4, seed=7)
    other = signature.sample_feeds(4, seed=8)
    for name in signature.input_names:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["pixels"], other["pixels"])


# --- Signature: check_feeds names what does not fit ------------------------------------------


@given(signature=signatures(), data=st.data())
def test_check_feeds_names_a_missing_input(signature: Signature, data: st.DataObject):
    # Prepare
    feeds = signature.sample_feeds()
    dropped = data.draw(st.sampled_from(signature.input_names))
    del feeds[dropped]

    # Execute / Assert
    with pytest.raises(SignatureMismatch, match="missing input") as info:
        signature.check_feeds(feeds)
    assert dropped in str(info.value)


@given(signature=signatures(), extra=names)
def test_check_feeds_names_an_unknown_input(signature: Signature, extra: str):
    # Prepare
    feeds = signature.sample_feeds()
    if extra in feeds:
        return
    feeds[extra] = np.zeros(1, dtype=np.float32)

    # Execute / Assert
    with pytest.raises(SignatureMismatch, match="unknown input") as info:
        signature.check_feeds(feeds)
    assert extra in str(info.value)


@pytest.mark.parametrize("wrong", ["float64", "float16", "int32", "int64", "uint8", "bool"])
def test_check_feeds_names_an_input_of_the_wrong_dtype(wrong: str):
    # Prepare
    signature = pixels_and_mask()
    feeds = signature.sample_feeds(batch=2)
    feeds["pixels"] = feeds["pixels"].astype(wrong)

    # Execute / Assert
    with pytest.raises(SignatureMismatch) as info:
        signature.check_feeds(feeds, where="request 7")
    message = str(info.value)
    assert message.startswith("request 7:")
    assert "'pixels'" in message
    assert wrong in message
    assert "float32" in message


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((2, 8, 8), "[2, 8, 8]"),
        ((2, 3, 8, 8), "[2, 3, 8, 8]"),
        ((2, 1, 8, 8, 1), "[2, 1, 8, 8, 1]"),
    ],
)
def test_check_feeds_names_an_input_of_the_wrong_shape(shape: tuple[int, ...], expected: str):
    # Prepare
    signature = pixels_and_mask()
    feeds = signature.sample_feeds(batch=2)
    feeds["pixels"] = np.zeros(shape, dtype=np.float32)

    # Execute
    with pytest.raises(SignatureMismatch) as info:
        signature.check_feeds(feeds)

    # Assert
    message = str(info.value)
    assert "'pixels'" in message
    assert expected in message
    assert "[batch, 1, 8, 8]" in message


def test_check_feeds_accepts_any_batch_size():
    signature = pixels_and_mask()
    for batch in (1, 5, 64):
        signature.check_feeds(signature.sample_feeds(batch=batch))


def test_signature_to_dict_is_plain_data():
    signature = Signature(
        pixels_and_mask().inputs, pixels_and_mask().outputs, {"ai.onnx": 20}, "pytorch 2"
    )
    data = json.loads(json.dumps(signature.to_dict()))
    assert [TensorSpec.from_dict(t) for t in data["inputs"]] == list(signature.inputs)
    assert [TensorSpec.from_dict(t) for t in data["outputs"]] == list(signature.outputs)
    assert data["opset"] == {"ai.onnx": 20}
    assert data["producer"] == "pytorch 2"
