"""The controller API's OpenAPI description, served at ``/openapi.json``.

The description is ``openapi.yaml`` beside this module, written by hand for
the routes in :mod:`._api` (the JSON API; not the dashboard's pages nor the
TUF repository's files). ``tests/fleet/controller/test_openapi.py`` runs
schemathesis against a real controller with it, so it cannot drift from
what the routes answer without a test failing.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The description as a dict (read once)."""
    text = files("fogline.fleet.controller").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


def openapi_routes() -> list[BaseRoute]:
    """``GET /openapi.json``; open to all, like ``/api/health`` (it holds no data)."""
    return [Route("/openapi.json", _openapi)]
