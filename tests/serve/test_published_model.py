"""A real published model from a registry package: Silero VAD (float32 audio, state, int64 scalar).

It has three inputs, one of them a 0-d int64 and one whose batch is not the
first dimension, so it is served without batching, with its signature taken
from the model itself (no config.pbtxt): shapes and dtypes beyond float32 images.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpc_client
import tritonclient.http as http_client

from fogline.serve._server import Server


def silero_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # locates the package without importing torch
    assert spec is not None and spec.origin is not None, "silero-vad is a dev dependency"
    return Path(spec.origin).parent / "data" / "silero_vad.onnx"


@pytest.fixture(scope="module")
def vad_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("vad") / "models"
    (root / "vad" / "1").mkdir(parents=True)
    shutil.copy(silero_path(), root / "vad" / "1" / "model.onnx")
    with Server(root, http_port=0, grpc_port=0) as server:
        yield server


def feeds(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input": (rng.standard_normal((1, 512)) * 0.1).astype(np.float32),
        "state": np.zeros((2, 1, 128), np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }


def expected(given: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(silero_path()), providers=["CPUExecutionProvider"])
    return session.run(["output", "stateN"], given)


def test_its_metadata_comes_from_the_model(vad_server: Server) -> None:
    client = http_client.InferenceServerClient(f"127.0.0.1:{vad_server.ports.http}")
    meta = client.get_model_metadata("vad")
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {
        "input": ("FP32", [-1, -1]),
        "state": ("FP32", [2, -1, 128]),
        "sr": ("INT64", []),
    }


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_with_an_int64_scalar(vad_server: Server, binary: bool) -> None:
    client = http_client.InferenceServerClient(f"127.0.0.1:{vad_server.ports.http}")
    given = feeds(1)
    inputs = []
    for name, array in given.items():
        tensor = http_client.InferInput(
            name, list(array.shape), "INT64" if name == "sr" else "FP32"
        )
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    result = client.infer("vad", inputs)
    probability, state = expected(given)
    np.testing.assert_allclose(result.as_numpy("output"), probability, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("stateN"), state, atol=1e-5)


def test_grpc_infer_with_an_int64_scalar(vad_server: Server) -> None:
    client = grpc_client.InferenceServerClient(f"127.0.0.1:{vad_server.ports.grpc}")
    given = feeds(2)
    inputs = []
    for name, array in given.items():
        tensor = grpc_client.InferInput(
            name, list(array.shape), "INT64" if name == "sr" else "FP32"
        )
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("vad", inputs)
    probability, state = expected(given)
    np.testing.assert_allclose(result.as_numpy("output"), probability, atol=1e-5)
    np.testing.assert_allclose(result.as_numpy("stateN"), state, atol=1e-5)


def test_a_wrong_scalar_dtype_is_a_clear_400(vad_server: Server) -> None:
    import httpx

    body = {
        "inputs": [
            {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [0.0] * 4},
            {"name": "state", "shape": [2, 1, 128], "datatype": "FP32", "data": [0.0] * 256},
            {"name": "sr", "shape": [], "datatype": "FP32", "data": [16000.0]},
        ]
    }
    answer = httpx.post(
        f"http://127.0.0.1:{vad_server.ports.http}/v2/models/vad/infer", json=body, timeout=10
    )
    assert answer.status_code == 400
    assert "input 'sr' has datatype FP32, model 'vad' expects INT64" in answer.json()["error"]
