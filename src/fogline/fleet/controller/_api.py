"""The controller's HTTP API (JSON under ``/api``), the dashboard, and the release repository.

Every route but ``/api/health`` and ``/api/enrol`` needs the operator's
bearer token (``Authorization: Bearer …``; the dashboard may pass it once as
``?token=`` and keeps it). Bad input gets a 4xx and ``{"error": "..."}``
naming what was wrong; nothing escapes as a 500 with a trace. Status
codes of fogline's errors come from :func:`fogline.errors.http_status`, the
mapping the inference server uses too (a :class:`~fogline.errors.Conflict`
is a 409, a :class:`~fogline.errors.ConfigError` a 400).
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fogline.errors import ConfigError, FoglineError, Unauthorized, http_status
from fogline.fleet.controller._clusters import Clusters
from fogline.fleet.controller._energy import energy_by_release
from fogline.fleet.controller._learning import Learning
from fogline.fleet.controller._monitoring import (
    KINDS,
    monitoring_rows,
    monitoring_series,
    monitoring_summary,
)
from fogline.fleet.controller._openapi import openapi_routes
from fogline.fleet.controller._privacy import FleetPrivacyDefault
from fogline.fleet.controller._registry import Registry
from fogline.fleet.controller._rollout import Criteria, RolloutPlan, Rollouts
from fogline.protocol import RunSpec, check_device_id
from fogline.security import parse_public_key

log = logging.getLogger("fogline.controller")

_MAX_BODY = 1024 * 1024
#: The most rows a ``limit`` query parameter may ask for.
_MAX_LIMIT = 1_000_000_000


class ApiError(Exception):
    """A request the API cannot take (malformed, unknown id, too big): ``status`` and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(str(exc), exc.status)
        except ValidationError as exc:
            return _error(_validation_message(exc), 422)
        except (ConfigError, Unauthorized) as exc:  # the request's own fault: nothing to log
            return _error(str(exc), http_status(exc))
        except FoglineError as exc:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            return _error(str(exc), http_status(exc))

    return endpoint


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def _json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise ApiError(f"the request body is over {_MAX_BODY} bytes", 413)
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(f"the body is not JSON: {exc}") from None
    except RecursionError:  # json's C scanner has a depth limit; a body can exceed it
        raise ApiError("the body is JSON nested too deeply to read") from None
    if not isinstance(data, dict):
        raise ApiError("the body must be a JSON object")
    return data


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    release: str
    version: str
    group: str = "default"
    strategy: RolloutPlan = Field(default_factory=RolloutPlan)
    criteria: Criteria = Field(default_factory=Criteria)


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str = "default"
    tags: list[str] = Field(default_factory=list)
    ttl_seconds: float = Field(default=86400.0, gt=0)


class EnrolRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str
    token: str
    csr: str | None = Field(default=None, max_length=16384)  # mutual TLS: the device's key
    #: The device's X25519 public key (base64) that encrypted releases are wrapped for.
    release_key: str | None = None


class DeviceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group: str | None = None
    tags: list[str] | None = None


@dataclass
class ApiContext:
    """What the routes need from the controller."""

    registry: Registry
    rollouts: Rollouts
    releases: Callable[[], list[dict[str, Any]]]
    enrol: Callable[[str], dict[str, Any]]  # device id → credentials and trust
    token: str | None
    wake: Callable[[], None]  # ask the controller loop to tick now
    learning: Learning | None = None  # federated runs (None: this controller runs none)
    clusters: Clusters | None = None  # edge clusters heard on the broker (None: none)
    #: Mutual TLS: (device id, CSR) → its certificate, the CA's, the device listener (None: off).
    certify: Callable[[str, str], dict[str, Any]] | None = None
    #: Told of each bad operator token: (client address, path); the audit log's rate limit.
    login_failed: Callable[[str, str], object] | None = None
    #: A device's newest audit checkpoint as kept (None: none came yet).
    audit_checkpoint: Callable[[str], dict[str, Any] | None] | None = None
    #: The fleet's default egress policy (None: this controller keeps none).
    privacy: FleetPrivacyDefault | None = None
    #: Release keys and revocation (None: this controller keeps none).
    keys: DeviceKeysApi | None = None


