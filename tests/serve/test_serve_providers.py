"""``fogline serve --provider``: every model of the repository runs on the providers asked for."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import onnxruntime as ort
import pytest

from fogline.errors import FoglineError
from fogline.serve._manager import ModelManager
from fogline.serve._repository import Repository
from support.serve_repository import make_repository

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


async def _started(root: Path, providers: tuple[str, ...]) -> ModelManager:
    manager = ModelManager(
        Repository(root), control="explicit", startup=["digits"], providers=providers
    )
    # a model that cannot load is UNAVAILABLE in the index, with its reason
    with contextlib.suppress(FoglineError):
        await manager.start()
    return manager


def test_the_models_run_on_the_provider_asked_for(tmp_path: Path):
    async def scenario() -> str:
        manager = await _started(make_repository(tmp_path), ("cpu",))
        try:
            return manager.get("digits").engine.device
        finally:
            await manager.close()

    assert asyncio.run(scenario()) == "CPUExecutionProvider"


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has the CUDA provider")
def test_a_provider_the_build_lacks_leaves_the_model_unavailable_saying_why(tmp_path: Path):
    async def scenario() -> list[tuple[str, str]]:
        manager = await _started(make_repository(tmp_path), ("cuda",))
        try:
            return [(row.state, row.reason) for row in manager.index()]
        finally:
            await manager.close()

    rows = asyncio.run(scenario())
    assert rows and all(state == "UNAVAILABLE" for state, _ in rows)
    assert all(
        "CUDAExecutionProvider" in reason and "onnxruntime-gpu" in reason for _, reason in rows
    )
