"""Bearer tokens, TLS and CORS on the HTTP endpoint, and `fogline serve` as a process."""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from fogline.serve._server import Server
from support.certificates import self_signed


def test_a_token_is_required_when_configured(repository: Path) -> None:
    with Server(repository, http_port=0, grpc_port=None, token="s3cret") as srv:
        base = f"http://127.0.0.1:{srv.ports.http}"
        refused = httpx.get(f"{base}/v2/models/digits", timeout=10)
        wrong = httpx.get(f"{base}/v2", headers={"Authorization": "Bearer nope"}, timeout=10)
        client = http.InferenceServerClient(f"127.0.0.1:{srv.ports.http}")
        with pytest.raises(InferenceServerException):
            client.get_model_metadata("digits")
        meta = client.get_model_metadata("digits", headers={"Authorization": "Bearer s3cret"})

    assert refused.status_code == wrong.status_code == 401
    assert "bearer token" in refused.json()["error"]
    assert refused.headers["www-authenticate"] == "Bearer"
    assert meta["name"] == "digits"


def test_cors_is_off_unless_origins_are_configured(repository: Path) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    with Server(repository, http_port=0, grpc_port=None) as closed:
        base = f"http://127.0.0.1:{closed.ports.http}"
        plain = httpx.options(f"{base}/v2/models/digits/infer", headers=preflight, timeout=10)
    with Server(
        repository, http_port=0, grpc_port=None, cors_origins=("https://app.example",)
    ) as srv:
        base = f"http://127.0.0.1:{srv.ports.http}"
        allowed = httpx.options(f"{base}/v2/models/digits/infer", headers=preflight, timeout=10)

    assert "access-control-allow-origin" not in plain.headers
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"


def test_https_with_a_certificate(repository: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    with Server(repository, http_port=0, grpc_port=None, tls_cert=cert, tls_key=key) as srv:
        trusted = ssl.create_default_context(cafile=str(cert))
        answer = httpx.get(f"https://127.0.0.1:{srv.ports.http}/v2", verify=trusted, timeout=10)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{srv.ports.http}/v2", timeout=5)
    assert answer.status_code == 200 and answer.json()["name"] == "fogline"


def test_fogline_serve_runs_answers_and_stops_on_sigterm(repository: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fogline",
            "serve",
            "--repository",
            str(repository),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert process.stderr is not None
        lines = [process.stderr.readline() for _ in range(4)]
        text = "".join(lines)
        port = int(re.search(r"HTTP  http://127\.0\.0\.1:(\d+)/v2", text).group(1))  # type: ignore[union-attr]
        assert re.search(r"gRPC  127\.0\.0\.1:\d+", text)
        assert "model digits v1: READY" in text
        client = http.InferenceServerClient(f"127.0.0.1:{port}")
        given = http.InferInput("pixels", [1, 1, 8, 8], "FP32")
        given.set_data_from_numpy(np.zeros((1, 1, 8, 8), np.float32))
        assert client.infer("digits", [given]).as_numpy("logits").shape == (1, 10)
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0


def test_fogline_serve_refuses_a_missing_repository(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fogline", "serve", "--repository", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "no such folder" in done.stderr and "Traceback" not in done.stderr