class DeviceKeysApi(Protocol):
    """What the API needs for encrypted releases (the controller implements it)."""

    def refuse_revoked(self, device_id: str) -> None: ...

    def enrolled(self, device_id: str, release_key: str | None) -> None: ...

    def revoke(self, device_id: str) -> dict[str, Any]: ...


def routes(ctx: ApiContext) -> list[BaseRoute]:
    """The JSON API."""

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "time": time.time()})

    async def devices(request: Request) -> Response:
        group = request.query_params.get("group")
        return JSONResponse([d.to_dict() for d in ctx.registry.devices(group)])

    async def device(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        found = ctx.registry.device(device_id)
        if found is None:
            raise ApiError(f"no device {device_id!r}", 404)
        body = found.to_dict()
        body["desired"] = ctx.registry.desired(device_id).model_dump(mode="json")
        since = _float(request, "since", time.time() - 3600)
        body["metrics"] = ctx.registry.metrics(devices=[device_id], since=since)
        body["monitoring"] = monitoring_rows(ctx.registry.query, devices=[device_id], since=since)
        return JSONResponse(body)

    async def audit_checkpoint(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        if ctx.audit_checkpoint is None:
            raise ApiError("this controller keeps no audit checkpoints", 404)
        try:
            check_device_id(device_id)
        except ValueError as exc:
            raise ApiError(str(exc)) from None
        kept = await run_in_threadpool(ctx.audit_checkpoint, device_id)
        if kept is None:
            raise ApiError(
                f"no audit checkpoint from {device_id!r} yet (its telemetry carries one)", 404
            )
        return JSONResponse(kept)

    async def update_device(request: Request) -> Response:
        device_id = request.path_params["device_id"]
        update = DeviceUpdate.model_validate(await _json(request))
        current = ctx.registry.device(device_id)
        if current is None:
            raise ApiError(f"no device {device_id!r}", 404)
        ctx.registry.set_group(device_id, update.group or current.group, update.tags)
        found = ctx.registry.device(device_id)
        assert found is not None
        return JSONResponse(found.to_dict())

    async def releases(request: Request) -> Response:
        return JSONResponse(ctx.releases())

    async def deployments(request: Request) -> Response:
        status = request.query_params.get("status")
        return JSONResponse([d.to_dict() for d in ctx.rollouts.list(status=status)])

    async def deployment(request: Request) -> Response:
        found = ctx.rollouts.get(request.path_params["deployment_id"])
        if found is None:
            raise ApiError(f"no deployment {request.path_params['deployment_id']!r}", 404)
        body = found.to_dict()
        body["events"] = ctx.registry.events(deployment=found.id)
        return JSONResponse(body)

    async def deploy(request: Request) -> Response:
        req = DeployRequest.model_validate(await _json(request))
        # A thread: checking the release may hash its files (seconds per GB) the first time.
        created = await run_in_threadpool(
            ctx.rollouts.create,
            req.release,
            req.version,
            req.group,
            strategy=req.strategy,
            criteria=req.criteria,
        )
        ctx.wake()
        return JSONResponse(created.to_dict(), status_code=201)

    async def rollback(request: Request) -> Response:
        body = await _json(request)
        reason = str(body.get("reason") or "rolled back by the operator")
        deployment_id = request.path_params["deployment_id"]
        if ctx.rollouts.get(deployment_id) is None:
            raise ApiError(f"no deployment {deployment_id!r}", 404)
        done = ctx.rollouts.rollback(deployment_id, reason)
        ctx.wake()
        return JSONResponse(done.to_dict())

    async def metrics(request: Request) -> Response:
        device_ids = request.query_params.getlist("device") or None
        rows = ctx.registry.metrics(
            devices=device_ids,
            release=request.query_params.get("release"),
            since=_float(request, "since", time.time() - 3600),
            limit=_limit(request, 10000),
        )
        return JSONResponse(rows)

    async def series(request: Request) -> Response:
        since = _float(request, "since", time.time() - 3600)
        step = max(1.0, _float(request, "step", 10.0))
        rows = ctx.registry.metrics(
            release=request.query_params.get("release"), since=since, limit=200000
        )
        return JSONResponse(fleet_series(rows, step))

    async def energy(request: Request) -> Response:
        found = energy_by_release(
            ctx.registry.query,
            since=_float(request, "since", time.time() - 3600),
            release=request.query_params.get("release"),
        )
        return JSONResponse(found)

    async def monitoring(request: Request) -> Response:
        kinds = request.query_params.getlist("kind") or None
        unknown = sorted(set(kinds or ()) - set(KINDS))
        if unknown:
            raise ApiError(f"unknown kind {unknown[0]!r}; one of {', '.join(KINDS)}")
        rows = monitoring_rows(
            ctx.registry.query,
            devices=request.query_params.getlist("device") or None,
            release=request.query_params.get("release"),
            version=request.query_params.get("version"),
            kinds=kinds,
            since=_float(request, "since", time.time() - 3600),
            limit=_limit(request, 20000),
        )
        return JSONResponse(rows)

    async def monitoring_by_release(request: Request) -> Response:
        rows = monitoring_rows(
            ctx.registry.query,
            release=request.query_params.get("release"),
            since=_float(request, "since", time.time() - 3600),
            limit=200000,
        )
        step = max(1.0, _float(request, "step", 10.0))
        return JSONResponse(monitoring_series(rows, step))

    async def monitoring_latest(request: Request) -> Response:
        rows = monitoring_rows(
            ctx.registry.query,
            devices=request.query_params.getlist("device") or None,
            release=request.query_params.get("release"),
            since=_float(request, "since", time.time() - 600),
            limit=200000,
        )
        return JSONResponse(monitoring_summary(rows))

    async def clusters(request: Request) -> Response:
        if ctx.clusters is None:
            return JSONResponse([])
        groups = ctx.clusters.groups()
        known = ctx.registry.devices_by_id(sorted(ctx.clusters.devices()))
        for group in groups:
            for node in group["nodes"]:
                node["device_known"] = node["device"] in known
        return JSONResponse(groups)

    async def events(request: Request) -> Response:
        found = ctx.registry.events(
            device=request.query_params.get("device"),
            deployment=request.query_params.get("deployment"),
            limit=_limit(request, 100),
        )
        return JSONResponse(found)

    def _privacy() -> FleetPrivacyDefault:
        if ctx.privacy is None:
            raise ApiError("this controller keeps no fleet policy", 404)
        return ctx.privacy

    async def privacy(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(_privacy().show))

    async def set_privacy(request: Request) -> Response:
        body = await _json(request)
        if set(body) != {"policy"}:
            raise ApiError('the body is {"policy": {...}} (or {"policy": null} to clear it)')
        done = await run_in_threadpool(_privacy().set, body["policy"])
        return JSONResponse(done)

    async def token(request: Request) -> Response:
        req = TokenRequest.model_validate(await _json(request))
        created = ctx.registry.create_token(group=req.group, tags=req.tags, ttl=req.ttl_seconds)
        return JSONResponse({"token": created, "group": req.group}, status_code=201)

    async def enrol(request: Request) -> Response:
        req = EnrolRequest.model_validate(await _json(request))
        try:
            check_device_id(req.device_id)
        except ValueError as exc:
            raise ApiError(str(exc)) from None
        _check_csr(ctx, req)  # before the token is spent: the device may try again
        if ctx.keys is not None:
            _check_release_key(ctx.keys, req)
        try:
            ctx.registry.redeem_token(req.token, req.device_id)
        except ConfigError as exc:
            raise ApiError(str(exc), 403) from None
        if ctx.keys is not None:
            await run_in_threadpool(ctx.keys.enrolled, req.device_id, req.release_key)
        answer = ctx.enrol(req.device_id)
        if ctx.certify is not None and req.csr is not None:
            answer.update(await run_in_threadpool(ctx.certify, req.device_id, req.csr))
        return JSONResponse(answer, status_code=201)

    async def revoke(request: Request) -> Response:
        if ctx.keys is None:
            raise ApiError("this controller keeps no release keys", 404)
        device_id = request.path_params["device_id"]
        return JSONResponse(await run_in_threadpool(ctx.keys.revoke, device_id))

    def _learning() -> Learning:
        if ctx.learning is None:
            raise ApiError("this controller runs no federated learning", 404)
        return ctx.learning

    async def fl_runs(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(_learning().runs))

    async def fl_start(request: Request) -> Response:
        spec = RunSpec.model_validate(await _json(request))
        # A thread: loading the task imports its module and builds its data (seconds).
        started = await run_in_threadpool(_learning().start_run, spec)
        return JSONResponse(started, status_code=201)

    async def fl_run(request: Request) -> Response:
        found = await run_in_threadpool(_learning().run, request.path_params["run_id"])
        return JSONResponse(found)

    async def fl_stop(request: Request) -> Response:
        stopped = await run_in_threadpool(_learning().stop_run, request.path_params["run_id"])
        return JSONResponse(stopped)

    def admin(handler: Handler) -> Handler:
        return _guarded(_with_token(handler, ctx.token, ctx.login_failed))

    return [
        Route("/api/health", _guarded(health)),
        Route("/api/enrol", _guarded(enrol), methods=["POST"]),
        Route("/api/devices", admin(devices)),
        Route("/api/devices/{device_id}", admin(device)),
        Route("/api/devices/{device_id}", admin(update_device), methods=["PATCH"]),
        Route("/api/devices/{device_id}/audit-checkpoint", admin(audit_checkpoint)),
        Route("/api/devices/{device_id}/revoke", admin(revoke), methods=["POST"]),
        Route("/api/releases", admin(releases)),
        Route("/api/deployments", admin(deployments)),
        Route("/api/deployments", admin(deploy), methods=["POST"]),
        Route("/api/deployments/{deployment_id}", admin(deployment)),
        Route("/api/deployments/{deployment_id}/rollback", admin(rollback), methods=["POST"]),
        Route("/api/metrics", admin(metrics)),
        Route("/api/series", admin(series)),
        Route("/api/energy", admin(energy)),
        Route("/api/monitoring", admin(monitoring)),
        Route("/api/monitoring/series", admin(monitoring_by_release)),
        Route("/api/monitoring/summary", admin(monitoring_latest)),
        Route("/api/events", admin(events)),
        Route("/api/clusters", admin(clusters)),
        Route("/api/tokens", admin(token), methods=["POST"]),
        Route("/api/privacy", admin(privacy)),
        Route("/api/privacy", admin(set_privacy), methods=["PUT"]),
        Route("/api/fl/runs", admin(fl_runs)),
        Route("/api/fl/runs", admin(fl_start), methods=["POST"]),
        Route("/api/fl/runs/{run_id}", admin(fl_run)),
        Route("/api/fl/runs/{run_id}/stop", admin(fl_stop), methods=["POST"]),
    ]


def _check_csr(ctx: ApiContext, req: EnrolRequest) -> None:
    """With mutual TLS, an enrolment needs a valid certificate signing request."""
    if ctx.certify is None:
        return  # no CA: a CSR is ignored
    if req.csr is None:
        raise ApiError(
            "this fleet uses mutual TLS: the enrol request needs a csr (the device's "
            "certificate signing request; update the agent)"
        )
    from fogline.security import check_certificate_request

    try:
        check_certificate_request(req.csr)
    except ConfigError as exc:
        raise ApiError(str(exc)) from None


def _check_release_key(keys: DeviceKeysApi, req: EnrolRequest) -> None:
    """Before a token is used: the release key is well formed and the device not revoked."""
    if req.release_key is not None:
        try:
            parse_public_key(req.release_key, "release_key")
        except ValueError as exc:
            raise ApiError(str(exc)) from None
    try:
        keys.refuse_revoked(req.device_id)
    except ConfigError as exc:
        raise ApiError(str(exc), 403) from None


def _with_token(
    handler: Handler, token: str | None, failed: Callable[[str, str], object] | None = None
) -> Handler:
    if token is None:
        return handler
    expected = f"Bearer {token}".encode()

    async def endpoint(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            if failed is not None:  # an audit event (fsynced): off the event loop
                client = request.client.host if request.client is not None else "unknown"
                await run_in_threadpool(failed, client, request.url.path)
            raise Unauthorized(
                "missing or wrong operator token (send Authorization: Bearer <token>; "
                "it is in the controller's data folder, admin.token)"
            )
        return await handler(request)

    return endpoint


def _float(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(f"query parameter {name}={text!r} is not a number") from None
    if not math.isfinite(value):  # float() takes "nan" and "inf"; no time or count is either
        raise ApiError(f"query parameter {name}={text!r} is not a finite number")
    return value


def _limit(request: Request, default: int) -> int:
    """The ``limit`` query parameter: a row count SQLite can take (it refuses ints past 2**63)."""
    value = _float(request, "limit", default)
    if not 0 <= value <= _MAX_LIMIT:
        raise ApiError(f"query parameter limit={value:g} is out of range: 0 to {_MAX_LIMIT}")
    return int(value)


def fleet_series(rows: Sequence[dict[str, Any]], step: float) -> dict[str, Any]:
    """Fleet-wide series in buckets of ``step`` seconds: throughput, worst p99, error rate, devices.

    >>> rows = [
    ...     {"device_id": "a", "time": 100.0, "items_per_second": 5.0, "p99_ms": 3.0, "items": 50,
    ...      "errors": 1, "version": "1.0"},
    ...     {"device_id": "b", "time": 104.0, "items_per_second": 7.0, "p99_ms": 9.0, "items": 70,
    ...      "errors": 0, "version": "1.1"},
    ... ]
    >>> s = fleet_series(rows, 10.0)
    >>> s["time"], s["items_per_second"], s["p99_ms"], s["devices"], s["versions"]
    ([100.0], [12.0], [9.0], [2], [{'1.0': 1, '1.1': 1}])
    """
    buckets: dict[float, list[dict[str, Any]]] = {}
    for row in rows:
        buckets.setdefault(step * (row["time"] // step), []).append(row)
    out: dict[str, Any] = {
        "step": step,
        "time": [],
        "items_per_second": [],
        "p99_ms": [],
        "error_rate": [],
        "devices": [],
        "versions": [],
    }
    for start in sorted(buckets):
        group = buckets[start]
        latest: dict[str, dict[str, Any]] = {}
        for row in group:
            latest[row["device_id"]] = row  # rows are oldest first: keep each device's newest
        items = sum(int(r["items"]) for r in group)
        p99s = [r["p99_ms"] for r in group if r["p99_ms"] is not None]
        versions: dict[str, int] = {}
        for row in latest.values():
            versions[str(row["version"])] = versions.get(str(row["version"]), 0) + 1
        out["time"].append(start)
        out["items_per_second"].append(
            round(sum(r["items_per_second"] for r in latest.values()), 3)
        )
        out["p99_ms"].append(max(p99s) if p99s else None)
        out["error_rate"].append(sum(int(r["errors"]) for r in group) / items if items else 0.0)
        out["devices"].append(len(latest))
        out["versions"].append(versions)
    return out


def application(
    ctx: ApiContext, *, extra: Sequence[BaseRoute] = (), dashboard: Sequence[BaseRoute] = ()
) -> Starlette:
    """The controller's ASGI app: the API, the repository routes, the dashboard."""
    return Starlette(routes=[*routes(ctx), *openapi_routes(), *extra, *dashboard])
