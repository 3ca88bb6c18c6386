"""The two ways an infer request is answered: the lean route, and Starlette's when CORS is on.

Without CORS, ``POST .../infer`` is answered by :class:`InferRoute` in front
of the Starlette app; with CORS every request goes through Starlette (its
middleware adds the headers browsers need). Both must give the same answers,
byte for byte, to good and bad requests alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from fogline.serve._server import Server

ORIGIN = "https://app.example"


def binary_request(images: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An infer body with the binary tensor extension, asking for binary logits back."""
    header = json.dumps(
        {
            "id": "req-1",
            "inputs": [
                {
                    "name": "pixels",
                    "shape": list(images.shape),
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": images.nbytes},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + images.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def json_request(images: np.ndarray) -> bytes:
    spec = {"name": "pixels", "shape": list(images.shape), "datatype": "FP32"}
    return json.dumps({"inputs": [{**spec, "data": images.ravel().tolist()}]}).encode()


REQUESTS: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "binary": ("/v2/models/digits/infer", *binary_request(np.full((2, 1, 8, 8), 0.5, np.float32))),
    "json, a version": (
        "/v2/models/digits/versions/1/infer",
        json_request(np.zeros((1, 1, 8, 8), np.float32)),
        {},
    ),
    "malformed JSON": ("/v2/models/digits/infer", b'{"inputs": [', {}),
    "wrong shape": (
        "/v2/models/digits/infer",
        json_request(np.zeros((1, 1, 4, 4), np.float32)),
        {},
    ),
    "unknown model": ("/v2/models/cats/infer", json_request(np.zeros((1, 1, 8, 8))), {}),
    "unknown version": (
        "/v2/models/digits/versions/7/infer",
        json_request(np.zeros((1, 1, 8, 8), np.float32)),
        {},
    ),
    "header length not a number": (
        "/v2/models/digits/infer",
        b"{}",
        {"Inference-Header-Content-Length": "many"},
    ),
}


def answers(srv: Server, origin: dict[str, str]) -> dict[str, tuple[int, str, str, bytes]]:
    base = f"http://127.0.0.1:{srv.ports.http}"
    got = {}
    with httpx.Client(timeout=30) as client:
        for name, (path, body, headers) in REQUESTS.items():
            answer = client.post(base + path, content=body, headers={**headers, **origin})
            length = answer.headers.get("inference-header-content-length", "")
            got[name] = (answer.status_code, answer.headers["content-type"], length, answer.content)
    return got


def test_the_lean_infer_route_and_starlettes_give_the_same_answers(repository: Path) -> None:
    with Server(repository, http_port=0, grpc_port=None) as lean:
        fast = answers(lean, {})
    with Server(repository, http_port=0, grpc_port=None, cors_origins=(ORIGIN,)) as cors:
        slow = answers(cors, {"Origin": ORIGIN})

    assert fast == slow
    statuses = {name: answer[0] for name, answer in fast.items()}
    assert statuses == {
        "binary": 200,
        "json, a version": 200,
        "malformed JSON": 400,
        "wrong shape": 400,
        "unknown model": 404,
        "unknown version": 404,
        "header length not a number": 400,
    }
    _, media, length, body = fast["binary"]
    header = json.loads(body[: int(length)])
    assert media == "application/octet-stream"
    assert header["id"] == "req-1" and header["outputs"][0]["shape"] == [2, 10]
    assert len(body) - int(length) == 2 * 10 * 4  # the logits, raw, after the JSON
    assert "not valid JSON" in json.loads(fast["malformed JSON"][3])["error"]


@pytest.mark.parametrize("cors", [False, True], ids=["lean route", "through Starlette"])
def test_infer_needs_the_token_on_both_paths(repository: Path, cors: bool) -> None:
    path, body, headers = REQUESTS["binary"]
    origins = (ORIGIN,) if cors else ()
    with Server(
        repository, http_port=0, grpc_port=None, token="s3cret", cors_origins=origins
    ) as srv:
        url = f"http://127.0.0.1:{srv.ports.http}{path}"
        refused = httpx.post(url, content=body, headers=headers, timeout=30)
        allowed = httpx.post(
            url, content=body, headers={**headers, "Authorization": "Bearer s3cret"}, timeout=30
        )
        preflight = httpx.options(
            url,
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
            timeout=30,
        )

    assert refused.status_code == 401 and "bearer token" in refused.json()["error"]
    assert allowed.status_code == 200
    # With CORS on, a browser's preflight (which carries no token) is answered by CORS.
    assert preflight.status_code == (200 if cors else 401)
