"""Shared fixtures for the ``fogline.store`` tests: real SQLite files in ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fogline.store import Result, ResultStore

MakeResult = Callable[..., Result]


@pytest.fixture
def make_result() -> MakeResult:
    """Build a result; each call takes the next sequence number unless one is given."""
    counter = iter(range(1_000_000))

    def make(**overrides: Any) -> Result:
        sequence = next(counter)
        fields: dict[str, Any] = {
            "source": "cam0",
            "sequence": sequence,
            "captured_at": 1_700_000_000.0 + sequence,
            "model": "digits",
            "model_version": "3",
            "outputs": {"label": sequence % 10, "score": 0.5},
            "sync": False,
        }
        fields.update(overrides)
        return Result(**fields)

    return make


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "results.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[ResultStore]:
    with ResultStore(db_path) as opened:
        yield opened
