"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from fogline.examples import digits_model_path
from fogline.model import load_engine
from fogline.optimize import Dataset, load_dataset


@pytest.fixture(scope="session")
def digits_model() -> Path:
    return digits_model_path()


@pytest.fixture(scope="session")
def digits_calibration(digits_model: Path) -> Dataset:
    signature = load_engine(digits_model).signature
    return load_dataset("fogline.examples:digits_calibration", signature)


@pytest.fixture(scope="session")
def digits_eval(digits_model: Path) -> Dataset:
    signature = load_engine(digits_model).signature
    return load_dataset("fogline.examples:digits_eval", signature)
