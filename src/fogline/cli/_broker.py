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
from fogline.errors import TransportError
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
    prefix: str = typer.Option(DEFAULT_PREFIX, help="First topic level of the fleet."),
) -> None:
    """Run a local MQTT 5 broker (Mosquitto) for a fleet until Ctrl-C or SIGTERM.

    SIGHUP makes it re-read the password file and ACL.
    """
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
            console_err.print("\n".join(_how_to_connect(local)), highlight=False, soft_wrap=True)
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


def _how_to_connect(local: LocalBroker) -> list[str]:
    """What a user needs to connect a controller and agents; no password in full."""
    config = local.config
    lines = [
        f"broker     {local.url}  (Mosquitto, MQTT 5; Ctrl-C to stop)",
        f"config     {config.config_file}  (log {config.log_file})",
    ]
    if config.password_file is not None and config.acl_file is not None:
        credentials = _controller_credentials(local)
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


def _controller_credentials(local: LocalBroker) -> Path:
    """``controller.json`` (0600) with the URL, user and password; kept across restarts."""
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
        json.dump({"url": local.url, "user": user, "password": password}, out, indent=2)
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
