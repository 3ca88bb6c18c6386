"""``fogline broker``: a local Mosquitto for a single-host fleet trial, in the foreground."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import threading
from pathlib import Path

import typer

from fogline.cli._app import app, console_err
from fogline.errors import ConfigError, TransportError
from fogline.protocol import DEFAULT_PREFIX
from fogline.transport.mqtt import BrokerConfig, LocalBroker


@app.command()
def broker(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for all)."),
    port: int | None = typer.Option(
        None, min=1, max=65535, help="Port to listen on (default 1883; 8883 with TLS)."
    ),
    data: Path = typer.Option(
        Path("fleet-data/broker"), "--data", help="Folder for config, passwords, ACL, sessions."
    ),
    auth: bool = typer.Option(
        True, "--auth/--no-auth", help="Per-device passwords and ACL (off: anyone may connect)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate (mqtts)."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Its PEM private key."),
    tls_ca: Path | None = typer.Option(
        None, "--tls-ca", help="CA file (or folder) that signs client certificates."
    ),
    require_certificate: bool = typer.Option(
        False, "--require-certificate", help="With --tls-ca: refuse clients without a certificate."
    ),
    mtls: bool = typer.Option(
        False,
        "--mtls",
        help="Mutual TLS with the fleet's CA (see 'fogline ca init'): every client presents a "
        "certificate and its subject is its MQTT user name.",
    ),
    ca: Path | None = typer.Option(
        None, "--ca", help="With --mtls: the CA folder (default: DATA/../ca)."
    ),
    prefix: str = typer.Option(DEFAULT_PREFIX, help="First topic level of the fleet."),
) -> None:
    """Run a local MQTT 5 broker (Mosquitto) for a fleet until Ctrl-C or SIGTERM.

    SIGHUP makes it re-read the password file and ACL.
    """
    controller_tls = None
    if mtls:
        tls_cert, tls_key, tls_ca, controller_tls = _mtls_files(ca or data.parent / "ca")
        require_certificate = True
    config = BrokerConfig(
        folder=data,
        host=host,
        port=port or (8883 if tls_cert else 1883),
        auth=auth,
        prefix=prefix,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_ca=tls_ca,
        require_certificate=require_certificate,
        identity_from_certificate=mtls,
    )
    local = LocalBroker(config)
    pending: list[int] = []  # signals the handler saw, acted on in this thread
    wake = threading.Event()

    def on_signal(sig: int, _frame: object) -> None:
        pending.append(sig)
        wake.set()

    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in watched}
    try:
        with local:
            lines = _how_to_connect(local, controller_tls)
            console_err.print("\n".join(lines), highlight=False, soft_wrap=True)
            while True:
                wake.wait(0.5)
                wake.clear()
                while pending:
                    if pending.pop(0) != signal.SIGHUP:
                        return  # leaving the with block stops Mosquitto (SIGTERM: it saves)
                    local.reload()
                if not local.running:
                    raise TransportError(f"mosquitto stopped by itself; see {config.log_file}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _mtls_files(ca: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    """The broker's certificate, key and CA, and the controller's client TLS, from a CA folder."""
    from fogline.security import (
        CA_CERT,
        CONTROLLER_CERT,
        CONTROLLER_KEY,
        SERVER_CERT,
        SERVER_KEY,
    )

    needed = [ca / name for name in (SERVER_CERT, SERVER_KEY, CA_CERT, CONTROLLER_CERT)]
    missing = [path for path in needed if not path.is_file()]
    if missing:
        raise ConfigError(
            f"--mtls: {missing[0]} is missing: run 'fogline ca init --data {ca.parent}' first"
        )
    controller = {
        "ca": str((ca / CA_CERT).absolute()),
        "cert": str((ca / CONTROLLER_CERT).absolute()),
        "key": str((ca / CONTROLLER_KEY).absolute()),
    }
    return ca / SERVER_CERT, ca / SERVER_KEY, ca / CA_CERT, controller


def _how_to_connect(local: LocalBroker, controller_tls: dict[str, str] | None) -> list[str]:
    """What a user needs to connect a controller and agents; no password in full."""
    config = local.config
    lines = [
        f"broker     {local.url}  (Mosquitto, MQTT 5; Ctrl-C to stop)",
        f"config     {config.config_file}  (log {config.log_file})",
    ]
    if config.identity_from_certificate:
        lines.append(
            f"mtls       clients present a certificate signed by {config.tls_ca}; "
            "its subject (CN) is the MQTT user name"
        )
    if config.password_file is not None and config.acl_file is not None:
        credentials = _controller_credentials(local, controller_tls)
        lines += [
            f"auth       passwords {config.password_file}, ACL {config.acl_file}: "
            "a device reads and writes only its own topics",
            f"controller user {config.controller_user!r}, password in {credentials} (mode 0600)",
        ]
    else:
        lines.append("auth       none: any client may connect and publish (a trial only)")
        if not ipaddress.ip_address(_numeric(config.host)).is_loopback:
            lines.append(
                f"warning    --no-auth on {config.host}: other machines can control the fleet"
            )
    lines.append(
        "cluster    for a large fleet, point --broker at an EMQX or HiveMQ cluster and load "
        + (
            f"the rules of {config.acl_file} into its authorization"
            if config.acl_file
            else "an ACL"
        )
        + " (fogline needs only a standard MQTT 5 broker)"
    )
    return lines


def _controller_credentials(local: LocalBroker, tls: dict[str, str] | None) -> Path:
    """``controller.json`` (0600) with the URL, user and password (and TLS files); kept across restarts."""
    path = local.config.folder / "controller.json"
    user = local.config.controller_user
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    if kept.get("user") == user and kept.get("password") and user in local.passwords.users():
        password = str(kept["password"])
    else:
        password = local.add_controller().password
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file may have had a wider mode
    with os.fdopen(fd, "w") as out:
        body = {"url": local.url, "user": user, "password": password}
        json.dump(body if tls is None else {**body, "tls": tls}, out, indent=2)
        out.write("\n")
    return path


def _numeric(host: str) -> str:
    """The host as an IP address for the loopback check ("localhost" is 127.0.0.1)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "0.0.0.0"  # a name: assume it is reachable from elsewhere
    return host
