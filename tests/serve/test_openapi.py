"""The inference server's HTTP endpoints against their OpenAPI description, with schemathesis.

A real ``Server`` (uvicorn on loopback, the digits model loaded from a
Triton-style repository) answers what schemathesis generates from its
``/openapi.json``: boundary values, wrong types, missing and extra keys,
then drawn requests, for every endpoint, with the bearer token the server
was started with. What must hold for each: no 5xx, and a status, content
type and body the description allows. The examples are bounded. ``unload``
is left out (see the test); tests/serve/test_http.py covers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from support.openapi_check import run_schemathesis
from support.serve_repository import make_repository

DESCRIPTION = Path(__file__).resolve().parents[2] / "src/fogline/serve/openapi.yaml"
TOKEN = "openapi-test-token"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from fogline.serve import Server

    repository = make_repository(tmp_path_factory.mktemp("openapi-serve") / "models")
    with Server(repository, http_port=0, grpc_port=None, token=TOKEN) as running:
        yield f"http://127.0.0.1:{running.ports.http}"


def test_every_endpoint_answers_as_described(base_url: str) -> None:
    # Not `unload`: once schemathesis unloads the only model (it learns its name from the
    # index), every model endpoint rightly answers 503 ("not loaded"), which is a 5xx.
    run = run_schemathesis(
        base_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        max_examples=5,
        exclude_operation_ids=("unload",),
    )
    assert run.returncode == 0, run.output[-8000:]
    generated, passed = run.cases
    assert generated > 200 and passed == generated, run.output[-3000:]
    models = httpx.post(
        base_url + "/v2/repository/index", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()
    assert [m["state"] for m in models if m["name"] == "digits"] == ["READY"]  # still serving


def test_the_served_description_is_the_packaged_file(base_url: str) -> None:
    served = httpx.get(base_url + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served.json() == yaml.safe_load(DESCRIPTION.read_text())
