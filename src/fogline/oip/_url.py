"""Where a remote model lives: an Open Inference Protocol URL, parsed and checked once.

Two forms, one per transport, both naming the model and optionally its
version (without one the server picks, by its version policy)::

    http://HOST:PORT/v2/models/NAME[/versions/VERSION]     (also https://)
    grpc://HOST:PORT/NAME[/versions/VERSION]               (also grpcs://)

The HTTP form is the protocol's own path for the model, so the URL a user
copies from ``curl`` works as is; gRPC has no path, so its form is the
scheme, the address and the model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from fogline.errors import ConfigError

#: The forms :class:`ModelUrl` accepts, for error messages and docs.
FORMS = (
    "http://HOST:PORT/v2/models/NAME[/versions/VERSION]",
    "grpc://HOST:PORT/NAME[/versions/VERSION]",
)
_SCHEMES = {"http": "http", "https": "http", "grpc": "grpc", "grpcs": "grpc"}
_NAME = r"[A-Za-z0-9_.\-]+"
_HTTP_PATH = re.compile(rf"/v2/models/(?P<name>{_NAME})(?:/versions/(?P<version>[0-9]+))?/?")
_GRPC_PATH = re.compile(rf"/(?P<name>{_NAME})(?:/versions/(?P<version>[0-9]+))?/?")


@dataclass(frozen=True)
class ModelUrl:
    """A remote model's address: protocol, host, port, model name and optional version.

    >>> url = ModelUrl.parse("http://127.0.0.1:8000/v2/models/digits/versions/2")
    >>> url.protocol, url.address, url.name, url.version
    ('http', '127.0.0.1:8000', 'digits', '2')
    >>> ModelUrl.parse("grpc://gpu-box:8001/digits").protocol
    'grpc'
    >>> ModelUrl.parse("mqtt://broker/digits")
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: 'mqtt://broker/digits' is not an Open Inference Protocol model URL: the scheme must be http, https, grpc or grpcs; use http://HOST:PORT/v2/models/NAME[/versions/VERSION] or grpc://HOST:PORT/NAME[/versions/VERSION]
    """

    scheme: str
    host: str
    port: int
    name: str
    version: str | None = None

    @property
    def protocol(self) -> str:
        """``http`` or ``grpc``."""
        return _SCHEMES[self.scheme]

    @property
    def secure(self) -> bool:
        return self.scheme in ("https", "grpcs")

    @property
    def address(self) -> str:
        """``host:port``, as tritonclient takes it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        version = f"/versions/{self.version}" if self.version else ""
        path = "/v2/models/" if self.protocol == "http" else "/"
        return f"{self.scheme}://{self.address}{path}{self.name}{version}"

    @classmethod
    def parse(cls, text: str) -> ModelUrl:
        """Parse ``text``; :class:`ConfigError` showing the accepted forms for anything else."""

        def refuse(why: str) -> ConfigError:
            return ConfigError(
                f"{text!r} is not an Open Inference Protocol model URL: {why}; "
                f"use {FORMS[0]} or {FORMS[1]}"
            )

        if not isinstance(text, str):
            raise ConfigError(f"a model URL is a string, got {type(text).__name__}")
        parts = urlsplit(text.strip())
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise refuse("the scheme must be http, https, grpc or grpcs")
        try:
            port = parts.port
        except ValueError:
            raise refuse("the port is not a number from 0 to 65535") from None
        if not parts.hostname:
            raise refuse("it names no host")
        if port is None:
            raise refuse("it names no port (fogline serve: HTTP 8000, gRPC 8001)")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise refuse("it has a query, a fragment or credentials")
        pattern = _HTTP_PATH if _SCHEMES[scheme] == "http" else _GRPC_PATH
        match = pattern.fullmatch(parts.path)
        if match is None:
            raise refuse(f"the path {parts.path or '(none)'!r} does not name a model")
        return cls(scheme, parts.hostname, port, match["name"], match["version"])
