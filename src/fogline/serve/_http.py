"""The Open Inference Protocol over HTTP/REST, with Triton's binary tensor data extension.

Concurrency: asyncio (Starlette on uvicorn); inference awaits the model's
batcher or a worker thread, so the event loop only parses and answers.

Every failure a client can cause gets a 4xx and the protocol's error body,
``{"error": "..."}``, naming what was wrong and where; the server goes on.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fogline.errors import (
    ConfigError,
    DeadlineExceeded,
    FoglineError,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    SignatureMismatch,
)
from fogline.serve._datatypes import (
    FROM_NAME,
    check_shape,
    datatype_of_output,
    decode,
    encode,
    numpy_dtype,
)
from fogline.serve._manager import ModelManager

log = logging.getLogger("fogline.serve")

HEADER_LENGTH = "inference-header-content-length"
#: The largest request body accepted, unless the server is given another limit.
DEFAULT_MAX_BODY = 64 * 1024 * 1024

_STATUS: list[tuple[type[BaseException], int]] = [
    (ModelNotFound, 404),
    (ModelNotReady, 503),
    (Overloaded, 503),
    (DeadlineExceeded, 504),
    (SignatureMismatch, 400),
    (ConfigError, 400),
]


class BadRequest(Exception):
    """A request the protocol cannot take: answered with ``status`` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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
            for kind, status in _STATUS:
                if isinstance(exc, kind):
                    return error(str(exc), status)
            log.exception("request failed")
            return error(f"the model failed: {exc}", 500)
        except Exception as exc:  # a bug of ours: say so, log it, keep serving
            log.exception("request failed")
            return error(f"internal error: {type(exc).__name__}", 500)

    return endpoint


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
        return infer_response(p["name"], loaded.version, header, results, outputs)

    async def repository_index(request: Request) -> Response:
        body = await _read_body(request, max_body)
        ready_only = False
        if body.strip():
            options = _json(body, "the index request")
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
                response = JSONResponse(
                    {"error": "missing or wrong bearer token (send Authorization: Bearer <token>)"},
                    status_code=401,
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


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None


def parse_infer(
    body: bytes, header_length: str | None
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bool] | None]:
    """An inference request → (its JSON header, the input arrays, wanted outputs → binary?)."""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadRequest(
                f"Inference-Header-Content-Length {header_length!r} is not a number"
            ) from None
        if not 0 <= length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length says {length} bytes of JSON, but the body "
                f"has {len(body)}"
            )
        header_bytes, binary = body[:length], memoryview(body)[length:]
    else:
        header_bytes, binary = body, memoryview(b"")
    header = _json(header_bytes, "the request")
    if not isinstance(header, dict):
        raise BadRequest("the request must be a JSON object with an `inputs` list")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("the request needs a non-empty `inputs` list")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, spec in enumerate(raw_inputs):
        where = f"inputs[{index}]"
        if not isinstance(spec, dict):
            raise BadRequest(f"{where} must be an object with name, shape, datatype and data")
        name = spec.get("name")
        datatype = spec.get("datatype")
        shape = spec.get("shape")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"{where}: `name` must be a non-empty string")
        where = f"input {name!r}"
        if name in inputs:
            raise BadRequest(f"{where} is given twice")
        if not isinstance(datatype, str) or datatype not in FROM_NAME.values():
            raise BadRequest(f"{where}: unknown datatype {datatype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BadRequest(
                f"{where}: `shape` must be a list of non-negative integers, got {shape!r}"
            )
        parameters = spec.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest(f"{where}: `parameters` must be an object")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
            if offset + size > len(binary):
                raise BadRequest(
                    f"{where}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} bytes left)"
                )
            inputs[name] = decode(binary[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            if "data" not in spec:
                raise BadRequest(f"{where} has neither `data` nor binary_data_size")
            inputs[name] = _from_json(spec["data"], datatype, shape, where)
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data after the last input: the "
            "binary_data_size parameters do not add up to the body"
        )
    wanted = _requested_outputs(header)
    return header, inputs, wanted


def _from_json(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    count = check_shape(shape, where.removeprefix("input ").strip("'"))
    flat = _flatten(data, where)
    if len(flat) != count:
        raise BadRequest(f"{where}: {len(flat)} values for shape {shape} ({count} elements)")
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in flat):
            raise BadRequest(f"{where}: BYTES data must be strings")
        return np.array([v.encode() for v in flat], dtype=object).reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"{where}: BOOL data must be true or false")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"{where}: {datatype} data must be numbers")
    dtype = numpy_dtype(datatype)
    try:
        array = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError) as exc:
        raise BadRequest(f"{where}: a value does not fit {datatype}: {exc}") from None
    if dtype.kind in "iu" and any(isinstance(v, float) and not float(v).is_integer() for v in flat):
        raise BadRequest(f"{where}: {datatype} data must be whole numbers")
    return array.reshape(shape)


def _flatten(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest(f"{where}: `data` must be a list")
    flat: list[Any] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    return flat


def _requested_outputs(header: dict[str, Any]) -> dict[str, bool] | None:
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("`parameters` must be an object")
    all_binary = bool(parameters.get("binary_data_output", False))
    outputs = header.get("outputs")
    if outputs is None:
        return None if not all_binary else {"*": True}
    if not isinstance(outputs, list):
        raise BadRequest("`outputs` must be a list of {name, parameters}")
    wanted: dict[str, bool] = {}
    for index, spec in enumerate(outputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(f"outputs[{index}] must be an object with a `name`")
        params = spec.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"outputs[{index}]: `parameters` must be an object")
        wanted[spec["name"]] = bool(params.get("binary_data", all_binary))
    return wanted


def infer_response(
    name: str,
    version: int,
    header: dict[str, Any],
    results: dict[str, np.ndarray],
    wanted: dict[str, bool] | None,
) -> Response:
    """The protocol's answer: JSON, or a JSON header followed by binary outputs."""
    if wanted is None or "*" in wanted:
        binary_all = wanted is not None
        wanted = {output: binary_all for output in results}
    unknown = sorted(set(wanted) - set(results))
    if unknown:
        raise BadRequest(
            f"unknown output(s) {', '.join(unknown)}; model {name!r} has {', '.join(results)}"
        )
    outputs = []
    blobs: list[bytes] = []
    for output, binary in wanted.items():
        array = results[output]
        datatype = datatype_of_output(array, output)
        entry: dict[str, Any] = {"name": output, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = encode(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif datatype == "BYTES":
            entry["data"] = [
                v.decode(errors="replace") if isinstance(v, bytes) else str(v)
                for v in array.reshape(-1)
            ]
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    answer: dict[str, Any] = {"model_name": name, "model_version": str(version), "outputs": outputs}
    if "id" in header:
        answer["id"] = header["id"]
    text = json.dumps(answer, separators=(",", ":")).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(
        text + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(text))},
    )
