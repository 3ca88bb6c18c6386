"""Image steps: geometry that maps back to source pixels, and what the specs refuse."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fogline.errors import ConfigError, ItemError
from fogline.pipeline._base import ArraySpec
from fogline.pipeline._item import Item
from fogline.pipeline.stages import (
    ColourSpec,
    CropSpec,
    LayoutSpec,
    LetterboxSpec,
    NormalizeSpec,
    ResizeSpec,
)
from fogline.pipeline.stages._common import to_source

sizes = st.integers(4, 120)


def _to_model(box: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    sx, sy, tx, ty = meta["geometry"]
    return box * np.array([sx, sy, sx, sy]) + np.array([tx, ty, tx, ty])


@st.composite
def chains(draw: st.DrawFn) -> tuple[list[Any], int, int]:
    h, w = draw(sizes), draw(sizes)
    steps: list[Any] = []
    if draw(st.booleans()):
        ch, cw = draw(st.integers(2, h)), draw(st.integers(2, w))
        steps.append(CropSpec(type="crop", center=[ch, cw]))
    kind = draw(st.sampled_from(["resize", "letterbox"]))
    size = [draw(sizes), draw(sizes)]
    steps.append(
        ResizeSpec(type="resize", size=size)
        if kind == "resize"
        else LetterboxSpec(type="letterbox", size=size)
    )
    if draw(st.booleans()):
        steps.append(LetterboxSpec(type="letterbox", size=[draw(sizes), draw(sizes)]))
    return steps, h, w


fractions = st.floats(0, 1)


@given(chains(), fractions, fractions, fractions, fractions)
def test_a_box_maps_to_the_model_and_back(
    chain: tuple[list[Any], int, int], fx1: float, fx2: float, fy1: float, fy2: float
) -> None:
    # Prepare
    steps, h, w = chain
    item = Item("cam", 0, 0.0, np.zeros((h, w, 3), np.uint8))
    x1, x2 = sorted((fx1 * w, fx2 * w))
    y1, y2 = sorted((fy1 * h, fy2 * h))
    box = np.array([[x1, y1, x2, y2]])
    # Execute
    for step in steps:
        item = step.build()(item)
    back = to_source(_to_model(box, item.meta), item.meta)
    # Assert
    assert item.meta["source_size"] == (w, h)
    assert item.meta["model_size"] == (item.data.shape[1], item.data.shape[0])
    np.testing.assert_allclose(back, box, atol=1e-6)


@pytest.mark.parametrize(
    "steps",
    [
        [ResizeSpec(type="resize", size=[60, 90], interpolation="nearest")],
        [LetterboxSpec(type="letterbox", size=[64, 64], interpolation="nearest")],
        [
            CropSpec(type="crop", box=[10, 20, 100, 50]),
            LetterboxSpec(type="letterbox", size=[80, 40], interpolation="nearest"),
        ],
    ],
)
def test_geometry_says_where_a_painted_box_lands(steps: list[Any]) -> None:
    # Prepare: a white box on black; where the white ends up is the truth
    image = np.zeros((120, 160, 3), np.uint8)
    image[40:60, 30:70] = 255
    item = Item("cam", 0, 0.0, image)
    # Execute
    for step in steps:
        item = step.build()(item)
    predicted = _to_model(np.array([30.0, 40.0, 70.0, 60.0]), item.meta)
    # Assert
    ys, xs = np.nonzero(item.data[..., 0] == 255)
    found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    np.testing.assert_allclose(found, predicted, atol=1.0)


def test_letterbox_pads_centred_with_fill() -> None:
    item = LetterboxSpec(type="letterbox", size=[10, 10], fill=7).build()(
        Item("cam", 0, 0.0, np.full((4, 8, 3), 200, np.uint8))
    )
    assert item.data.shape == (10, 10, 3)
    assert (item.data[:2] == 7).all() and (item.data[7:] == 7).all()
    assert (item.data[2:7] == 200).all()
    assert item.meta["geometry"] == (1.25, 1.25, 0.0, 2.0)


def test_geometry_composes_with_an_earlier_one() -> None:
    item = Item(
        "cam",
        0,
        0.0,
        np.zeros((10, 20, 3), np.uint8),
        {"geometry": (2.0, 2.0, 1.0, 1.0), "source_size": (5, 5)},
    )
    item = ResizeSpec(type="resize", size=[5, 10]).build()(item)
    assert item.meta["geometry"] == (1.0, 1.0, 0.5, 0.5)
    assert item.meta["source_size"] == (5, 5)


def test_single_channel_images_keep_their_channel_axis() -> None:
    data = np.zeros((20, 30, 1), np.uint8)
    for step in (
        ResizeSpec(type="resize", size=[5, 6]),
        LetterboxSpec(type="letterbox", size=[8, 8]),
    ):
        assert step.build()(Item("cam", 0, 0.0, data)).data.shape[2] == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("224", 'expected two integers [height, width], got "224"'),
        (224, "expected two integers [height, width], got 224"),
        ([224], "expected two integers"),
        (["224", "224"], "positive integers"),
        ([224, 0], "positive integers"),
        ([224.0, 224], "positive integers"),
        ([True, 224], "positive integers"),
    ],
)
def test_size_must_be_two_positive_integers(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ResizeSpec.model_validate({"type": "resize", "size": value})


def test_specs_refuse_unknown_keys_and_crop_needs_one_way() -> None:
    with pytest.raises(ValidationError, match="sise"):
        ResizeSpec.model_validate({"type": "resize", "size": [2, 2], "sise": 3})
    with pytest.raises(ValidationError, match="either"):
        CropSpec(type="crop")
    with pytest.raises(ValidationError, match="either"):
        CropSpec(type="crop", box=[0, 0, 2, 2], center=[2, 2])
    with pytest.raises(ValidationError, match="x, y >= 0"):
        CropSpec(type="crop", box=[-1, 0, 2, 2])


def test_image_steps_check_rank_layout_and_dtype() -> None:
    with pytest.raises(ConfigError, match="rank-3"):
        ResizeSpec(type="resize", size=[2, 2]).output(ArraySpec((5,), "float32"))
    with pytest.raises(ConfigError, match="HWC"):
        ResizeSpec(type="resize", size=[2, 2]).output(ArraySpec((3, 5, 5), "uint8", "CHW"))
    with pytest.raises(ConfigError, match="cast"):
        ResizeSpec(type="resize", size=[2, 2]).output(ArraySpec((5, 5, 3), "int64", "HWC"))
    with pytest.raises(ConfigError, match="fill 300"):
        LetterboxSpec(type="letterbox", size=[2, 2], fill=300).output(
            HWC := ArraySpec((5, 5, 3), "uint8", "HWC")
        )
    with pytest.raises(ItemError, match="int64"):
        ResizeSpec(type="resize", size=[2, 2]).build()(
            Item("cam", 0, 0.0, np.zeros((5, 5, 3), np.int64))
        )
    with pytest.raises(ItemError, match="does not fit"):
        CropSpec(type="crop", box=[0, 0, 9, 9]).build()(Item("cam", 0, 0.0, np.zeros((5, 5, 3))))
    assert HWC.layout == "HWC"


def test_colour_conversions() -> None:
    rgb = np.array([[[255, 0, 0]]], np.uint8)
    bgr = ColourSpec(type="colour", to="bgr").build()(Item("c", 0, 0.0, rgb)).data
    gray = ColourSpec(type="colour", to="gray").build()(Item("c", 0, 0.0, rgb)).data
    back = ColourSpec(type="colour", to="rgb").build()(Item("c", 0, 0.0, gray)).data
    assert bgr.tolist() == [[[0, 0, 255]]]
    assert gray.shape == (1, 1, 1) and gray[0, 0, 0] == 76  # 0.299 * 255
    assert back.shape == (1, 1, 3)
    as_float = (
        ColourSpec(type="colour", to="gray").build()(Item("c", 0, 0.0, rgb.astype(np.float64))).data
    )
    assert as_float.dtype == np.float64 and abs(as_float[0, 0, 0] - 76.245) < 1e-6


def test_normalize_then_layout() -> None:
    spec_n = NormalizeSpec(type="normalize", mean=[1, 2, 3], std=[2, 2, 2])
    spec_l = LayoutSpec(type="layout", to="chw")
    data = np.stack([np.full((2, 2), v) for v in (3, 4, 5)], axis=-1).astype(np.uint8)
    item = spec_l.build()(spec_n.build()(Item("c", 0, 0.0, data)))
    assert item.data.shape == (3, 2, 2) and item.data.dtype == np.float32
    assert np.allclose(item.data, 1.0)
    with pytest.raises(ConfigError, match="before"):
        spec_n.output(ArraySpec((3, 2, 2), "float32", "CHW"))
    with pytest.raises(ConfigError, match="already"):
        spec_l.output(ArraySpec((3, 2, 2), "float32", "CHW"))
    with pytest.raises(ValidationError, match="zeros"):
        NormalizeSpec(type="normalize", std=[1, 0, 1])
