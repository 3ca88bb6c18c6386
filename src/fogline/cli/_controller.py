"""``fogline controller``: the fleet's registry, rollouts, telemetry, API and dashboard."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from fogline.cli._app import FLEET_MODULES, app, console, console_err, needs_extra
from fogline.errors import KeyUnavailable
from fogline.protocol import DEFAULT_PREFIX

if TYPE_CHECKING:
    from fogline.security import DeviceKey

#: The controller key's file when it is kept outside DATA (also for 'fogline release').
RELEASE_KEY_FILE = typer.Option(
    None,
    "--release-key-file",
    help="The controller key that seals encrypted releases' data keys, kept outside DATA "
    "(or $FOGLINE_CONTROLLER_KEY_FILE, $FOGLINE_CONTROLLER_KEY, $FOGLINE_CONTROLLER_KEY_COMMAND; "
    "default DATA/keys/controller.key).",
)


@app.command()
def controller(
    broker: str | None = typer.Option(
        None,
        "--broker",
        help="MQTT 5 broker URL, e.g. mqtts://controller:PASS@broker.example:8883 "
        "(default: the 'fogline broker' in DATA/broker).",
    ),
    data: Path = typer.Option(
        Path("fleet-data"), "--data", help="Keys, the release repository, the registry."
    ),
    http_port: int = typer.Option(8080, "--http-port", min=0, max=65535),
    host: str = typer.Option("127.0.0.1", help="Address for the API and dashboard."),
    prefix: str = typer.Option(DEFAULT_PREFIX, help="First topic level shared with the agents."),
    broker_admin: Path | None = typer.Option(
        None,
        "--broker-admin",
        help="The folder of a 'fogline broker': enrolment then adds each device's MQTT user.",
    ),
    device_broker: str | None = typer.Option(
        None, "--device-broker", help="The broker URL to give enrolled devices (default: --broker)."
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate for HTTPS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Its PEM private key."),
    mtls: bool = typer.Option(
        False,
        "--mtls",
        help="Mutual TLS with the fleet's CA (DATA/ca, see 'fogline ca init'): HTTPS, a "
        "certificate for each enrolling device, releases only to devices presenting one.",
    ),
    device_port: int = typer.Option(
        8443, "--device-port", min=0, max=65535, help="With --mtls: the device listener's port."
    ),
    verify_every: float = typer.Option(
        3600.0,
        "--verify-every",
        min=0.0,
        help="Seconds between re-hashes of every stored release file (0: only before serving "
        "a file the first time); a damaged release is neither served nor deployed.",
    ),
    accept_offers: list[str] = typer.Option(
        [],
        "--accept-offers",
        help="A device group whose fine-tuned candidates (a learner's finetune:) are checked, "
        "signed and deployed as a canary; repeat for more groups (default: none).",
    ),
    cluster_broker: str | None = typer.Option(
        None,
        "--cluster-broker",
        help="The broker edge clusters use, when not --broker (a site's data broker): the "
        "dashboard's Clusters page reads their nodes and dispatchers there too.",
    ),
    offer_min_accuracy: float | None = typer.Option(
        None,
        "--offer-min-accuracy",
        min=0.0,
        max=1.0,
        help="The live-accuracy floor of an accepted offer's canary when its finetune: names none.",
    ),
    db_key: Path | None = typer.Option(
        None,
        "--db-key",
        help="Encrypt the registry and federated runs (SQLite) with this device key file; "
        "encrypted ones need it (or $FOGLINE_DEVICE_KEY_FILE, $FOGLINE_DEVICE_KEY, "
        "$FOGLINE_DEVICE_KEY_COMMAND).",
    ),
    encrypt_db: bool = typer.Option(
        False, "--encrypt-db", help="Encrypt them with the key from the environment."
    ),
    release_key_file: Path | None = RELEASE_KEY_FILE,
) -> None:
    """Run the controller until Ctrl-C, printing what happens in the fleet."""
    needs_extra("fleet", *FLEET_MODULES)
    from fogline.fleet.controller import Controller, ControllerConfig, controller_key_source
    from fogline.transport.mqtt import controller_url, device_credentials

    if broker is None and broker_admin is None:
        broker_admin = data / "broker"  # where 'fogline broker' keeps its files by default
    broker_url = broker if broker is not None else controller_url(broker_admin or data / "broker")
    credentials = None
    revoke_login = None
    if broker_admin is not None and (broker_admin / "passwords").exists():
        credentials = device_credentials(broker_admin)
        revoke_login = _login_remover(broker_admin)
    ca = None
    if mtls:
        from fogline.security import SERVER_CERT, SERVER_KEY

        ca = data / "ca"
        tls_cert, tls_key = tls_cert or ca / SERVER_CERT, tls_key or ca / SERVER_KEY
    config = ControllerConfig(
        data=data,
        broker=broker_url,
        prefix=prefix,
        host=host,
        http_port=http_port,
        device_broker=device_broker,
        credentials=credentials,
        tls_cert=tls_cert,
        tls_key=tls_key,
        ca=ca,
        device_port=device_port,
        verify_seconds=verify_every or None,
        offer_groups=tuple(accept_offers),
        offer_min_accuracy=offer_min_accuracy,
        cluster_broker=cluster_broker,
        db_key=_db_key(data, db_key, encrypt_db),
        revoke_login=revoke_login,
        release_key=controller_key_source(release_key_file),
    )
    # The controller's own log (broker lost and found, damaged files, re-signing) with the
    # same time stamps as the fleet's events below it.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    for name in ("fogline.controller", "fogline.federated"):  # the rounds of federated runs
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Controller(config) as running:
        url = running.base_url
        console_err.print(
            f"controller on {url}\n"
            f"  dashboard  {url}/?token={running.token}\n"
            f"  API token  {data / 'admin.token'} (send 'Authorization: Bearer <token>')\n"
            f"  broker     {running.url}\n"
            + (
                f"  devices    {running.devices.base_url}  (releases; a device certificate "
                "from DATA/ca is required)\n"
                if running.devices is not None and running.devices.base_url
                else ""
            )
            + f"  enrol      fogline fleet token --data {data}  then  "
            f"fogline agent --token <token> --controller {url}"
            + (f" --tls-ca {data / 'ca' / 'ca.pem'}" if mtls else "")
            + " …",
            highlight=False,
            soft_wrap=True,
        )
        if not running.wait_connected(10):
            console_err.print(f"[yellow]not connected to {running.url} yet; retrying[/]")
        seen = 0.0
        while not stop.wait(1.0):
            for event in reversed(running.registry.events(limit=50)):
                if event["time"] <= seen:
                    continue
                seen = event["time"]
                who = event["device_id"] or event["deployment"] or ""
                stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
                console.print(
                    f"{stamp} {event['kind']:<10} {who:<24} {event['message']}", highlight=False
                )


def _db_key(data: Path, file: Path | None, encrypt: bool) -> DeviceKey | None:
    """The key of the controller's databases: asked for, or needed by an encrypted registry."""
    from fogline.security import KeySource
    from fogline.store import is_encrypted

    registry = data / "registry.db"
    if file is None and not encrypt and not is_encrypted(registry):
        return None
    try:
        return KeySource(file=file).load()
    except KeyUnavailable as exc:
        raise KeyUnavailable(
            f"{registry}: the controller's databases are encrypted (or --encrypt-db): "
            f"pass --db-key FILE; {exc}"
        ) from exc


def _login_remover(folder: Path) -> Callable[[str], None]:
    """Remove a revoked device from the broker's password file and make the broker reload it."""
    from fogline.transport.mqtt import PasswordFile, reload_broker

    def remove(device_id: str) -> None:
        PasswordFile(folder / "passwords").remove(device_id)
        reload_broker(folder)

    return remove
