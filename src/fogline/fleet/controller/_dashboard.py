"""The controller's web dashboard: static pages that read the JSON API from the browser.

The dashboard is plain HTML, CSS and JavaScript modules in the package folder
``fogline/fleet/controller/dashboard`` — no build step, nothing fetched from
elsewhere. Its pages (the overview, devices, releases, deployments, and the
federated runs under ``#/learning``, the edge clusters under ``#/clusters``) are routed in the browser by the URL's
``#`` part. The server side is only this: ``/`` serves ``index.html`` and
``/dashboard/…`` serves the other files. Everything the pages show comes from
``/api/…`` with the operator's bearer token, which the page reads once from
``?token=`` and keeps in the tab's ``sessionStorage``; without a valid token
the API answers 401 and the page asks for the token.

Responses carry a strict Content-Security-Policy (scripts, styles and
requests only from the controller itself) and ``Cache-Control: no-cache``,
so a browser revalidates after the controller is upgraded instead of running
stale pages against a newer API.
"""

from __future__ import annotations

import os
from importlib import resources

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from fogline.errors import ConfigError

#: The package folder that holds the pages.
PACKAGE, FOLDER = "fogline.fleet.controller", "dashboard"

#: Only the controller's own scripts, styles and API; no inline script, no frames.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",  # the first URL may carry ?token=
    "X-Content-Type-Options": "nosniff",
}


class _Files(StaticFiles):
    """Starlette's static files with the dashboard's headers on every answer."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(_HEADERS)
        return response


def dashboard_folder() -> str:
    """The folder the pages are served from (inside the installed package)."""
    return str(resources.files(PACKAGE).joinpath(FOLDER))


def dashboard_routes() -> list[BaseRoute]:
    """The dashboard's routes, mounted by the controller at ``/``.

    >>> [getattr(route, "path", None) for route in dashboard_routes()]
    ['/', '/dashboard']
    """
    folder = dashboard_folder()
    index = os.path.join(folder, "index.html")
    if not os.path.isfile(index):
        raise ConfigError(
            f"the dashboard's files are missing ({index} does not exist): this fogline "
            "installation is incomplete; reinstall fogline"
        )

    async def page(request: Request) -> Response:
        return FileResponse(index, media_type="text/html", headers=_HEADERS)

    return [
        Route("/", page, methods=["GET", "HEAD"]),
        Mount("/dashboard", app=_Files(directory=folder), name="dashboard"),
    ]
