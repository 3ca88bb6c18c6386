"""Random malformed requests against a running server: never a 5xx, never down, memory bounded."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DATATYPES = ["FP32", "FP16", "INT64", "BYTES", "BOOL", "UINT8", "FP64", "float", "", "TYPE_FP32"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
shapes = st.lists(st.integers(-3, 2**41), max_size=40) | json_values


@st.composite
def tensor(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": draw(st.sampled_from(["pixels", "logits", "", "x"]) | json_values),
        "datatype": draw(st.sampled_from(DATATYPES) | json_values),
        "shape": draw(
            st.sampled_from([[1, 1, 8, 8], [2, 1, 8, 8], [1, 8, 8], [0, 1, 8, 8]]) | shapes
        ),
    }
    if draw(st.booleans()):
        spec["data"] = draw(
            st.lists(st.floats(allow_nan=True) | st.integers(), max_size=70) | json_values
        )
    if draw(st.booleans()):
        spec["parameters"] = {"binary_data_size": draw(st.integers(-5, 300) | json_values)}
    return spec


@st.composite
def request(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    header: Any = {"inputs": draw(st.lists(tensor(), max_size=3))}
    if draw(st.booleans()):
        header["outputs"] = draw(
            st.lists(st.fixed_dictionaries({"name": st.text(max_size=6)}), max_size=2) | json_values
        )
    if draw(st.booleans()):
        header = draw(json_values)
    text = json.dumps(header).encode()
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]  # truncated JSON
    binary = draw(st.binary(max_size=300))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        claimed = draw(
            st.integers(-5, len(text) + len(binary) + 10)
            | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=4)
        )
        headers["Inference-Header-Content-Length"] = str(claimed)
    return text + binary, headers


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from fogline.serve._server import Server
    from support.serve_repository import make_repository

    repository = make_repository(tmp_path_factory.mktemp("fuzz") / "models")
    with Server(repository, http_port=0, grpc_port=None, max_body=1 << 20) as server:
        yield server


@pytest.fixture(scope="module")
def fresh_connections():  # type: ignore[no-untyped-def]
    """A client that opens a new connection for every request, as ``httpx.post`` does.

    One client for all the examples: each ``httpx.post`` builds a client and its TLS
    context (0.02 s, 0.2 s on a busy machine), twice per example.
    """
    with httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        yield client


@settings(
    max_examples=200,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=request(),
    model=st.sampled_from(["digits", "digits/versions/1", "digits/versions/9", "nope"]),
)
def test_no_malformed_request_gets_a_5xx_or_takes_the_server_down(
    running, fresh_connections, case, model: str
) -> None:  # type: ignore[no-untyped-def]
    body, headers = case
    base = f"http://127.0.0.1:{running.ports.http}"
    answer = fresh_connections.post(
        f"{base}/v2/models/{model}/infer", content=body, headers=headers
    )
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert answer.json()["error"]
    assert fresh_connections.get(f"{base}/v2/health/live", timeout=10).status_code == 200


def test_memory_stays_bounded_under_malformed_and_valid_traffic(running) -> None:  # type: ignore[no-untyped-def]
    base = f"http://127.0.0.1:{running.ports.http}"
    good = json.dumps(
        {
            "inputs": [
                {"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 64}
            ]
        }
    )
    bad = json.dumps(
        {
            "inputs": [
                {"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.5] * 63}
            ]
        }
    )
    process = psutil.Process()
    with httpx.Client(timeout=30) as client:
        for _ in range(200):  # warm up: allocator pools, caches
            client.post(f"{base}/v2/models/digits/infer", content=good)
        before = process.memory_info().rss
        for index in range(1200):
            client.post(f"{base}/v2/models/digits/infer", content=bad if index % 2 else good)
        after = process.memory_info().rss
    assert after - before < 30 * 1024 * 1024, f"RSS grew by {(after - before) / 2**20:.1f} MiB"
