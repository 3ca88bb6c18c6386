"""The HTTP/REST side of the Open Inference Protocol, driven by the official tritonclient."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as http
import tritonclient.http.aio as http_aio
from tritonclient.utils import InferenceServerException

from fogline.examples import digits_model_path


def url(server) -> str:  # type: ignore[no-untyped-def]
    return f"127.0.0.1:{server.ports.http}"


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


def reference(batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(digits_model_path()), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": batch})[0]


def test_health_metadata_and_readiness(server) -> None:  # type: ignore[no-untyped-def]
    client = http.InferenceServerClient(url(server))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
    meta = client.get_server_metadata()
    assert meta["name"] == "fogline" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("digits")
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert client.get_model_config("digits")["max_batch_size"] == 8


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_matches_onnxruntime(server, binary: bool) -> None:  # type: ignore[no-untyped-def]
    client = http.InferenceServerClient(url(server))
    batch = pixels(3)
    given = http.InferInput("pixels", list(batch.shape), "FP32")
    given.set_data_from_numpy(batch, binary_data=binary)
    wanted = http.InferRequestedOutput("logits", binary_data=binary)

    result = client.infer("digits", [given], outputs=[wanted], request_id="req-7")

    np.testing.assert_allclose(result.as_numpy("logits"), reference(batch), atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == "digits" and response["model_version"] == "1"
    assert response["id"] == "req-7"


def test_async_clients_are_batched_together(server) -> None:  # type: ignore[no-untyped-def]
    async def burst() -> list[np.ndarray]:
        client = http_aio.InferenceServerClient(url(server))
        try:

            async def one(seed: int) -> np.ndarray:
                batch = pixels(1, seed)
                given = http_aio.InferInput("pixels", [1, 1, 8, 8], "FP32")
                given.set_data_from_numpy(batch)
                result = await client.infer("digits", [given])
                return result.as_numpy("logits")

            return await asyncio.gather(*(one(seed) for seed in range(32)))
        finally:
            await client.close()

    outputs = asyncio.run(burst())

    expected = reference(np.concatenate([pixels(1, seed) for seed in range(32)]))
    np.testing.assert_allclose(np.concatenate(outputs), expected, atol=1e-5)
    stats = server.manager.get("digits").batcher.stats
    assert stats.completed >= 32
    assert max(stats.batch_sizes) > 1, "concurrent requests should share batches"


BAD = {
    "malformed JSON": (b"{not json", {}, 400, "not valid JSON"),
    "no inputs": (b'{"outputs": []}', {}, 400, "needs a non-empty `inputs` list"),
    "wrong datatype": (
        json.dumps(
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "INT64", "data": [0] * 64}
                ]
            }
        ).encode(),
        {},
        400,
        "input 'pixels' has datatype INT64, model 'digits' expects FP32",
    ),
    "wrong dims": (
        json.dumps(
            {
                "inputs": [
                    {"name": "pixels", "shape": [1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}
                ]
            }
        ).encode(),
        {},
        400,
        "input 'pixels' has shape [1, 8, 8], model 'digits' expects [-1, 1, 8, 8]",
    ),
    "count vs shape": (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 1, 8, 8],
                        "datatype": "FP32",
                        "data": [0.0] * 10,
                    }
                ]
            }
        ).encode(),
        {},
        400,
        "10 values for shape [1, 1, 8, 8] (64 elements)",
    ),
    "unknown input": (
        json.dumps(
            {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [0.0]}]}
        ).encode(),
        {},
        400,
        "missing input(s) pixels",
    ),
    "batch too large": (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [9, 1, 8, 8],
                        "datatype": "FP32",
                        "data": [0.0] * 576,
                    }
                ]
            }
        ).encode(),
        {},
        400,
        "batch of 9; model 'digits' takes 1 to 8",
    ),
    "header length lies": (
        b'{"inputs": []}',
        {"Inference-Header-Content-Length": "500"},
        400,
        "says 500 bytes of JSON, but the body has 14",
    ),
    "binary size past the end": (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 1, 8, 8],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 256},
                    }
                ]
            }
        ).encode()
        + b"\0" * 16,
        None,
        400,
        "binary_data_size 256 runs past the end of the body",
    ),
    "binary bytes vs shape": (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 1, 8, 8],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": 16},
                    }
                ]
            }
        ).encode()
        + b"\0" * 16,
        None,
        400,
        "16 bytes of data, but shape [1, 1, 8, 8] of FP32 needs 256",
    ),
    "unknown output": (
        json.dumps(
            {
                "inputs": [
                    {
                        "name": "pixels",
                        "shape": [1, 1, 8, 8],
                        "datatype": "FP32",
                        "data": [0.0] * 64,
                    }
                ],
                "outputs": [{"name": "probs"}],
            }
        ).encode(),
        {},
        400,
        "unknown output(s) probs",
    ),
}


@pytest.mark.parametrize("body, headers, status, message", BAD.values(), ids=list(BAD))
def test_bad_requests_get_a_4xx_that_names_the_problem_and_the_server_goes_on(
    server,
    body: bytes,
    headers,
    status: int,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    if headers is None:  # a binary request: the JSON header's length in the header
        json_end = body.index(b"}]}") + 3
        headers = {"Inference-Header-Content-Length": str(json_end)}
    answer = httpx.post(
        f"http://{url(server)}/v2/models/digits/infer", content=body, headers=headers, timeout=10
    )

    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert http.InferenceServerClient(url(server)).is_server_ready()


def test_unknown_models_and_versions_are_404(server) -> None:  # type: ignore[no-untyped-def]
    client = http.InferenceServerClient(url(server))
    with pytest.raises(InferenceServerException, match="unknown model 'cats'"):
        client.get_model_metadata("cats")
    with pytest.raises(InferenceServerException, match="no ready version 7"):
        client.get_model_metadata("digits", "7")
    answer = httpx.get(f"http://{url(server)}/v2/models/digits/versions/7", timeout=10)
    assert answer.status_code == 404


def test_a_body_over_the_limit_is_413(repository: Path) -> None:
    from fogline.serve._server import Server

    with Server(repository, http_port=0, grpc_port=None, max_body=1000) as small:
        answer = httpx.post(
            f"http://127.0.0.1:{small.ports.http}/v2/models/digits/infer",
            content=b"x" * 5000,
            timeout=10,
        )
    assert answer.status_code == 413
    assert "over the limit of 1000" in answer.json()["error"]


def test_repository_index_load_and_unload(server) -> None:  # type: ignore[no-untyped-def]
    client = http.InferenceServerClient(url(server))
    index = client.get_model_repository_index()
    assert index == [{"name": "digits", "version": "1", "state": "READY"}]

    client.unload_model("digits")
    assert not client.is_model_ready("digits")
    client.load_model("digits")
    assert client.is_model_ready("digits")


def test_a_new_version_is_served_without_a_failed_request(repository: Path) -> None:
    from fogline.serve._server import Server

    with Server(repository, http_port=0, grpc_port=None, control="poll", poll_interval=0.2) as srv:
        client = http.InferenceServerClient(f"127.0.0.1:{srv.ports.http}")
        batch = pixels(1)
        given = http.InferInput("pixels", [1, 1, 8, 8], "FP32")
        given.set_data_from_numpy(batch)
        versions: set[str] = set()
        failures = 0
        dropped_in = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                versions.add(client.infer("digits", [given]).get_response()["model_version"])
            except InferenceServerException:
                failures += 1
            if not dropped_in and len(versions) >= 1:
                target = repository / "digits" / "2"
                target.mkdir()
                shutil.copy(digits_model_path(), target / "model.onnx")
                dropped_in = True
            if "2" in versions:
                break
        for _ in range(20):  # and it keeps serving after the swap
            versions.add(client.infer("digits", [given]).get_response()["model_version"])

    assert failures == 0
    assert versions == {"1", "2"}


def test_prometheus_metrics_per_model_and_version(repository: Path) -> None:
    from fogline.serve._server import Server

    with Server(repository, http_port=0, grpc_port=None, metrics_port=0) as srv:
        client = http.InferenceServerClient(f"127.0.0.1:{srv.ports.http}")
        given = http.InferInput("pixels", [2, 1, 8, 8], "FP32")
        given.set_data_from_numpy(pixels(2))
        for _ in range(3):
            client.infer("digits", [given])
        bad = http.InferInput("pixels", [2, 8, 8], "FP32")
        bad.set_data_from_numpy(np.zeros((2, 8, 8), np.float32))
        with pytest.raises(InferenceServerException):
            client.infer("digits", [bad])
        text = httpx.get(f"http://127.0.0.1:{srv.ports.metrics}/metrics", timeout=10).text

    assert 'fogline_serve_requests_total{model="digits",outcome="success",version="1"} 3.0' in text
    assert 'fogline_serve_requests_total{model="digits",outcome="failure",version="1"} 1.0' in text
    assert 'fogline_serve_request_seconds_count{model="digits",version="1"} 3.0' in text
    assert 'fogline_serve_in_flight{model="digits",version="1"} 0.0' in text
    assert "fogline_serve_batches_total" in text
    queue = re.search(
        r'fogline_serve_queue_seconds_total\{model="digits",version="1"\} (\S+)', text
    )
    compute = re.search(
        r'fogline_serve_compute_seconds_total\{model="digits",version="1"\} (\S+)', text
    )
    assert queue and compute and float(compute.group(1)) > 0 and float(queue.group(1)) >= 0


def test_a_full_queue_is_answered_503_overloaded_and_the_rest_are_served(tmp_path: Path) -> None:
    from fogline.serve._server import Server
    from support.serve_repository import DIGITS_CONFIG, make_repository

    # Every request waits out the delay, even one that finds the model idle: the queue fills.
    config = DIGITS_CONFIG.replace(
        "dynamic_batching { max_queue_delay_microseconds: 2000 }",
        "dynamic_batching { max_queue_delay_microseconds: 300000 "
        "default_queue_policy { max_queue_size: 2 } }\n"
        'parameters { key: "idle_dispatch" value { string_value: "false" } }',
    )
    repository = make_repository(tmp_path / "models", config=config)
    with Server(repository, http_port=0, grpc_port=None) as srv:

        async def burst() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                body = {
                    "inputs": [
                        {
                            "name": "pixels",
                            "shape": [1, 1, 8, 8],
                            "datatype": "FP32",
                            "data": [0.0] * 64,
                        }
                    ]
                }
                url = f"http://127.0.0.1:{srv.ports.http}/v2/models/digits/infer"
                answers = await asyncio.gather(*(client.post(url, json=body) for _ in range(6)))
                for answer in answers:
                    if answer.status_code == 503:
                        assert "full" in answer.json()["error"]
                return [answer.status_code for answer in answers]

        codes = asyncio.run(burst())
        still_serving = httpx.get(f"http://127.0.0.1:{srv.ports.http}/v2/health/ready", timeout=10)

    assert codes.count(200) >= 2 and codes.count(503) >= 1, codes
    assert set(codes) <= {200, 503}
    assert still_serving.status_code == 200


def test_a_broken_new_version_never_takes_traffic_and_the_old_one_keeps_serving(
    repository: Path,
) -> None:
    from fogline.serve._server import Server

    with Server(repository, http_port=0, grpc_port=None, control="poll", poll_interval=0.2) as srv:
        client = http.InferenceServerClient(f"127.0.0.1:{srv.ports.http}")
        given = http.InferInput("pixels", [1, 1, 8, 8], "FP32")
        given.set_data_from_numpy(pixels(1))
        broken = repository / "digits" / "2"
        broken.mkdir()
        (broken / "model.onnx").write_bytes(b"this is not an ONNX model")
        states: dict[str, str] = {}
        served: set[str] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and states.get("2") != "UNAVAILABLE":
            served.add(client.infer("digits", [given]).get_response()["model_version"])
            states = {r.get("version", ""): r["state"] for r in client.get_model_repository_index()}
        for _ in range(10):
            served.add(client.infer("digits", [given]).get_response()["model_version"])
        reasons = [r.get("reason", "") for r in client.get_model_repository_index()]

    assert states["2"] == "UNAVAILABLE" and states["1"] == "READY"
    assert served == {"1"}
    assert any("not" in reason and "model" in reason.lower() for reason in reasons), reasons


def test_a_lone_request_is_not_held_for_the_queue_delay(tmp_path: Path) -> None:
    from fogline.serve._server import Server
    from support.serve_repository import DIGITS_CONFIG, make_repository

    # Prepare: a queue delay of an hour, which only a request held for it would notice
    config = DIGITS_CONFIG.replace(
        "max_queue_delay_microseconds: 2000", "max_queue_delay_microseconds: 3600000000"
    )
    repository = make_repository(tmp_path / "models", config=config)
    with Server(repository, http_port=0, grpc_port=None) as srv:
        client = http.InferenceServerClient(
            f"127.0.0.1:{srv.ports.http}", connection_timeout=60, network_timeout=60
        )
        given = http.InferInput("pixels", [1, 1, 8, 8], "FP32")
        given.set_data_from_numpy(pixels(1))

        # Execute: one request after another, each finding the model idle
        answers = [client.infer("digits", [given]).as_numpy("logits") for _ in range(3)]
        stats = srv.manager.get("digits").batcher.stats

    # Assert
    for answer in answers:
        np.testing.assert_allclose(answer, reference(pixels(1)), atol=1e-5)
    assert stats.batch_sizes == {1: 3}


def test_the_server_runs_on_uvloop(server) -> None:  # type: ignore[no-untyped-def]
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert server.call(loop_module()).startswith("uvloop")
