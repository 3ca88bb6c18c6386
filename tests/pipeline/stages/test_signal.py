"""Sensor steps: window counts and contents, spectra, band energies, saved scaling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fogline.errors import ConfigError, ItemError
from fogline.pipeline._base import ArraySpec
from fogline.pipeline._item import Item
from fogline.pipeline.stages import BandsSpec, FftSpec, ReshapeSpec, ScaleSpec, WindowSpec


@given(st.integers(0, 60), st.integers(1, 12), st.integers(1, 12))
def test_window_emits_one_window_per_hop_once_full(n: int, size: int, hop: int) -> None:
    # Prepare
    stage = WindowSpec(type="window", size=size, hop=hop).build()
    rows = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    # Execute
    out = [w for i in range(n) if (w := stage(Item("s", 100 + i, float(i), rows[i]))) is not None]
    # Assert
    assert len(out) == (0 if n < size else (n - size) // hop + 1)
    for j, window in enumerate(out):
        start = j * hop
        np.testing.assert_array_equal(window.data, rows[start : start + size])
        assert window.sequence == 100 + start + size - 1  # the newest row's item
        assert window.meta["window_start"] == 100 + start
        assert window.meta["window_start_at"] == float(start)


def test_window_restarts_when_the_channel_count_changes() -> None:
    stage = WindowSpec(type="window", size=2).build()
    stage(Item("s", 0, 0.0, np.zeros(3)))
    with pytest.raises(ItemError, match="starts again"):
        stage(Item("s", 1, 0.0, np.zeros(4)))
    assert stage(Item("s", 2, 0.0, np.zeros(4))) is None
    assert stage(Item("s", 3, 0.0, np.zeros(4))) is not None


def test_fft_finds_a_tone() -> None:
    t = np.arange(64) / 64.0
    block = np.stack([np.sin(2 * np.pi * 8 * t), np.sin(2 * np.pi * 3 * t)], axis=1)
    for taper in ("none", "hann"):
        item = FftSpec(type="fft", taper=taper).build()(Item("s", 0, 0.0, block))
        assert item.data.shape == (33, 2) and item.data.dtype == np.float32
        assert item.data.argmax(axis=0).tolist() == [8, 3]


def test_bands_sum_power_by_count_and_by_edges() -> None:
    spectrum = np.arange(9, dtype=np.float32)  # bins 0..8, 0 to 100 Hz at 200 Hz sampling
    by_count = BandsSpec(type="bands", count=3).build()(Item("s", 0, 0.0, spectrum)).data
    assert by_count.tolist() == [0 + 1 + 4, 9 + 16 + 25, 36 + 49 + 64]
    spec = BandsSpec(type="bands", edges=[0, 25, 50, 100], sample_rate=200)
    by_edges = spec.build()(Item("s", 0, 0.0, np.stack([spectrum, 2 * spectrum], 1))).data
    # bins lie at 12.5 Hz steps: [0, 25) = bins 0-1, [25, 50) = 2-3, [50, 100] = 4-8
    assert by_edges[:, 0].tolist() == [1, 4 + 9, 16 + 25 + 36 + 49 + 64]
    assert by_edges[:, 1].tolist() == (4 * by_edges[:, 0]).tolist()
    assert spec.output(ArraySpec((9, 2), "float32")).shape == (3, 2)


def test_bands_and_fft_refuse_what_they_cannot_take() -> None:
    with pytest.raises(ValidationError, match="sample_rate"):
        BandsSpec(type="bands", edges=[0, 10])
    with pytest.raises(ValidationError, match="increasing"):
        BandsSpec(type="bands", edges=[0, 10, 5], sample_rate=100)
    with pytest.raises(ValidationError, match="sample_rate / 2"):
        BandsSpec(type="bands", edges=[0, 80], sample_rate=100)
    with pytest.raises(ValidationError, match="either"):
        BandsSpec(type="bands")
    with pytest.raises(ConfigError, match="more than"):
        BandsSpec(type="bands", count=20).output(ArraySpec((9,), "float32"))
    with pytest.raises(ConfigError, match="axis 2"):
        FftSpec(type="fft", axis=2).output(ArraySpec((9, 3), "float32"))
    with pytest.raises(ValidationError, match='positive integer, got "8"'):
        WindowSpec.model_validate({"type": "window", "size": "8"})


def test_scale_reads_npz_and_json_and_checks_the_shape(tmp_path: Path) -> None:
    np.savez(tmp_path / "stats.npz", mean=np.array([1.0, 2.0]), std=np.array([2.0, 0.0]))
    (tmp_path / "stats.json").write_text(json.dumps({"mean": [1.0, 2.0], "std": [2.0, 0.0]}))
    for name in ("stats.npz", "stats.json"):
        spec = ScaleSpec.model_validate({"type": "scale", "path": name}, context={"base": tmp_path})
        out = spec.build()(Item("s", 0, 0.0, np.array([[3.0, 5.0], [1.0, 2.0]]))).data
        assert out.tolist() == [[1.0, 3.0], [0.0, 0.0]]  # std 0 divides by 1
        assert spec.output(ArraySpec((None, 2), "float32")) == ArraySpec((None, 2), "float32")
        with pytest.raises(ConfigError, match="do not fit"):
            spec.output(ArraySpec((4, 3), "float32"))
    (tmp_path / "bad.json").write_text(json.dumps({"mean": [1.0]}))
    with pytest.raises(ValidationError, match="std"):
        ScaleSpec.model_validate({"type": "scale", "path": "bad.json"}, context={"base": tmp_path})
    with pytest.raises(ValidationError, match="no such file"):
        ScaleSpec.model_validate({"type": "scale", "path": "nope.npz"}, context={"base": tmp_path})
    with pytest.raises(ValidationError, match="either"):
        ScaleSpec(type="scale", path=tmp_path / "stats.npz", mean=[1.0], std=[1.0])


def test_reshape_infers_and_refuses() -> None:
    spec = ReshapeSpec(type="reshape", shape=[-1, 3])
    assert spec.output(ArraySpec((4, 3), "float32")).shape == (4, 3)
    assert spec.output(ArraySpec((None, 3), "float32")).shape == (None, 3)
    with pytest.raises(ConfigError, match="10 elements"):
        spec.output(ArraySpec((10,), "float32"))
    with pytest.raises(ValidationError, match="at most one -1"):
        ReshapeSpec(type="reshape", shape=[-1, -1])


def test_the_sensor_chain_matches_plain_numpy(tmp_path: Path) -> None:
    # Prepare: what a model trained offline saw (window -> |rfft| -> array_split bands -> scale)
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((600, 3)).astype(np.float32)
    mean, std = rng.uniform(1, 2, (16, 3)), rng.uniform(0.5, 1, (16, 3))
    np.savez(tmp_path / "stats.npz", mean=mean, std=std)
    specs = [
        WindowSpec(type="window", size=256, hop=128),
        FftSpec(type="fft"),
        BandsSpec(type="bands", count=16),
        ScaleSpec(type="scale", path=tmp_path / "stats.npz"),
        ReshapeSpec(type="reshape", shape=[48]),
    ]
    given = ArraySpec((3,), "float32")
    for spec in specs:
        given = spec.output(given)
    assert given == ArraySpec((48,), "float32")
    stages = [spec.build() for spec in specs]
    # Execute
    out = []
    for i, row in enumerate(rows):
        item: Item | None = Item("pump", i, float(i), row)
        for stage in stages:
            item = stage(item) if item is not None else None
        if item is not None:
            out.append(item.data)
    # Assert
    starts = range(0, 600 - 256 + 1, 128)
    assert len(out) == len(starts) == 3
    for got, start in zip(out, starts, strict=True):
        spectrum = np.abs(np.fft.rfft(rows[start : start + 256], axis=0))
        energies = np.stack([g.sum(axis=0) for g in np.array_split(spectrum**2, 16, axis=0)])
        np.testing.assert_allclose(got, ((energies - mean) / std).reshape(48), rtol=1e-4)
