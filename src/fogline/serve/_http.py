"""The Open Inference Protocol over HTTP/REST: the Starlette app (routes, bearer token, CORS).

The bodies (JSON, and Triton's binary tensor data extension) are read and
written by :mod:`fogline.serve._http_codec`; this module routes, limits the
body size, and turns failures into answers.

Concurrency: asyncio (Starlette on uvicorn); inference awaits the model's
batcher or a worker thread, so the event loop only parses and answers.

Every failure a client can cause gets a 4xx and the protocol's error body,
``{"error": "..."}``, naming what was wrong and where; the server goes on. The
status of a fogline error is :func:`fogline.errors.http_status`'s, the mapping
the fleet API uses too.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fogline.errors import ConfigError, FoglineError, ModelNotReady, Unauthorized, http_status
from fogline.serve._http_codec import (
    HEADER_LENGTH,
    BadRequest,
    encode_infer,
    parse_infer,
    parse_json,
)
from fogline.serve._manager import ModelManager

log = logging.getLogger("fogline.serve")

#: The largest request body accepted, unless the server is given another limit.
DEFAULT_MAX_BODY = 64 * 1024 * 1024


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Map every failure to the protocol's error body; nothing escapes as a 500 with a trace."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as exc:
            return error(str(exc), exc.status)
        except TimeoutError:
            return error("the request timed out before the model answered", 504)
        except FoglineError as exc:
            status = http_status(exc)
            if status != 500:  # the request's fault, or the model's state: said as it is
                return error(str(exc), status)
            log.exception("request failed")
            return error(f"the model failed: {exc}", status)
        except Exception as exc:  # a bug of ours: say so, log it, keep serving
            log.exception("request failed")
            return error(f"internal error: {type(exc).__name__}", 500)

    return endpoint


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The HTTP endpoints' OpenAPI description (``openapi.yaml`` in this package), read once."""
    text = files("fogline.serve").joinpath("openapi.yaml").read_text(encoding="utf-8")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


def build_app(
    manager: ModelManager,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    version: str = "0",
    token: str | None = None,
    cors_origins: tuple[str, ...] = (),
) -> Starlette:
    """The protocol's routes over ``manager``.

    With ``token``, every request must carry ``Authorization: Bearer <token>``
    (401 otherwise). CORS is off unless ``cors_origins`` lists the origins
    that browsers may call from.
    """

    async def live(request: Request) -> Response:
        return Response(status_code=200 if manager.live else 503)

    async def ready(request: Request) -> Response:
        return Response(status_code=200 if manager.ready else 503)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "fogline",
                "version": version,
                "extensions": ["binary_tensor_data", "model_repository"],
            }
        )

    async def model_metadata(request: Request) -> Response:
        p = request.path_params
        return JSONResponse(manager.metadata(p["name"], p.get("version")))

    async def model_ready(request: Request) -> Response:
        p = request.path_params
        try:
            manager.get(p["name"], p.get("version"))
        except ModelNotReady:
            return Response(status_code=503)
        return Response(status_code=200)

    async def model_config(request: Request) -> Response:
        p = request.path_params
        config = manager.get(p["name"], p.get("version")).config
        return JSONResponse(
            {
                "name": config.name,
                "platform": config.platform,
                "max_batch_size": config.max_batch_size,
                "input": [
                    {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.dims)}
                    for t in config.inputs
                ],
                "output": [
                    {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.dims)}
                    for t in config.outputs
                ],
                "instance_group": [{"count": config.instance_count, "kind": "KIND_CPU"}],
            }
        )

    async def infer(request: Request) -> Response:
        p = request.path_params
        body = await _read_body(request, max_body)
        header, inputs, outputs = parse_infer(body, request.headers.get(HEADER_LENGTH))
        loaded, results = await manager.infer(p["name"], p.get("version"), inputs)
        answer, json_length = encode_infer(p["name"], loaded.version, header, results, outputs)
        if json_length is None:
            return Response(answer, media_type="application/json")
        return Response(
            answer,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    async def repository_index(request: Request) -> Response:
        body = await _read_body(request, max_body)
        ready_only = False
        if body.strip():
            options = parse_json(body, "the index request")
            ready_only = bool(options.get("ready", False)) if isinstance(options, dict) else False
        rows = [
            {
                "name": s.name,
                **({"version": str(s.version)} if s.version else {}),
                "state": s.state,
                **({"reason": s.reason} if s.reason else {}),
            }
            for s in manager.index()
            if not ready_only or s.state == "READY"
        ]
        return JSONResponse(rows)

    async def load(request: Request) -> Response:
        await manager.load(request.path_params["name"])
        return Response(status_code=200)

    async def unload(request: Request) -> Response:
        await manager.unload(request.path_params["name"])
        return Response(status_code=200)

    routes = [
        Route("/openapi.json", _guarded(openapi)),
        Route("/v2/health/live", _guarded(live)),
        Route("/v2/health/ready", _guarded(ready)),
        Route("/v2", _guarded(server_metadata)),
        Route("/v2/models/{name}", _guarded(model_metadata)),
        Route("/v2/models/{name}/versions/{version}", _guarded(model_metadata)),
        Route("/v2/models/{name}/ready", _guarded(model_ready)),
        Route("/v2/models/{name}/versions/{version}/ready", _guarded(model_ready)),
        Route("/v2/models/{name}/config", _guarded(model_config)),
        Route("/v2/models/{name}/versions/{version}/config", _guarded(model_config)),
        Route("/v2/models/{name}/infer", _guarded(infer), methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", _guarded(infer), methods=["POST"]),
        Route("/v2/repository/index", _guarded(repository_index), methods=["POST"]),
        Route("/v2/repository/models/{name}/load", _guarded(load), methods=["POST"]),
        Route("/v2/repository/models/{name}/unload", _guarded(unload), methods=["POST"]),
    ]
    middleware = []
    if cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
                expose_headers=["Inference-Header-Content-Length"],
            )
        )
    if token is not None:
        middleware.append(Middleware(BearerToken, token=token))
    return Starlette(routes=routes, middleware=middleware)


class BearerToken:
    """ASGI middleware: refuse HTTP requests without ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        if not token:
            raise ConfigError("the bearer token must not be empty")
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                refusal = Unauthorized(
                    "missing or wrong bearer token (send Authorization: Bearer <token>)"
                )
                response = JSONResponse(
                    {"error": str(refusal)},
                    status_code=http_status(refusal),
                    headers={"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(f"Content-Length {declared!r} is not a number") from None
        if size > limit:
            raise BadRequest(f"the request body of {size} bytes is over the limit of {limit}", 413)
    chunks = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise BadRequest(f"the request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)
