"""The controller's web dashboard (placeholder until the real pages land)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route


async def _index(request: Request) -> Response:
    return HTMLResponse("<!doctype html><title>fogline fleet</title><p>fogline fleet</p>")


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard's routes, mounted by the controller at ``/``."""
    return [Route("/", _index)]
