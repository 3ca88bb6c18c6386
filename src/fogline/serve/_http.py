"""The Open Inference Protocol over HTTP/REST: the ASGI app (routes, bearer token, CORS).

The bodies (JSON, and Triton's binary tensor data extension) are read and
written by :mod:`fogline.serve._http_codec`; this module routes, limits the
body size, and turns failures into answers.

The two ``infer`` routes, which carry nearly all the traffic, are answered by
:class:`InferRoute`, plain ASGI in front of Starlette: it matches the path
with one regular expression and speaks to the server directly, skipping
Starlette's router, request object and middleware stack (a py-spy profile
under load put them at a fifth of the event loop's time per request). Every
other route, and everything when CORS is on (browsers need its headers on
every answer), goes through the Starlette app, with the same answers.

Concurrency: asyncio (on uvicorn); inference awaits the model's batcher or a
worker thread, so the event loop only parses and answers.

Every failure a client can cause gets a 4xx and the protocol's error body,
``{"error": "..."}``, naming what was wrong and where; the server goes on. The
status of a fogline error is :func:`fogline.errors.http_status`'s, the mapping
the fleet API uses too.
"""

from __future__ import annotations

import functools
import hmac
import logging
import re
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


def failure(exc: Exception) -> tuple[str, int]:
    """The protocol's error message and HTTP status for a failed request (logged when ours)."""
    if isinstance(exc, BadRequest):
        return str(exc), exc.status
    if isinstance(exc, TimeoutError):
        return "the request timed out before the model answered", 504
    if isinstance(exc, FoglineError):
        status = http_status(exc)
        if status != 500:  # the request's fault, or the model's state: said as it is
            return str(exc), status
        log.exception("request failed")
        return f"the model failed: {exc}", status
    log.exception("request failed")  # a bug of ours: say so, log it, keep serving
    return f"internal error: {type(exc).__name__}", 500


def _guarded(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Map every failure to the protocol's error body; nothing escapes as a 500 with a trace."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            return error(*failure(exc))

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
) -> Any:
    """The protocol's routes over ``manager``, as an ASGI app.

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
        answer, json_length = await run_infer(
            manager, p["name"], p.get("version"), body, request.headers.get(HEADER_LENGTH)
        )
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
    if cors_origins and token is not None:  # inside CORS: a preflight carries no token
        middleware.append(Middleware(BearerToken, token=token))
    app: Any = Starlette(routes=routes, middleware=middleware)
    if not cors_origins:
        app = InferRoute(app, manager, max_body)
        if token is not None:
            app = BearerToken(app, token)
    return app


async def run_infer(
    manager: ModelManager,
    name: str,
    version: str | None,
    body: bytes,
    header_length: str | None,
) -> tuple[bytes, int | None]:
    """One inference request's body → (the answer's body, its JSON header's length if binary)."""
    header, inputs, outputs = parse_infer(body, header_length)
    loaded, results = await manager.infer(name, version, inputs)
    return encode_infer(name, loaded.version, header, results, outputs)


#: The two infer routes; the names are one path segment each, as Starlette's ``{name}`` matches.
INFER_PATH = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?/infer")


class InferRoute:
    """ASGI: ``POST .../infer`` answered directly; every other request goes to ``app``.

    The same answers as the Starlette route (the body limit, the protocol's
    error body for every failure), with less work per request: no router,
    no request object, no middleware stack, and the answer's bytes sent in
    one message.
    """

    def __init__(self, app: Any, manager: ModelManager, max_body: int) -> None:
        self.app = app
        self.manager = manager
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = INFER_PATH.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            body = await _receive_body(receive, headers.get(b"content-length"), self.max_body)
            length = headers.get(HEADER_LENGTH.encode())
            answer, json_length = await run_infer(
                self.manager,
                match["name"],
                match["version"],
                body,
                None if length is None else length.decode("latin-1"),
            )
        except Exception as exc:
            refusal = error(*failure(exc))  # rendered as Starlette renders the other routes' errors
            await _send(send, refusal.status_code, bytes(refusal.body), b"application/json")
            return
        if json_length is None:
            await _send(send, 200, answer, b"application/json")
        else:
            extra = [(b"inference-header-content-length", str(json_length).encode())]
            await _send(send, 200, answer, b"application/octet-stream", extra)


async def _receive_body(receive: Any, declared: bytes | None, limit: int) -> bytes:
    """The whole request body from ASGI ``receive``; 413 over ``limit`` (declared or counted)."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise BadRequest(
                f"Content-Length {declared.decode('latin-1')!r} is not a number"
            ) from None
        if size > limit:
            raise BadRequest(f"the request body of {size} bytes is over the limit of {limit}", 413)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client went away before the body was read")
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise BadRequest(f"the request body is over the limit of {limit} bytes", 413)
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send(
    send: Any,
    status: int,
    body: bytes,
    media_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", media_type),
        (b"content-length", str(len(body)).encode()),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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
    """A Starlette request's whole body, with the same limits as the infer route's."""
    declared = request.headers.get("content-length")
    size = None if declared is None else declared.encode("latin-1")
    return await _receive_body(request.receive, size, limit)
