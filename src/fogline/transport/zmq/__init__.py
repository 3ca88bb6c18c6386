"""ZeroMQ for device-to-device links without a broker: endpoints, sockets, CURVE keys.

* :class:`ZmqEndpoint` (``tcp://host:port``, ``ipc://path``), a frozen value
  object that validates itself, and its pydantic field type
  :data:`ZmqEndpointField`; :func:`probe_bind` (bind, then close: is the
  endpoint free?).
* :class:`ZmqSocket`: PUSH/PULL (work, each message to one peer) and
  PUB/SUB (broadcast, filtered by topic prefix), each with its own context,
  bounded queues (high-water mark), a linger on close, and a monitor that
  records failed handshakes.
* CURVE (authentication and encryption): :class:`KeyPair` and
  :func:`write_keypair` (ZeroMQ certificate files, the secret one 0600),
  :class:`CurveServer` (secret key + allowed client keys, enforced by a ZAP
  authenticator) and :class:`CurveClient` (key pair + the server's key).

Built on pyzmq (the ``zmq`` extra). Only the sockets need it, and they
load it when first named (:func:`__getattr__`): a pipeline spec with a zmq
endpoint and key files validates, and says what to install, on a device
without pyzmq. Concurrency and error mapping: see :class:`ZmqSocket`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fogline.transport.zmq._curve import Curve, CurveClient, CurveServer, KeyPair, write_keypair
from fogline.transport.zmq._endpoint import Pattern, ZmqEndpoint, ZmqEndpointField

if TYPE_CHECKING:
    from fogline.transport.zmq._socket import HandshakeFailure, ZmqSocket, needs_curve, probe_bind

_SOCKETS = ("HandshakeFailure", "ZmqSocket", "needs_curve", "probe_bind")


def __getattr__(name: str) -> Any:
    """The socket names, imported (with pyzmq) when first asked for."""
    if name in _SOCKETS:
        from fogline.transport.zmq import _socket

        return getattr(_socket, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Curve",
    "CurveClient",
    "CurveServer",
    "HandshakeFailure",
    "KeyPair",
    "Pattern",
    "ZmqEndpoint",
    "ZmqEndpointField",
    "ZmqSocket",
    "needs_curve",
    "probe_bind",
    "write_keypair",
]
