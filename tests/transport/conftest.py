"""Fixtures for the transport tests: a real Mosquitto on loopback for each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import Mosquitto, mosquitto_binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker of its own for each test; without Mosquitto the test fails, not skips."""
    if mosquitto_binary() is None:
        pytest.fail("the mosquitto broker is not installed: run scripts/ensure-mosquitto")
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker
