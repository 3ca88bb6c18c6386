"""``fogline agent``: run the device agent until SIGINT/SIGTERM, one line per change."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import typer
from pydantic import ValidationError

from fogline.cli._app import FLEET_MODULES, app, console, console_err, needs_extra
from fogline.cli._options import file_option
from fogline.errors import ConfigError
from fogline.protocol import DEFAULT_PREFIX, check_device_id
from fogline.transport.mqtt import to_url


@app.command()
def agent(
    broker: str = typer.Option(
        ..., "--broker", help="MQTT 5 broker URL (mqtt:// or mqtts://), e.g. mqtt://127.0.0.1:1883."
    ),
    controller: str = typer.Option(
        ..., "--controller", help="The controller's URL, e.g. http://127.0.0.1:8080."
    ),
    data: Path = typer.Option(..., "--data", help="This device's folder (releases, state, keys)."),
    device_id: str = typer.Option(..., "--device-id", help="This device's id (its MQTT user)."),
    token: str | None = typer.Option(
        None, "--token", help="A one-time enrolment token (first start only)."
    ),
    trusted_root: Path | None = typer.Option(
        None, "--trusted-root", help="The controller's TUF root.json (instead of enrolment)."
    ),
    prefix: str = typer.Option(
        DEFAULT_PREFIX, help="First topic level shared with the controller."
    ),
    telemetry_period: float = typer.Option(
        10.0, "--telemetry-period", min=0.05, help="Seconds between telemetry reports."
    ),
    serve_port: int | None = typer.Option(
        None, "--serve-port", min=1, max=65535, help="HTTP port of a served repository release."
    ),
    tls_ca: Path | None = file_option(
        "--tls-ca",
        "The fleet's CA certificate (mutual TLS): checks the controller and broker before "
        "enrolment brings it.",
    ),
    tls_cert: Path | None = file_option(
        "--tls-cert", "This device's certificate, when not issued at enrolment."
    ),
    tls_key: Path | None = file_option("--tls-key", "Its private key (PEM)."),
    encrypt_store: bool = typer.Option(
        False,
        "--encrypt-store",
        help="Keep the agent's own store (DATA/agent/telemetry.db) encrypted with the device "
        "key DATA/keys/device.key (a plain one is encrypted in place at start).",
    ),
    defer: Path | None = file_option(
        "--defer",
        "A deferral policy (YAML: mains, min_battery_percent, windows, carbon): federated "
        "rounds and fine-tuning run only when it allows.",
    ),
) -> None:
    """Converge this device to the releases the controller wants, report state and telemetry."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.fleet.agent import Agent, AgentConfig
    from fogline.power import load_defer_policy

    try:
        check_device_id(device_id)
    except ValueError as exc:
        raise ConfigError(f"--device-id: {exc}") from None
    try:
        config = AgentConfig(
            broker=to_url(broker),
            controller=controller,
            data=data,
            device_id=device_id,
            token=token,
            trusted_root=trusted_root,
            prefix=prefix,
            telemetry_period=telemetry_period,
            serve_http_port=serve_port,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            encrypt_store=encrypt_store,
            defer=None if defer is None else load_defer_policy(defer),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "options"
        raise ConfigError(f"--{where.replace('_', '-')}: {first['msg']}") from None

    def say(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        console.print(f"{stamp} {device_id} {line}", highlight=False, soft_wrap=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Agent(config, on_event=say) as running:
        console_err.print(
            f"agent {device_id}: broker {config.broker}, controller {config.controller}, "
            f"data {data}",
            highlight=False,
            soft_wrap=True,
        )
        if running.deferral is not None:
            say(f"deferral ({defer}): {running.deferral.check().reason}")
        told = None
        while not stop.wait(0.5):
            if running.error != told:
                told = running.error
                if told:
                    say(f"error: {told}")
    say("stopped")
