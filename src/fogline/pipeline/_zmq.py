"""The pipeline's side of ZeroMQ: the ``curve:`` block of a zmq source or sink.

Everything else (endpoints, sockets, keys) is :mod:`fogline.transport.zmq`;
this is the typed YAML that names the key files, checked when the
pipeline loads: a missing or malformed key file is refused with its key
path (``sources[0].curve.secret_key: no such file ...``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator, model_validator

from fogline.errors import ConfigError
from fogline.pipeline._base import ExistingPath, Spec
from fogline.pipeline._optional import optional
from fogline.transport.zmq import Curve, CurveClient, CurveServer, KeyPair, ZmqEndpoint


class CurveSpec(Spec):
    """CURVE keys: ``secret_key`` (this side's ``.key_secret``), and ``allow`` or ``server_key``.

    A server lists the public keys (``.key`` files) of the clients it lets
    in under ``allow``; a client names the server's public key file in
    ``server_key``. Either side may be the one that binds.

    >>> import tempfile
    >>> from fogline.transport.zmq import write_keypair
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = write_keypair(folder, "rx"), write_keypair(folder, "cam")
    >>> spec = CurveSpec(secret_key=folder / "rx.key_secret", allow=[folder / "cam.key"])
    >>> type(spec.curve()).__name__
    'CurveServer'
    """

    secret_key: ExistingPath
    allow: list[ExistingPath] | None = None
    server_key: ExistingPath | None = None

    @model_validator(mode="after")
    def _one_role(self) -> CurveSpec:
        if (self.allow is None) == (self.server_key is None):
            raise ValueError(
                "give `allow` (a server: the client public keys it accepts) "
                "or `server_key` (a client: the server's public key), not both or neither"
            )
        if self.allow is not None and not self.allow:
            raise ValueError("`allow` lists at least one client public key file")
        return self

    @field_validator("secret_key")
    @classmethod
    def _secret(cls, path: Path) -> Path:
        return _readable(path, secret=True)

    @field_validator("server_key")
    @classmethod
    def _public(cls, path: Path | None) -> Path | None:
        return None if path is None else _readable(path)

    @field_validator("allow")
    @classmethod
    def _publics(cls, paths: list[Path] | None) -> list[Path] | None:
        return None if paths is None else [_readable(path) for path in paths]

    def curve(self) -> Curve:
        """The keys read from their files (:class:`ConfigError` when one is not a key file)."""
        keys = KeyPair.load(Path(self.secret_key), secret=True)
        if self.server_key is not None:
            return CurveClient(keys, KeyPair.load(Path(self.server_key)).public)
        allowed = frozenset(KeyPair.load(Path(path)).public for path in self.allow or ())
        return CurveServer(keys, allowed)


def _readable(path: Path, *, secret: bool = False) -> Path:
    try:
        KeyPair.load(path, secret=secret)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    return path


def probe_endpoint(endpoint: ZmqEndpoint, bind: bool) -> None:
    """At check time: pyzmq is installed, and an endpoint this side binds is free (bind, close).

    A connecting side has nothing to probe: ZeroMQ connects when the peer
    comes up, whenever that is.
    """
    optional("zmq")  # a sink has no `needs` check: say what to install here
    if bind:
        from fogline.transport.zmq import probe_bind

        try:
            probe_bind(endpoint)
        except ConfigError as exc:
            raise ConfigError(f"endpoint: {exc}") from exc


def resolve_bind(endpoint: ZmqEndpoint, bind: bool | None, default: bool) -> bool:
    """Whether the socket binds: ``bind`` when given, else ``default``; ``ValueError`` for ``*``."""
    binds = default if bind is None else bind
    if endpoint.any_interface and not binds:
        raise ValueError(
            f"endpoint {endpoint} uses '*', which only a socket that binds can (bind: true)"
        )
    return binds
