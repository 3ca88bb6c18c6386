"""A fleet CA and a real Mosquitto with mutual TLS on loopback, for the mTLS tests.

:class:`FleetCa` is a CA made by :func:`fogline.security.init_ca` with the
broker's and controller's certificates (:func:`issue_fleet_certificates`)
and client certificates for named devices on request. :func:`mtls_broker`
is fogline's own :class:`~fogline.transport.mqtt.LocalBroker` as ``fogline
broker --mtls`` configures it: TLS, ``require_certificate``,
``use_identity_as_username``, the fleet's password file and ACL.
:func:`connects` tries one MQTT connection and says how it ended.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from pathlib import Path

from paho.mqtt.reasoncodes import ReasonCode

from fogline.security import (
    CONTROLLER_CERT,
    CONTROLLER_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CertificateAuthority,
    ClientTls,
    init_ca,
    issue_certificate,
    issue_fleet_certificates,
)
from fogline.transport.mqtt import BrokerConfig, LocalBroker, MqttUrl, new_client
from support.broker import free_port


class FleetCa:
    """A CA folder with the fleet's server and controller certificates; device ones on demand."""

    def __init__(self, folder: Path) -> None:
        self.ca = init_ca(folder)
        issue_fleet_certificates(self.ca)
        self.folder = folder

    def device(
        self, device_id: str, *, expired: bool = False, by: CertificateAuthority | None = None
    ) -> ClientTls:
        """Client TLS settings for ``device_id`` (an expired or foreign certificate when asked)."""
        name = f"{device_id}{'-expired' if expired else ''}{'-foreign' if by else ''}"
        cert, key = self.folder / "devices" / f"{name}.pem", self.folder / "devices" / f"{name}.key"
        not_before = None
        if expired:
            not_before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
        issued = issue_certificate(by or self.ca, device_id, days=1, not_before=not_before)
        issued.write(cert, key)
        return ClientTls(self.ca.cert_file, cert, key)

    @property
    def controller(self) -> ClientTls:
        return ClientTls(
            self.ca.cert_file, self.folder / CONTROLLER_CERT, self.folder / CONTROLLER_KEY
        )


def mtls_broker(folder: Path, ca: FleetCa) -> LocalBroker:
    """A started Mosquitto that takes only certificates from ``ca`` and names clients by them."""
    broker = LocalBroker(
        BrokerConfig(
            folder=folder,
            port=free_port(),
            auth=True,
            tls_cert=ca.folder / SERVER_CERT,
            tls_key=ca.folder / SERVER_KEY,
            tls_ca=ca.ca.cert_file,
            require_certificate=True,
            identity_from_certificate=True,
        )
    )
    broker.start()
    return broker


def url_for(broker: LocalBroker, tls: ClientTls, **login: str) -> MqttUrl:
    """The broker's ``mqtts://`` URL presenting ``tls`` (and a user name, if given)."""
    return dataclasses.replace(MqttUrl.parse(broker.url), client_tls=tls, **login)


def connects(url: MqttUrl, timeout: float = 10.0) -> str:
    """``"connected"``, or how the one connection attempt to ``url`` ended."""
    client = new_client(url, reconnect=False, timeout=timeout)
    outcome: list[str] = []
    done = threading.Event()

    def on_connect(c: object, u: object, f: object, reason: ReasonCode, p: object) -> None:
        outcome.append("connected" if not reason.is_failure else f"refused: {reason}")
        done.set()

    def on_disconnect(c: object, u: object, f: object, reason: ReasonCode, p: object) -> None:
        outcome.append(f"dropped: {reason}")
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(url.host, url.port)
    except OSError as exc:  # the TLS handshake failed (TLS 1.2, or the server's check first)
        return f"handshake failed: {exc}"
    client.loop_start()
    try:
        if not done.wait(timeout):
            return "no answer"
        return outcome[0]
    finally:
        client.disconnect()
        client.loop_stop()
