"""Fixtures shared by every test folder."""

from __future__ import annotations

import os

# Under pytest-xdist each worker is one of ``-n`` processes sharing the cores. PyTorch's,
# OpenMP's and OpenBLAS's pools default to one thread per core and spin while they wait, so
# two workers' pools fight over two cores: the pruning test took 42 s with two threads and
# 22 s with one on a busy 2-core machine. One thread each, set before numpy or torch is
# imported; the CLI subprocesses the tests start inherit it. A value already set is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from fogline.examples import digits_model_path
from fogline.model import load_engine
from fogline.optimize import Dataset, load_dataset
from support.broker import Mosquitto, mosquitto_binary

# Shared 2-core machines stall now and then: a per-example time limit would
# turn a slow moment into a failure. In CI the examples are derandomized so a
# red run can be replayed exactly.
settings.register_profile("fogline", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("fogline")


def gpu_missing() -> str | None:
    """Why ``@pytest.mark.gpu`` tests cannot run here (None: they can)."""
    import onnxruntime

    from fogline.model import nvidia_gpu_visible

    available = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return (
            f"needs an NVIDIA GPU: this onnxruntime build has no CUDAExecutionProvider "
            f"(it has {', '.join(available)}; onnxruntime-gpu has it, see docs/gpu.md)"
        )
    if not nvidia_gpu_visible():
        return "needs an NVIDIA GPU: none is visible (no /dev/nvidia0, or CUDA_VISIBLE_DEVICES hides it)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the GPU tests, with the reason, where there is no GPU to run them on."""
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    reason = gpu_missing() if marked else None
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=reason))


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


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A running broker of its own for each test, in ``tmp_path / "mosquitto"``.

    Without Mosquitto the MQTT tests fail rather than skip: they are the proof
    that the MQTT transport, sources, sinks and outbox work (``make test``
    installs it).
    """
    if mosquitto_binary() is None:
        pytest.fail("the mosquitto broker is not installed: run scripts/ensure-mosquitto")
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker
