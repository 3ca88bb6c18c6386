"""No device may take the controller's name: as a device id, a certificate subject or an MQTT user.

With ``use_identity_as_username`` a client certificate ``CN=controller`` is
the broker's controller user (the whole prefix); on the password path a
device ``controller`` would replace the controller's password.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from fogline.errors import ConfigError
from fogline.protocol import check_device_id
from fogline.security import CONTROLLER_CERT, init_ca, issue_certificate, issue_fleet_certificates
from fogline.transport.mqtt import BrokerConfig, LocalBroker, PasswordFile, device_credentials


@pytest.mark.parametrize("name", ["controller", "Controller"])
def test_the_controllers_name_is_no_device_id(name: str) -> None:
    with pytest.raises(ValueError, match="reserved for the controller"):
        check_device_id(name)
    assert check_device_id("controller-2") == "controller-2"


def test_no_device_certificate_is_issued_for_the_controllers_subject(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    with pytest.raises(ConfigError, match="'controller' is reserved"):
        issue_certificate(ca, "controller")
    issue_fleet_certificates(ca)  # the controller's own certificate is still made
    cert = x509.load_pem_x509_certificate((ca.folder / CONTROLLER_CERT).read_bytes())
    assert cert.subject.rfc4514_string() == "CN=controller"


def test_a_broker_refuses_a_device_named_as_its_controller_user(tmp_path: Path) -> None:
    broker = LocalBroker(BrokerConfig(folder=tmp_path / "b", controller_user="ops"))
    controller = broker.add_controller()
    passwords = PasswordFile(tmp_path / "b" / "passwords")
    before = passwords.path.read_bytes()
    for name in ("ops", "controller"):
        with pytest.raises(ConfigError, match=f"'{name}' is reserved"):
            broker.add_device(name)
    assert passwords.path.read_bytes() == before and passwords.users() == [controller.user]


def test_a_controller_beside_a_broker_refuses_the_users_its_acl_names(tmp_path: Path) -> None:
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "acl").write_text("user ops\ntopic readwrite fogline/#\n")
    make = device_credentials(folder)
    for name in ("ops", "controller"):
        with pytest.raises(ConfigError, match=f"'{name}' is reserved"):
            make(name)
    assert make("cam-1")
    assert PasswordFile(folder / "passwords").users() == ["cam-1"]
