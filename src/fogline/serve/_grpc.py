"""The Open Inference Protocol over gRPC: KServe's ``inference.GRPCInferenceService``.

The service is the one Triton and KServe publish; its generated message and
servicer classes come from the ``tritonclient`` package (a dependency, not a
copy), so the official client works unchanged. Inputs arrive as
``raw_input_contents`` (what ``tritonclient`` sends) or in the typed
``contents`` fields; outputs always leave as ``raw_output_contents``, which
is what ``tritonclient`` parses.

Errors are mapped here, at the boundary, to gRPC status codes with a message
that says what was wrong and where; nothing escapes as ``UNKNOWN`` with a
traceback::

    ModelNotFound                               NOT_FOUND
    SignatureMismatch, ConfigError, a bad request  INVALID_ARGUMENT
    ModelNotReady, NotRunning                   UNAVAILABLE
    Overloaded, Dropped                         RESOURCE_EXHAUSTED
    DeadlineExceeded, asyncio.TimeoutError      DEADLINE_EXCEEDED
    a wrong or missing bearer token             UNAUTHENTICATED
    any other error                             INTERNAL (and logged with its traceback)

Concurrency: asyncio. ``grpc.aio`` runs every call as a coroutine on the
server's event loop; the loop only decodes requests and encodes responses,
while :meth:`ModelManager.infer` awaits the batcher's or asyncio's worker
threads for the compute, so concurrent requests meet in the same batches.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

import fogline
from fogline.errors import (
    ConfigError,
    DeadlineExceeded,
    Dropped,
    FoglineError,
    ManifestError,
    ModelFormatError,
    ModelNotFound,
    ModelNotReady,
    NotRunning,
    Overloaded,
    SignatureMismatch,
)
from fogline.oip import datatype_of_output, encode
from fogline.serve._grpc_tensors import read_inputs, requested_outputs
from fogline.serve._manager import ModelManager

__all__ = ["DEFAULT_MAX_MESSAGE_BYTES", "EXTENSIONS", "InferenceService", "ServerTLS", "start_grpc"]

log = logging.getLogger("fogline.serve")

#: Largest request or response message, both ways (gRPC answers RESOURCE_EXHAUSTED above it).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Protocol extensions this endpoint implements (binary_tensor_data is HTTP's).
EXTENSIONS = ("model_repository", "model_configuration")

_STATUS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Any], ...] = (
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    ((ModelNotReady, NotRunning), grpc.StatusCode.UNAVAILABLE),
    ((Overloaded, Dropped), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ((DeadlineExceeded, asyncio.TimeoutError, TimeoutError), grpc.StatusCode.DEADLINE_EXCEEDED),
    (
        (SignatureMismatch, ConfigError, ManifestError, ModelFormatError),
        grpc.StatusCode.INVALID_ARGUMENT,
    ),
)


class _Unauthenticated(Exception):
    """The call carried no bearer token, or the wrong one."""


@dataclass(frozen=True)
class ServerTLS:
    """TLS for the gRPC endpoint: a PEM certificate chain and its private key.

    With ``client_ca`` the server also asks every client for a certificate
    signed by that CA (mutual TLS) and refuses those without one. The files
    are read when the server starts; a missing one is a :class:`ConfigError`.

    >>> ServerTLS("server.pem", "server.key").client_ca is None
    True
    """

    cert_file: str | Path
    key_file: str | Path
    client_ca: str | Path | None = None

    def credentials(self) -> Any:
        """The ``grpc.ServerCredentials`` these files describe."""

        def read(path: str | Path, what: str) -> bytes:
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"gRPC TLS {what} {path}: {exc.strerror or exc}") from exc

        pair = (read(self.key_file, "key"), read(self.cert_file, "certificate"))
        ca = read(self.client_ca, "client CA") if self.client_ca is not None else None
        return grpc.ssl_server_credentials(
            [pair], root_certificates=ca, require_client_auth=ca is not None
        )


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])


def _rpc(method: _Handler) -> _Handler:
    """Check the bearer token, run the call, and turn any failure into a gRPC status."""
    name = method.__name__

    @functools.wraps(method)
    async def call(self: InferenceService, request: Any, context: Any) -> Any:
        try:
            self._authenticate(context)
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise  # the client went away: grpc.aio finishes the call itself
        except Exception as exc:
            code, details = _status_of(exc, name)
        await context.abort(code, details)

    return call  # type: ignore[return-value]


def _status_of(exc: Exception, method: str) -> tuple[Any, str]:
    if isinstance(exc, _Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED, str(exc)
    for kinds, code in _STATUS:
        if isinstance(exc, kinds):
            return code, str(exc) or f"{method}: {type(exc).__name__}"
    if isinstance(exc, FoglineError):
        log.error("gRPC %s: %s", method, exc)
        return grpc.StatusCode.INTERNAL, str(exc)
    log.exception("gRPC %s failed unexpectedly", method)
    return grpc.StatusCode.INTERNAL, f"{method}: internal error ({type(exc).__name__}: {exc})"


def _unimplemented(method: str, why: str) -> Callable[..., Awaitable[None]]:
    async def refuse(self: InferenceService, request: Any, context: Any) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"fogline does not implement {method}: {why}"
        )

    refuse.__name__ = method
    refuse.__doc__ = f"``{method}`` is not implemented: {why}."
    return refuse


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """``inference.GRPCInferenceService`` over a :class:`ModelManager`.

    ``token``, when set, is the bearer token every call must carry in its
    ``authorization`` metadata (``Bearer <token>``); health calls included,
    so an open port tells nothing to whoever lacks it.
    """

    def __init__(self, manager: ModelManager, *, token: str | None = None) -> None:
        self.manager = manager
        self._expected = f"Bearer {token}".encode() if token else None

    def _authenticate(self, context: Any) -> None:
        if self._expected is None:
            return
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else bytes(value)
                if hmac.compare_digest(given, self._expected):
                    return
                raise _Unauthenticated("the bearer token in 'authorization' is not valid")
        raise _Unauthenticated("this server needs 'authorization: Bearer <token>' metadata")

    # --- health and metadata --------------------------------------------------------------

    @_rpc
    async def ServerLive(self, request: Any, context: Any) -> Any:
        """Live once the manager has started (the process answers, so it is up)."""
        return service_pb2.ServerLiveResponse(live=self.manager.live)

    @_rpc
    async def ServerReady(self, request: Any, context: Any) -> Any:
        """Ready when every model that should be loaded has a ready version."""
        return service_pb2.ServerReadyResponse(ready=self.manager.ready)

    @_rpc
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        version = getattr(fogline, "__version__", "0")
        return service_pb2.ServerMetadataResponse(
            name="fogline", version=version, extensions=list(EXTENSIONS)
        )

    @_rpc
    async def ModelReady(self, request: Any, context: Any) -> Any:
        """``ready=False`` for a model or version that is unknown or not loaded, not an error:
        a readiness probe asks a yes/no question."""
        try:
            self.manager.get(request.name, request.version)
        except (ModelNotFound, ModelNotReady):
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    @_rpc
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        meta = self.manager.metadata(request.name, request.version)
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        return service_pb2.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )

    @_rpc
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        """What fogline acts on of the version's configuration, as Triton's ModelConfig."""
        loaded = self.manager.get(request.name, request.version)
        config = loaded.config
        platform = self.manager.metadata(request.name, loaded.version)["platform"]
        message = model_config_pb2.ModelConfig(
            name=config.name,
            platform=platform,
            backend=loaded.engine.backend,
            max_batch_size=config.max_batch_size,
            input=[
                model_config_pb2.ModelInput(
                    name=t.name, data_type=_config_type(t.datatype), dims=list(t.dims)
                )
                for t in config.inputs
            ],
            output=[
                model_config_pb2.ModelOutput(
                    name=t.name, data_type=_config_type(t.datatype), dims=list(t.dims)
                )
                for t in config.outputs
            ],
            instance_group=[
                model_config_pb2.ModelInstanceGroup(
                    count=config.instance_count, kind=model_config_pb2.ModelInstanceGroup.KIND_CPU
                )
            ],
        )
        if config.dynamic_batching:
            message.dynamic_batching.max_queue_delay_microseconds = config.max_queue_delay_us
            message.dynamic_batching.preferred_batch_size.extend(config.preferred_batch_sizes)
        policy = config.version_policy
        if policy.kind == "all":
            message.version_policy.all.SetInParent()
        elif policy.kind == "specific":
            message.version_policy.specific.versions.extend(policy.versions)
        else:
            message.version_policy.latest.num_versions = policy.count
        return service_pb2.ModelConfigResponse(config=message)

    @_rpc
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        """Counts of inferences and engine runs per loaded version (timings are on /metrics)."""
        if request.name:
            names = [request.name]
        else:
            names = sorted({row.name for row in self.manager.index() if row.state == "READY"})
        response = service_pb2.ModelStatisticsResponse()
        for name in names:
            if request.version:
                chosen = [self.manager.get(name, request.version)]
            else:
                chosen = [loaded for _, loaded in sorted(self.manager.versions(name).items())]
            for loaded in chosen:
                entry = response.model_stats.add(name=name, version=str(loaded.version))
                if loaded.batcher is not None:
                    stats = loaded.batcher.stats
                    entry.inference_count = stats.completed
                    entry.execution_count = stats.batches
        return response

    # --- inference ------------------------------------------------------------------------

    @_rpc
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        name, version = request.model_name, request.model_version
        wanted = requested_outputs(request)
        loaded = self.manager.get(name, version)
        known = [t.name for t in loaded.config.outputs]
        unknown = [o for o in wanted if known and o not in known]
        if unknown:
            raise SignatureMismatch(
                f"unknown output(s) {', '.join(unknown)}; model {name!r} has {', '.join(known)}"
            )
        inputs = read_inputs(request)
        try:
            loaded, outputs = await self.manager.infer(name, version, inputs)
        except (asyncio.TimeoutError, TimeoutError):
            raise DeadlineExceeded(
                f"model {name!r} did not answer within {self.manager.timeout_s} s"
            ) from None
        response = service_pb2.ModelInferResponse(
            model_name=name, model_version=str(loaded.version), id=request.id
        )
        for output in wanted or list(outputs):
            if output not in outputs:
                raise SignatureMismatch(f"model {name!r} did not produce output {output!r}")
            array = outputs[output]
            datatype = datatype_of_output(array, output)
            response.outputs.add(name=output, datatype=datatype, shape=list(array.shape))
            response.raw_output_contents.append(encode(array, datatype))
        return response

    # --- the model repository extension ---------------------------------------------------

    @_rpc
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        """Every model of the repository with each version's state (``ready`` = READY only).

        fogline serves one repository, so ``repository_name`` is not used.
        """
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        rows = [
            index(
                name=row.name,
                version=str(row.version) if row.version else "",
                state=row.state,
                reason=row.reason,
            )
            for row in self.manager.index()
            if not request.ready or row.state == "READY"
        ]
        return service_pb2.RepositoryIndexResponse(models=rows)

    @_rpc
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        """Load or reload a model from the repository; new versions warm up before serving."""
        if request.parameters:
            keys = ", ".join(sorted(request.parameters))
            raise ConfigError(
                f"load parameters ({keys}) are not supported: put the config and files in the "
                "repository"
            )
        await self.manager.load(request.model_name)
        return service_pb2.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        """Unload every version once the requests inside have finished.

        ``unload_dependents`` is accepted and means nothing here: fogline has no ensembles.
        """
        await self.manager.unload(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()

    # --- the rest of the service ----------------------------------------------------------

    ModelStreamInfer = _unimplemented("ModelStreamInfer", "use ModelInfer")
    TraceSetting = _unimplemented("TraceSetting", "tracing is not supported")
    LogSettings = _unimplemented("LogSettings", "set the log level when starting the server")
    SystemSharedMemoryStatus = _unimplemented("SystemSharedMemoryStatus", "no shared memory")
    SystemSharedMemoryRegister = _unimplemented("SystemSharedMemoryRegister", "no shared memory")
    SystemSharedMemoryUnregister = _unimplemented(
        "SystemSharedMemoryUnregister", "no shared memory"
    )
    CudaSharedMemoryStatus = _unimplemented("CudaSharedMemoryStatus", "no CUDA shared memory")
    CudaSharedMemoryRegister = _unimplemented("CudaSharedMemoryRegister", "no CUDA shared memory")
    CudaSharedMemoryUnregister = _unimplemented(
        "CudaSharedMemoryUnregister", "no CUDA shared memory"
    )


# --- requests and responses ---------------------------------------------------------------


def _config_type(datatype: str) -> int:
    """An OIP datatype as Triton's ``DataType`` enum (BYTES is TYPE_STRING there)."""
    return int(
        model_config_pb2.DataType.Value(
            "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"
        )
    )


# --- the server ---------------------------------------------------------------------------


async def start_grpc(
    manager: ModelManager,
    host: str,
    port: int,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    tls: ServerTLS | None = None,
    token: str | None = None,
) -> tuple[Any, int]:
    """Start a ``grpc.aio`` server for ``manager`` on ``host:port``; return it and its port.

    Port 0 picks a free port. ``max_message_bytes`` bounds every request and
    response (gRPC refuses a bigger one with RESOURCE_EXHAUSTED). ``tls``
    serves over TLS instead of plaintext; ``token`` requires a bearer token
    on every call. Stop the server with ``await server.stop(grace)``.
    Raises :class:`ConfigError` when the address cannot be bound or a TLS file
    cannot be read.
    """
    if max_message_bytes <= 0:
        raise ConfigError(f"max_message_bytes must be positive; got {max_message_bytes}")
    credentials = tls.credentials() if tls is not None else None
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # Without this a second server on a busy port would share it silently.
            ("grpc.so_reuseport", 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceService(manager, token=token), server
    )
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        if credentials is not None:
            bound = server.add_secure_port(address, credentials)
        else:
            bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"gRPC cannot listen on {address}: {exc}") from exc
    if not bound:
        raise ConfigError(f"gRPC cannot listen on {address}: in use or not available")
    await server.start()
    return server, int(bound)
