"""The release repository over HTTP: TUF metadata and targets, with Range so downloads resume.

Two routes, mounted by the controller next to its API::

    GET /repository/metadata/{file}        root.json, 2.root.json, targets.json, ...
    GET /repository/targets/{path:path}    releases/<name>/<version>.json, blobs/<sha256>

Metadata files are small and replaced atomically while the server runs, so
each one is read whole and answered from memory (a reader never gets half of
an old file and half of a new one). Targets are immutable (content-addressed
blobs, versioned documents) and large, so they go through Starlette's
``FileResponse``, which answers ``Range`` with 206 and ``Content-Range``,
a bad range with 416, and sets ``ETag`` and ``Accept-Ranges``. Only names a
repository writes are served: anything else, a ``..`` or a hidden temporary
file, is 404.

Given an :class:`~fogline.security.IntegrityCheck` (the controller gives
one), a target is served only while its bytes are the signed ones: the first
request for it is answered after its hash is checked (in a thread, off the
event loop), later ones after a ``stat``; a damaged one gets 503 and a line
naming the release files it holds, rather than bytes every device would
refuse. A target that signed ``targets.json`` does not list is 404. Without a
check (tests that serve forged files on purpose) targets go out as they are.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from fogline.errors import ModelNotFound
from fogline.security import IntegrityCheck, ReleaseRepository

log = logging.getLogger("fogline.controller")

#: The metadata files of a repository without consistent snapshots.
_METADATA = re.compile(r"^(?:[1-9][0-9]{0,9}\.)?(?:root|targets|snapshot|timestamp)\.json$")
#: One path component of a target: what release names, versions and hashes may be.
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,127}$")


def repository_routes(
    repo: ReleaseRepository, prefix: str = "/repository", *, check: IntegrityCheck | None = None
) -> list[BaseRoute]:
    """The routes that serve ``repo``'s metadata and targets under ``prefix`` (see the module)."""
    metadata_dir = repo.metadata_dir
    targets_dir = repo.targets_dir
    reported: set[str] = set()  # log each damage once, not on every device's retry

    async def metadata(request: Request) -> Response:
        name = request.path_params["file"]
        if not _METADATA.match(name):
            return _not_found()
        try:
            body = (metadata_dir / name).read_bytes()
        except OSError:
            return _not_found()
        etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag})
        return Response(
            body,
            media_type="application/json",
            headers={"etag": etag, "cache-control": "no-cache"},
        )

    async def target(request: Request) -> Response:
        file = _target_file(targets_dir, request.path_params["path"])
        if file is None:
            return _not_found()
        if check is not None:
            try:
                damage = await run_in_threadpool(check.target, request.path_params["path"])
            except ModelNotFound:
                return _not_found()
            if damage:
                message = "; ".join(map(str, damage))
                if message not in reported:
                    reported.add(message)
                    log.error("refused to serve a damaged file: %s", message)
                return PlainTextResponse(
                    f"damaged on the controller, not served: {message}\n", status_code=503
                )
        return FileResponse(
            file,
            media_type="application/octet-stream",
            headers={"cache-control": "public, max-age=31536000, immutable"},
        )

    return [
        Route(f"{prefix}/metadata/{{file}}", metadata, methods=["GET", "HEAD"]),
        Route(f"{prefix}/targets/{{path:path}}", target, methods=["GET", "HEAD"]),
    ]


def repository_app(repo: ReleaseRepository) -> Starlette:
    """A stand-alone app serving only the repository (tests, a plain artifact server)."""
    return Starlette(routes=repository_routes(repo))


def _target_file(root: Path, path: str) -> Path | None:
    """The file for a target path, or None when the path is not one a repository writes."""
    parts = path.split("/")
    if not path or len(parts) > 8 or not all(_COMPONENT.match(part) for part in parts):
        return None  # also rules out '..', '.', '' and hidden temporary files
    file = root.joinpath(*parts)
    if file.is_symlink() or not file.is_file():
        return None
    return file


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404)
