"""The committed shapes detector, run through fogline's Engine on the held-out scenes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fogline.examples.shapes_torch as shapes_torch
from fogline.examples import Detections, shapes_map50, shapes_model_path, shapes_split
from fogline.model import Manifest, load_engine


def test_the_bundled_detector_finds_the_held_out_shapes_as_its_manifest_says() -> None:
    engine = load_engine(shapes_model_path())
    assert engine.signature.input_names == ("images",)
    images, labels = shapes_split("eval")
    score = shapes_torch.engine_map50(engine, images, list(labels), 64)
    # A detector guessing boxes: every cell's box with a random score and class.
    rng = np.random.default_rng(0)
    guesses = []
    for _ in labels:
        xy = rng.uniform(0, 64, (64, 2))
        size = rng.uniform(8, 28, (64, 2))
        guesses.append(
            Detections(np.concatenate([xy, xy + size], 1), rng.random(64), rng.integers(0, 3, 64))
        )
    chance = shapes_map50(guesses, list(labels))
    assert score > 0.8 > 10 * chance
    manifest = Manifest.read(shapes_model_path().parent)
    assert score == pytest.approx(manifest.metrics["mAP@0.5"], abs=1e-3)
    assert shapes_model_path().stat().st_size < 1_000_000


def test_the_committed_weights_are_the_committed_model() -> None:
    engine = load_engine(shapes_model_path())
    images, _ = shapes_split("eval")
    with torch.no_grad():
        expected = shapes_torch.detector()(torch.from_numpy(np.array(images[:8]))).numpy()
    np.testing.assert_allclose(
        engine.run({"images": images[:8]})["detections"], expected, atol=1e-4
    )
