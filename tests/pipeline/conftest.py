"""Fixtures for the pipeline tests: a real Mosquitto broker on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from broker import Mosquitto, mosquitto_binary


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker of its own for each test, in ``tmp_path / "mosquitto"``.

    Without Mosquitto the MQTT tests fail rather than skip: they are the proof
    that the MQTT sources, sinks and outbox work (``make test`` installs it).
    """
    if mosquitto_binary() is None:
        pytest.fail("the mosquitto broker is not installed: run scripts/ensure-mosquitto")
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker
