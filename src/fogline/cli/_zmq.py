"""``fogline zmq keys|feed|listen``: CURVE key pairs, and both ends of a device-to-device link.

``feed`` is a camera gateway for trying a ``zmq`` source (it sends a data
set's items as the source's JSON, ``{"data": [...], "id": ..., "label":
...}``); ``listen`` prints what a ``zmq`` sink sends. Both speak CURVE as a
client when given ``--secret-key`` and ``--server-key``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import typer
from rich.markup import escape

from fogline.cli._app import app, console, needs_extra
from fogline.errors import ConfigError
from fogline.transport.zmq import CurveClient, KeyPair, ZmqEndpoint, write_keypair

zmq_app = typer.Typer(
    help="ZeroMQ links between devices, no broker: CURVE keys, a test feed, a listener.",
    no_args_is_help=True,
)
app.add_typer(zmq_app, name="zmq")

_SECRET = typer.Option(
    None, "--secret-key", help="This side's .key_secret file (CURVE client; with --server-key)."
)
_SERVER = typer.Option(None, "--server-key", help="The server's public .key file (CURVE client).")


def _endpoint(text: str) -> ZmqEndpoint:
    try:
        return ZmqEndpoint.parse(text)
    except ValueError as exc:
        raise ConfigError(f"--endpoint: {exc}") from exc


def _client(secret: Path | None, server: Path | None) -> CurveClient | None:
    if secret is None and server is None:
        return None
    if secret is None or server is None:
        raise ConfigError("CURVE needs both --secret-key and --server-key")
    return CurveClient(KeyPair.load(secret, secret=True), KeyPair.load(server).public)


@zmq_app.command("keys")
def keys(
    name: str = typer.Argument(..., help="The key pair's name: NAME.key and NAME.key_secret."),
    out: Path = typer.Option(Path("keys"), "--out", help="The folder to write them to."),
) -> None:
    """Make a CURVE key pair: NAME.key (public, give it to the peers) and NAME.key_secret (0600)."""
    needs_extra("zmq", "zmq")
    public, secret = write_keypair(out, name)
    console.print(
        f"public key [bold]{escape(str(public))}[/] (give it to the peers), "
        f"secret key [bold]{escape(str(secret))}[/] (0600, keep it here)",
        highlight=False,
    )


@zmq_app.command("feed")
def feed(
    endpoint: str = typer.Option(..., "--endpoint", help="Where the receiver is, tcp://host:port."),
    data: str = typer.Option(
        "fogline.examples:digits_eval", "--data", help="A data set: module:function or a .npz."
    ),
    count: int | None = typer.Option(None, "--count", min=1, help="Send this many (default: all)."),
    rate: float | None = typer.Option(None, "--rate", min=0.001, help="Items per second."),
    pub: bool = typer.Option(False, "--pub", help="PUBlish (bind) instead of PUSH (connect)."),
    topic: str = typer.Option("items", "--topic", help="With --pub: the topic frame."),
    prefix: str | None = typer.Option(
        None,
        "--id-prefix",
        help="Item ids are <prefix>-<n> (default: feed-<random hex>, new each run, so two runs "
        "into one store do not share ids).",
    ),
    secret_key: Path | None = _SECRET,
    server_key: Path | None = _SERVER,
) -> None:
    """Send a data set's items as JSON to a zmq source: a camera gateway, for trying one out.

    Items are {"data": [...], "id": "<prefix>-<n>", "label": "..."}, as `fogline cluster feed`
    publishes them.
    """
    needs_extra("zmq", "zmq")
    from fogline.cli._feed import Pacer, bodies, id_prefix, load_items
    from fogline.transport.zmq import ZmqSocket

    where = _endpoint(endpoint)
    x, y = load_items(data)
    prefix = id_prefix(prefix)
    curve = _client(secret_key, server_key)
    stop = threading.Event()
    pacer = Pacer(rate or 0.0)
    sent = 0
    started = time.monotonic()
    with ZmqSocket("pub" if pub else "push", where, bind=pub, curve=curve) as socket:
        if pub:
            time.sleep(0.5)  # give subscribers a moment to connect (PUB drops until they have)
        # --count beyond the data set starts it again
        for _, body in bodies(x, y, prefix, count=count, loop=count is not None):
            if not pacer.wait(stop):
                break
            socket.send([topic.encode(), body] if pub else [body])
            sent += 1
    took = time.monotonic() - started
    mode = "CURVE" if curve else "plain"
    console.print(
        f"sent {sent} items to {where} in {took:.2f} s ({mode}; ids {prefix}-0 to {prefix}-{sent - 1})",
        highlight=False,
        soft_wrap=True,
    )


@zmq_app.command("listen")
def listen(
    endpoint: str = typer.Option(..., "--endpoint", help="The zmq sink to listen to."),
    topic: str = typer.Option("", "--topic", help="Subscribe to this topic prefix (PUB sinks)."),
    pull: bool = typer.Option(False, "--pull", help="PULL (bind) instead of SUB (connect)."),
    count: int | None = typer.Option(None, "--count", min=1, help="Stop after this many."),
    duration: float | None = typer.Option(None, "--duration", min=0.1, help="Stop after seconds."),
    secret_key: Path | None = _SECRET,
    server_key: Path | None = _SERVER,
) -> None:
    """Print what a zmq sink sends, one message a line (the topic, then the JSON)."""
    needs_extra("zmq", "zmq")
    from fogline.transport.zmq import ZmqSocket

    where = _endpoint(endpoint)
    curve = _client(secret_key, server_key)
    got = 0
    until = None if duration is None else time.monotonic() + duration
    with ZmqSocket(
        "pull" if pull else "sub", where, bind=pull, curve=curve, topic=topic.encode()
    ) as socket:
        try:
            while (count is None or got < count) and (until is None or time.monotonic() < until):
                frames = socket.receive(timeout=0.2)
                if frames is None:
                    continue
                got += 1
                text = " ".join(frame.decode(errors="replace") for frame in frames)
                console.print(escape(text), highlight=False, soft_wrap=True)
        except KeyboardInterrupt:
            pass
    console.print(f"received {got} messages from {where}", highlight=False)
