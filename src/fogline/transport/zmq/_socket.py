"""One ZeroMQ socket with what it needs around it: its context, CURVE, ZAP, a monitor.

Each :class:`ZmqSocket` owns its context: a ZAP authenticator serves one
context, and a pipeline may hold a CURVE server source and a plain sink at
once. The monitor records failed handshakes (a key the server does not
allow, a client that has the wrong server key), so a refused peer is
reported, not silent.

Concurrency: a socket is used by one thread at a time (ZeroMQ sockets are
not thread-safe); the authenticator runs on its own thread (pyzmq's
``ThreadAuthenticator``). Errors from libzmq are mapped here:
:class:`~fogline.errors.ConfigError` for an endpoint that cannot be bound or
a missing CURVE build, :class:`~fogline.errors.Refused` when the peer
refused the handshake, :class:`~fogline.errors.TimedOut` when no peer took
a message in time.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from fogline.errors import ConfigError, Refused, TimedOut, TransportError
from fogline.transport.zmq._curve import Curve, CurveClient, CurveServer
from fogline.transport.zmq._endpoint import Pattern, ZmqEndpoint

log = logging.getLogger("fogline.transport.zmq")

_TYPES = {"push": zmq.PUSH, "pull": zmq.PULL, "pub": zmq.PUB, "sub": zmq.SUB}
_FAILED: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "authentication refused",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error (a wrong CURVE key?)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the handshake failed (a wrong server_key?)",
}
_WATCHED = (
    zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)


@dataclass(frozen=True)
class HandshakeFailure:
    """A peer's handshake that failed: on which endpoint, and why (as libzmq reports it)."""

    endpoint: str
    reason: str


class _AllowList:
    """The ZAP authenticator's callback: a client key is let in when it is in the list."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.allowed


def needs_curve() -> None:
    """Raise :class:`ConfigError` unless this libzmq was built with CURVE."""
    if not zmq.has("curve"):
        raise ConfigError(f"this libzmq ({zmq.zmq_version()}) has no CURVE support")


def probe_bind(endpoint: ZmqEndpoint) -> None:
    """Bind ``endpoint`` and close it again; :class:`ConfigError` says why it cannot be bound.

    ``fogline check`` calls it, so a port in use is found before a run starts.

    >>> busy = ZmqSocket("pull", ZmqEndpoint.parse("tcp://127.0.0.1:47011"), bind=True)
    >>> probe_bind(busy.endpoint)
    Traceback (most recent call last):
    ...
    fogline.errors.ConfigError: cannot bind tcp://127.0.0.1:47011: the address is in use (another process, or another fogline run, is bound to it)
    >>> busy.close(); probe_bind(busy.endpoint)
    """
    if endpoint.scheme == "ipc":
        _free_ipc(endpoint)
        return
    context = zmq.Context()
    try:
        sock = context.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(str(endpoint))
        except zmq.ZMQError as exc:
            raise ConfigError(f"cannot bind {endpoint}: {_why(exc)}") from exc
        finally:
            sock.close(0)
    finally:
        context.term()


def _free_ipc(endpoint: ZmqEndpoint) -> None:
    """Raise :class:`ConfigError` unless an ipc path can be bound without taking it from anyone.

    ZeroMQ binds an ipc path by removing what is there, so a second process
    would silently take the socket of a running one (and a probe that binds
    and closes would leave the first without a socket file): instead, the
    folder must exist, and a socket file there must not answer.
    """
    path = Path(endpoint.path or "")
    if not path.parent.is_dir():
        raise ConfigError(f"cannot bind {endpoint}: no folder {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(f"cannot bind {endpoint}: {path.parent} is not writable")
    if not path.exists():
        return
    if not stat.S_ISSOCK(path.stat().st_mode):
        raise ConfigError(f"cannot bind {endpoint}: {path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return  # a stale socket file: nobody is bound to it
    raise ConfigError(f"cannot bind {endpoint}: {_IN_USE}")


_IN_USE = "the address is in use (another process, or another fogline run, is bound to it)"


def _why(exc: zmq.ZMQError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return _IN_USE
    if exc.errno == errno.ENODEV:
        return "no such interface or address on this machine"
    return str(exc)


class ZmqSocket:
    """A PUSH, PULL, PUB or SUB socket bound or connected to one endpoint.

    ``topic`` is what a SUB socket subscribes to (a prefix; ``b""`` for
    everything). ``hwm`` bounds the messages queued per peer (sends block, or
    PUB drops, beyond it); ``linger`` is how long :meth:`close` may wait to
    deliver what is queued; ``send_timeout`` how long :meth:`send` waits for a
    peer to take a message (PUSH with no peer blocks; PUB never does).

    >>> out = ZmqSocket("push", ZmqEndpoint.parse("ipc:///tmp/fogline-doc.sock"), bind=True)
    >>> into = ZmqSocket("pull", ZmqEndpoint.parse("ipc:///tmp/fogline-doc.sock"), bind=False)
    >>> out.send([b"hello"])
    >>> into.receive(timeout=5.0)
    [b'hello']
    >>> into.close(); out.close()
    """

    def __init__(
        self,
        pattern: Pattern,
        endpoint: ZmqEndpoint,
        *,
        bind: bool,
        curve: Curve | None = None,
        topic: bytes = b"",
        hwm: int = 1000,
        linger: float = 1.0,
        send_timeout: float = 10.0,
    ) -> None:
        if pattern not in _TYPES:
            raise ConfigError(f"a zmq pattern is push, pull, pub or sub, got {pattern!r}")
        if endpoint.any_interface and not bind:
            raise ConfigError(f"{endpoint}: '*' is for a socket that binds; connect to a host")
        self.pattern, self.endpoint, self.bind = pattern, endpoint, bind
        self.failures: list[HandshakeFailure] = []  # the latest 100
        self.refused = 0  # handshakes that failed since the socket opened
        self.handshakes = 0  # and those that succeeded
        self._closed = False
        self._context = zmq.Context()
        self._auth: ThreadAuthenticator | None = None
        try:
            self._socket = self._context.socket(_TYPES[pattern])
            self._monitor = self._socket.get_monitor_socket(_WATCHED)
            self._configure(curve, topic, hwm, linger, send_timeout)
            if bind:
                if endpoint.scheme == "ipc":
                    _free_ipc(endpoint)  # ZeroMQ would take the path from a running process
                try:
                    self._socket.bind(str(endpoint))
                except zmq.ZMQError as exc:
                    raise ConfigError(f"cannot bind {endpoint}: {_why(exc)}") from exc
            else:
                self._socket.connect(str(endpoint))
        except BaseException:
            self._teardown()
            raise

    def _configure(
        self, curve: Curve | None, topic: bytes, hwm: int, linger: float, send_timeout: float
    ) -> None:
        sock = self._socket
        sock.setsockopt(zmq.LINGER, int(linger * 1000))
        sock.setsockopt(zmq.SNDHWM, hwm)
        sock.setsockopt(zmq.RCVHWM, hwm)
        self._send_timeout = send_timeout
        if self.pattern == "push":
            # Queue only on connections that finished their handshake: a peer that refuses
            # us then shows as a send that times out, not as messages queued forever.
            sock.setsockopt(zmq.IMMEDIATE, 1)
        if self.pattern == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        if isinstance(curve, CurveServer):
            needs_curve()
            self._auth = ThreadAuthenticator(self._context, log=log)
            self._auth.start()
            self._auth.configure_curve_callback("*", _AllowList(curve.allowed))
            sock.curve_server = True
            sock.curve_secretkey = curve.keys.secret
            sock.curve_publickey = curve.keys.public
        elif isinstance(curve, CurveClient):
            needs_curve()
            sock.curve_serverkey = curve.server_key
            sock.curve_publickey = curve.keys.public
            sock.curve_secretkey = curve.keys.secret

    def send(self, frames: Sequence[bytes]) -> None:
        """Queue one message (its frames) for a peer.

        Raises :class:`Refused` as soon as a handshake failed while no peer
        has completed one (a key the other side does not allow), and
        :class:`TimedOut` when no peer took the message in ``send_timeout``.
        """
        if self._closed:
            raise TransportError(f"{self.endpoint}: the socket is closed")
        parts = list(frames)
        copy = len(parts[-1]) < 65536  # zero-copy pays off for large frames only
        deadline = time.monotonic() + self._send_timeout
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLOUT)
        while True:
            try:
                self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=copy)
                return
            except zmq.Again as exc:
                self.poll_events()
                if self.failures and not self.handshakes:
                    last = self.failures[-1]
                    raise Refused(
                        f"{last.endpoint}: the peer refused the handshake: {last.reason}"
                    ) from exc
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimedOut(f"{self.endpoint}: no peer took the message in time") from exc
                poller.poll(int(min(left, 0.05) * 1000) + 1)
            except zmq.ZMQError as exc:
                raise TransportError(f"{self.endpoint}: cannot send: {exc}") from exc

    def receive(self, timeout: float) -> list[bytes] | None:
        """The next message's frames, or None after ``timeout`` seconds; records handshake events."""
        if self._closed:
            raise TransportError(f"{self.endpoint}: the socket is closed")
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            ready = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if self._monitor in ready:
                self.poll_events()
            if self._socket in ready:
                return self._socket.recv_multipart()
            if time.monotonic() >= deadline:
                return None

    def poll_events(self) -> list[HandshakeFailure]:
        """Read the monitor's waiting events; return the new handshake failures.

        A CURVE server also logs them (the first three, then every 100th):
        someone tried a key it does not allow.
        """
        new: list[HandshakeFailure] = []
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind = int(event["event"])
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshakes += 1
                continue
            reason = _FAILED.get(kind, "handshake failed")
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                reason = f"{reason} (ZAP status {event['value']}: the key is not allowed)"
            endpoint = event["endpoint"].decode(errors="replace")
            failure = HandshakeFailure(endpoint, reason)
            self.refused += 1
            # A server logs who knocked and was turned away; a client raises from send().
            if self._auth is not None and (self.refused <= 3 or self.refused % 100 == 0):
                more = f" ({self.refused} so far)" if self.refused > 3 else ""
                log.warning("zmq %s: a peer's handshake failed: %s%s", endpoint, reason, more)
            self.failures.append(failure)
            del self.failures[:-100]
            new.append(failure)
        return new

    def close(self) -> None:
        """Close the socket (waiting at most ``linger`` to deliver what is queued); idempotent."""
        if self._closed:
            return
        self._closed = True
        self._teardown()

    def _teardown(self) -> None:
        socket = getattr(self, "_socket", None)
        monitor = getattr(self, "_monitor", None)
        # The monitor is stopped while its reading end is still open. libzmq's I/O thread
        # sends each event with a blocking send on a PAIR socket, holding the lock that
        # disable_monitor() takes; an event sent after the reading end closed has no peer and
        # waits forever, and so did disable_monitor() (a hang seen at a feed's exit).
        if socket is not None and monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                socket.disable_monitor()
        if monitor is not None:
            monitor.close(0)
        if socket is not None:
            socket.close()
        if self._auth is not None:
            self._auth.stop()
        self._context.term()

    def __enter__(self) -> ZmqSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
