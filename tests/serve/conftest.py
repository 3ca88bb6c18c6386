"""A Triton-style repository around the bundled digits model, and a running fogline server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.serve_repository import make_repository


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "models")


@pytest.fixture
def server(repository: Path) -> Iterator[object]:
    from fogline.serve._server import Server

    with Server(repository, http_port=0, grpc_port=None) as running:
        yield running
