"""Where a ZeroMQ socket binds or connects: :class:`ZmqEndpoint`, a frozen value object.

It raises ``ValueError`` like every fogline value object, so pydantic specs
report a malformed endpoint with its key path. Nothing here touches the
network (:func:`~fogline.transport.zmq.probe_bind` does, at check time).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BeforeValidator, PlainSerializer

Scheme = Literal["tcp", "ipc"]
#: The socket patterns fogline uses: PUSH/PULL (work), PUB/SUB (broadcast).
Pattern = Literal["push", "pull", "pub", "sub"]

_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_MAX_IPC_PATH = 107  # sun_path on Linux, less its terminating NUL


@dataclass(frozen=True)
class ZmqEndpoint:
    """``tcp://host:port`` or ``ipc://path``, as ZeroMQ writes them.

    ``host`` may be ``*`` (every interface), which only a socket that binds
    can use; a port is 1 to 65535 (the peer must know it, so no ``*``).

    >>> ZmqEndpoint.parse("tcp://127.0.0.1:5557")
    ZmqEndpoint(scheme='tcp', host='127.0.0.1', port=5557, path=None)
    >>> str(ZmqEndpoint.parse("tcp://[::1]:5557")), str(ZmqEndpoint.parse("ipc:///tmp/cam.sock"))
    ('tcp://[::1]:5557', 'ipc:///tmp/cam.sock')
    >>> ZmqEndpoint.parse("tcp://127.0.0.1")
    Traceback (most recent call last):
    ...
    ValueError: a tcp endpoint is tcp://host:port, got 'tcp://127.0.0.1' (no port)
    """

    scheme: Scheme
    host: str | None = None
    port: int | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.scheme == "tcp":
            if self.path is not None:
                raise ValueError("a tcp endpoint has a host and a port, not a path")
            if not self.host or not (self.host == "*" or _is_host(self.host)):
                raise ValueError(f"a tcp endpoint needs a host name or address, got {self.host!r}")
            port = self.port
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise ValueError(f"a port is 1 to 65535, got {port!r}")
        elif self.scheme == "ipc":
            if self.host is not None or self.port is not None:
                raise ValueError("an ipc endpoint has a path, not a host or port")
            if not self.path or "\x00" in self.path:
                raise ValueError(f"an ipc endpoint needs a file path, got {self.path!r}")
            if len(self.path.encode()) > _MAX_IPC_PATH:
                raise ValueError(f"an ipc path is at most {_MAX_IPC_PATH} bytes: {self.path!r}")
        else:
            raise ValueError(f"a zmq endpoint is tcp:// or ipc://, got {self.scheme!r}")

    @classmethod
    def parse(cls, text: str) -> ZmqEndpoint:
        if not isinstance(text, str):
            raise ValueError(f"a zmq endpoint is a string, got {type(text).__name__}")
        text = text.strip()
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in ("tcp", "ipc"):
            raise ValueError(f"a zmq endpoint starts with tcp:// or ipc://, got {text!r}")
        if scheme == "ipc":
            return cls("ipc", path=rest)
        if rest.startswith("["):  # [v6 address]:port
            host, bracket, tail = rest[1:].partition("]")
            if not bracket or not tail.startswith(":"):
                raise ValueError(f"a tcp endpoint is tcp://[v6-address]:port, got {text!r}")
            port_text = tail[1:]
        else:
            host, colon, port_text = rest.rpartition(":")
            if not colon:
                raise ValueError(f"a tcp endpoint is tcp://host:port, got {text!r} (no port)")
        if not port_text.isdigit():
            raise ValueError(f"a tcp endpoint's port is a number, got {port_text!r} in {text!r}")
        return cls("tcp", host=host, port=int(port_text))

    @property
    def any_interface(self) -> bool:
        """True for ``tcp://*:port``: only a socket that binds can use it."""
        return self.host == "*"

    def __str__(self) -> str:
        if self.scheme == "ipc":
            return f"ipc://{self.path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return bool(_HOST.match(text))
    return True


def _parse(value: object) -> object:
    return ZmqEndpoint.parse(value) if isinstance(value, str) else value


#: A pydantic field type: parsed from a YAML string, written back as one.
ZmqEndpointField = Annotated[ZmqEndpoint, BeforeValidator(_parse), PlainSerializer(str)]
