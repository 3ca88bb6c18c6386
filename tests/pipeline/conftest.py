"""Fixtures for the pipeline tests: a real Mosquitto broker on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/ is not a package (pytest runs with --import-mode=importlib): make tests/broker.py importable.
if str(Path(__file__).parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parents[1]))

from broker import Mosquitto, mosquitto_binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker of its own for each test, in ``tmp_path / "mosquitto"``."""
    if mosquitto_binary() is None:
        pytest.skip("the mosquitto broker is not installed (make test installs it)")
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker
