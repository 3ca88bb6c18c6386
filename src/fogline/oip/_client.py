"""A client :class:`~fogline.model.Engine` that runs a model on a remote Open Inference Protocol server.

Any server that speaks the protocol (``fogline serve``, Triton, KServe) over
HTTP or gRPC, through ``tritonclient`` (the ``serve`` extra). The signature
comes from the server's model metadata, so ``fogline bench``, the optimizer's
measurements and the pipeline's ``offload`` step treat a remote model like a
local file.

Every call has a deadline (``timeout_s``): tritonclient's ``network_timeout``
and ``connection_timeout`` over HTTP, ``client_timeout`` over gRPC (without
it a gRPC call waits for ever on a server that is paused). Failures are
mapped into :mod:`fogline.errors`, the most specific first, so a caller can
tell them apart::

    Unreachable   no connection (refused, no route, the name does not resolve)
    TimedOut      connected, but no answer before the deadline
    Refused       the server answered with an error (no such model, bad input, 5xx)
    BadAnswer     an answer that is not the protocol's, or outputs that differ from
                  the model's own metadata

Concurrency: tritonclient's HTTP client runs on gevent, whose hub belongs to
one thread, so each calling thread gets its own client (created on its first
call); gRPC clients are made the same way for one code path. ``close`` closes
them all.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from fogline.errors import (
    BackendUnavailable,
    BadAnswer,
    FoglineError,
    Refused,
    SignatureMismatch,
    TimedOut,
    TransportError,
    Unreachable,
)
from fogline.model import Signature, TensorSpec
from fogline.oip._datatypes import datatype_of, dtype_name
from fogline.oip._url import ModelUrl

#: gRPC channel options. Passing any replaces tritonclient's defaults, so its message size
#: limits are repeated here; the reconnect back-off is capped so that a server that comes
#: back is used within about a second (gRPC's default back-off grows to 120 s).
GRPC_CHANNEL_ARGS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
_GRPC_UNREACHABLE = ("UNAVAILABLE",)
_GRPC_TIMEOUT = ("DEADLINE_EXCEEDED",)


@dataclass(frozen=True)
class Answer:
    """One remote inference: the outputs, and which model and version computed them."""

    outputs: dict[str, np.ndarray]
    model: str
    version: str


def signature_from_metadata(metadata: Mapping[str, Any], where: str = "the server") -> Signature:
    """The :class:`Signature` a model metadata answer describes (``-1`` dims are dynamic).

    >>> meta = {"name": "digits", "inputs": [{"name": "pixels", "datatype": "FP32",
    ...         "shape": [-1, 1, 8, 8]}], "outputs": [{"name": "logits", "datatype": "FP32",
    ...         "shape": [-1, 10]}]}
    >>> signature_from_metadata(meta).inputs[0]
    TensorSpec(name='pixels', dtype='float32', shape=(None, 1, 8, 8))
    """
    try:

        def specs(key: str) -> tuple[TensorSpec, ...]:
            entries = metadata[key]
            if not isinstance(entries, list) or not entries:
                raise ValueError(f"`{key}` is not a non-empty list")
            return tuple(
                TensorSpec(
                    str(entry["name"]),
                    dtype_name(str(entry["datatype"])),
                    tuple(None if int(d) < 0 else int(d) for d in entry["shape"]),
                )
                for entry in entries
            )

        return Signature(
            specs("inputs"), specs("outputs"), producer=str(metadata.get("platform", ""))
        )
    except (KeyError, TypeError, ValueError, SignatureMismatch) as exc:
        raise BadAnswer(f"{where}: the model metadata is not the protocol's: {exc}") from exc


def signature_problem(local: Signature, remote: Signature) -> str | None:
    """Why ``remote`` cannot stand in for ``local`` (names, dtypes, fixed dims), or None.

    A dynamic dimension on either side fits any size.

    >>> from fogline.model import TensorSpec as T
    >>> a = Signature((T("x", "float32", ("batch", 4)),), (T("y", "float32", ("batch", 2)),))
    >>> b = Signature((T("x", "float32", (None, 4)),), (T("y", "float32", (None, 3)),))
    >>> signature_problem(a, a) is None, signature_problem(a, b)
    (True, "output 'y': the remote model gives float32 [?, 3], the local one float32 [batch, 2]")
    """
    for kind, mine, theirs in (
        ("input", local.inputs, remote.inputs),
        ("output", local.outputs, remote.outputs),
    ):
        by_name = {spec.name: spec for spec in theirs}
        for spec in mine:
            other = by_name.get(spec.name)
            if other is None:
                names = ", ".join(s.name for s in theirs)
                return f"the remote model has no {kind} {spec.name!r} (it has {names})"
            fits = spec.dtype == other.dtype and len(spec.shape) == len(other.shape)
            fits = fits and all(
                not isinstance(a, int) or not isinstance(b, int) or a == b
                for a, b in zip(spec.shape, other.shape, strict=True)
            )
            if not fits:
                verb = "takes" if kind == "input" else "gives"
                return (
                    f"{kind} {spec.name!r}: the remote model {verb} {other.dtype} "
                    f"{other.describe_shape()}, the local one {spec.dtype} {spec.describe_shape()}"
                )
        if kind == "input" and len(theirs) != len(mine):
            extra = sorted({s.name for s in theirs} - {s.name for s in mine})
            return f"the remote model also takes {', '.join(extra)}, which the local one does not"
    return None


class RemoteEngine:
    """An :class:`~fogline.model.Engine` whose model runs on an Open Inference Protocol server.

    Nothing is sent until it is used: the signature is read from the
    server's model metadata on first access (:meth:`connect` does it at
    once), so a pipeline can start while its remote is down.

    >>> engine = RemoteEngine("grpc://127.0.0.1:1/digits", timeout_s=0.5)
    >>> engine.backend, engine.precision, engine.device
    ('oip-grpc', 'remote', '127.0.0.1:1')
    >>> engine.connect()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fogline.errors.Unreachable: grpc://127.0.0.1:1/digits: model metadata: no connection: ...
    >>> engine.close()
    """

    precision = "remote"

    def __init__(
        self,
        url: str | ModelUrl,
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: float | None = None,
    ) -> None:
        self.url = url if isinstance(url, ModelUrl) else ModelUrl.parse(url)
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive; got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s or timeout_s)
        self.backend = f"oip-{self.url.protocol}"
        self.device = self.url.address
        self._module = _tritonclient(self.url.protocol)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Any] = []
        self._metadata: dict[str, Any] | None = None
        self._signature: Signature | None = None
        self._closed = False

    # --- what the remote model is ------------------------------------------------------

    def connect(self) -> RemoteEngine:
        """Read the model's metadata now (raises what :meth:`metadata` raises); returns self."""
        _ = self.signature
        return self

    @property
    def signature(self) -> Signature:
        if self._signature is None:
            self._signature = signature_from_metadata(self.metadata(), str(self.url))
        return self._signature

    @property
    def name(self) -> str:
        return str((self._metadata or {}).get("name") or self.url.name)

    @property
    def version(self) -> str:
        """The version asked for, else the newest the server reports (``""`` before contact)."""
        if self.url.version:
            return self.url.version
        versions = (self._metadata or {}).get("versions") or []
        numeric = [str(v) for v in versions if str(v).isdigit()]
        return max(numeric, key=int) if numeric else ""

    def metadata(self) -> dict[str, Any]:
        """The model metadata answer as a dict (and remembered for ``name`` and ``version``)."""
        client = self._client()
        version = self.url.version or ""
        with self._mapped("model metadata"):
            if self.url.protocol == "http":
                answer = client.get_model_metadata(self.url.name, version)
            else:
                answer = client.get_model_metadata(
                    self.url.name, version, as_json=True, client_timeout=self.timeout_s
                )
        if not isinstance(answer, dict):
            raise BadAnswer(f"{self.url}: the model metadata is not a JSON object")
        self._metadata = answer
        return answer

    # --- running it ---------------------------------------------------------------------

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.infer(inputs).outputs

    def infer(self, inputs: Mapping[str, np.ndarray]) -> Answer:
        """Run one batch remotely within the deadline; outputs are checked against the signature."""
        signature = self.signature
        signature.check_feeds(inputs, where=str(self.url))
        module = self._module
        wire = []
        for spec in signature.inputs:
            array = np.asarray(inputs[spec.name])
            entry = module.InferInput(spec.name, list(array.shape), datatype_of(spec.dtype))
            if self.url.protocol == "http":
                entry.set_data_from_numpy(array, binary_data=True)
            else:
                entry.set_data_from_numpy(array)
            wire.append(entry)
        client = self._client()
        with self._mapped("inference"):
            if self.url.protocol == "http":
                wanted = [
                    module.InferRequestedOutput(n, binary_data=True) for n in signature.output_names
                ]
                result = client.infer(
                    self.url.name, wire, model_version=self.url.version or "", outputs=wanted
                )
                response = result.get_response()
            else:
                result = client.infer(
                    self.url.name,
                    wire,
                    model_version=self.url.version or "",
                    client_timeout=self.timeout_s,
                )
                response = result.get_response(as_json=True)
        return self._answer(result, response, len(next(iter(inputs.values()))))

    def _answer(self, result: Any, response: Any, batch: int) -> Answer:
        where = str(self.url)
        if not isinstance(response, dict):
            raise BadAnswer(f"{where}: the answer is not a JSON object")
        outputs: dict[str, np.ndarray] = {}
        for spec in self.signature.outputs:
            try:
                array = result.as_numpy(spec.name)
            except Exception as exc:  # tritonclient's own parsing of a damaged answer
                raise BadAnswer(f"{where}: output {spec.name!r} cannot be read: {exc}") from exc
            if array is None:
                raise BadAnswer(f"{where}: the answer has no output {spec.name!r}")
            dtype_ok = spec.dtype == "str" and array.dtype.kind in "OSU"
            dtype_ok = dtype_ok or array.dtype == spec.numpy_dtype
            if (
                not dtype_ok
                or not spec.accepts_shape(tuple(array.shape))
                or (array.ndim and array.shape[0] != batch)
            ):
                raise BadAnswer(
                    f"{where}: output {spec.name!r} is {array.dtype} {list(array.shape)} for a "
                    f"batch of {batch}; the model's metadata says {spec.dtype} "
                    f"{spec.describe_shape()}"
                )
            outputs[spec.name] = array
        model = str(response.get("model_name") or self.name)
        version = str(response.get("model_version") or self.version)
        return Answer(outputs, model, version)

    # --- clients and errors -------------------------------------------------------------

    def _client(self) -> Any:
        if self._closed:
            raise TransportError(f"{self.url}: the engine is closed")
        client = getattr(self._local, "client", None)
        if client is None:
            module = self._module
            if self.url.protocol == "http":
                client = module.InferenceServerClient(
                    self.url.address,
                    connection_timeout=self.connect_timeout_s,
                    network_timeout=self.timeout_s,
                    ssl=self.url.secure,
                )
            else:
                client = module.InferenceServerClient(
                    self.url.address,
                    ssl=self.url.secure,
                    channel_args=list(GRPC_CHANNEL_ARGS),
                )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def _mapped(self, what: str) -> _Mapped:
        return _Mapped(self, what)

    def _forget_client(self) -> None:
        """Drop this thread's client after a broken connection (HTTP reconnects on the next)."""
        client = getattr(self._local, "client", None)
        if client is not None and self.url.protocol == "http":
            self._local.client = None
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            _close_quietly(client)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            _close_quietly(client)


class _Mapped:
    """Maps what tritonclient, gevent and sockets raise into the error tree."""

    def __init__(self, engine: RemoteEngine, what: str) -> None:
        self.engine, self.what = engine, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, FoglineError):
            return False
        engine = self.engine
        where = f"{engine.url}: {self.what}"
        mapped = _classify(engine, exc, where)
        if mapped is None:
            return False
        if not isinstance(mapped, Refused | BadAnswer):
            engine._forget_client()
        raise mapped from exc


def _classify(engine: RemoteEngine, exc: BaseException, where: str) -> FoglineError | None:
    timeout = engine.timeout_s
    if isinstance(exc, socket.timeout | TimeoutError) or type(exc).__name__ == "Timeout":
        return TimedOut(f"{where}: no answer within {timeout:g} s")
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return Unreachable(f"{where}: no connection: {exc}")
    if isinstance(exc, ConnectionError | OSError):
        return Unreachable(f"{where}: the connection failed: {exc}")
    status = getattr(exc, "status", None)
    if callable(status):  # tritonclient's InferenceServerException
        code = str(status() or "")
        message = exc.message() if callable(getattr(exc, "message", None)) else str(exc)  # type: ignore[attr-defined]
        if any(c in code for c in _GRPC_TIMEOUT) or "timed out" in str(message).lower():
            return TimedOut(f"{where}: no answer within {timeout:g} s")
        if any(c in code for c in _GRPC_UNREACHABLE):
            return Unreachable(f"{where}: no connection: {message}")
        if code.isdigit() or code.startswith("StatusCode."):
            return Refused(
                f"{where}: the server said {code.removeprefix('StatusCode.')}: {message}"
            )
        return BadAnswer(f"{where}: {message}")
    if isinstance(exc, ValueError | KeyError | TypeError | UnicodeDecodeError):
        return BadAnswer(f"{where}: the answer is not the protocol's: {exc}")
    return None


def _close_quietly(client: Any) -> None:
    with contextlib.suppress(Exception):  # closing a broken connection may fail again
        client.close()


def _tritonclient(protocol: str) -> Any:
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
    except ImportError as exc:
        raise BackendUnavailable(
            "a remote model needs tritonclient; install it with: pip install 'fogline[serve]'"
        ) from exc
    return module
