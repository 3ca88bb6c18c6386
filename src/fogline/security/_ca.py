"""The fleet's certificate authority: device, broker and API certificates for mutual TLS.

A fleet with mTLS on has one CA (``fleet-data/ca/``: ``ca.pem`` public,
``ca.key`` 0600) that the broker and the controller's device listener
trust. It issues three kinds of certificate, all ECDSA P-256 (what
Mosquitto's OpenSSL and Python's :mod:`ssl` both accept everywhere):

- a **device** certificate, subject ``CN=<device id>``, extended key usage
  client auth, valid :data:`DEVICE_DAYS`: the broker takes the CN as the
  MQTT user name (``use_identity_as_username``), so the ACL's ``%u``
  patterns bind a device to its own topics whatever user name it sends;
- the **controller**'s client certificate, ``CN=controller`` (the ACL's
  controller user);
- a **server** certificate for the broker and the API host, subject
  alternative names ``localhost`` and ``127.0.0.1`` plus any given.

A device's certificate is issued from its certificate signing request
(:func:`certificate_request`): its private key never leaves the device.
Only the CSR's public key is used; the subject is always the device id the
controller enrolled, never what the CSR claims. An operator's own CA is
taken by :func:`import_ca` (its certificate and key given by path, checked
to be a CA and a pair) and used the same way.

>>> import tempfile, pathlib
>>> ca = init_ca(pathlib.Path(tempfile.mkdtemp()) / "ca")
>>> issued = issue_certificate(ca, "cam-7")
>>> certificate_info(issued.certificate)["subject"]
'cam-7'
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fogline._files import atomic_write, keep_private
from fogline.errors import ConfigError, KeyUnavailable

#: How long each kind of certificate is valid, in days.
CA_DAYS = 3650
DEVICE_DAYS = 397  # what browsers allow a leaf: a yearly re-enrolment with slack
SERVER_DAYS = 397
#: The file names in a CA folder.
CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
CONTROLLER_CERT, CONTROLLER_KEY = "controller.pem", "controller.key"
#: The hosts every server certificate names.
LOCAL_HOSTS = ("localhost", "127.0.0.1")
#: The controller's client certificate subject: the ACL's controller user.
CONTROLLER_NAME = "controller"

_SKEW = datetime.timedelta(minutes=5)  # a device whose clock is a little behind still accepts


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its private key, by path; :meth:`at` finds them in a folder.

    Nothing is read until a certificate is issued, so a controller with a CA
    folder starts even while the key is on a device being mounted.
    """

    cert_file: Path
    key_file: Path

    @classmethod
    def at(cls, folder: Path) -> CertificateAuthority:
        """The CA kept in ``folder`` (``ca.pem``, ``ca.key``)."""
        return cls(Path(folder) / CA_CERT, Path(folder) / CA_KEY)

    @property
    def folder(self) -> Path:
        return self.cert_file.parent

    def exists(self) -> bool:
        return self.cert_file.is_file() and self.key_file.is_file()

    def certificate(self) -> x509.Certificate:
        return _read_certificate(self.cert_file)

    def pem(self) -> str:
        """The CA certificate (PEM) as kept: what devices, the broker and clients trust.

        An operator's intermediate CA is kept with the chain up to its root
        (the file as given), so the root that verifiers need travels with it.
        """
        self.certificate()  # a clear error for a file that is not one
        return self.cert_file.read_text()

    def private_key(self) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
        try:
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        except FileNotFoundError:
            raise KeyUnavailable(
                f"{self.key_file} is missing: make a CA with 'fogline ca init' "
                "or import yours with 'fogline ca init --cert FILE --key FILE'"
            ) from None
        except (OSError, ValueError, TypeError) as exc:
            raise KeyUnavailable(f"{self.key_file}: not an unencrypted PEM key ({exc})") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise KeyUnavailable(f"{self.key_file}: a CA key is ECDSA or RSA, got {type(key)}")
        return key


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate, the CA certificate that signed it, and its key when the CA made one."""

    certificate: x509.Certificate
    ca_pem: str
    key_pem: str | None = field(default=None, repr=False)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "x")

    def write(self, cert_file: Path, key_file: Path | None = None) -> None:
        """Write the certificate (0644) and, when there is one, its key (0600)."""
        cert_file.parent.mkdir(parents=True, exist_ok=True)
        if self.key_pem is not None and key_file is not None:
            write_key(key_file, self.key_pem.encode())
        atomic_write(cert_file, self.pem.encode())


def init_ca(
    folder: Path, *, name: str = "fogline fleet CA", days: int = CA_DAYS, force: bool = False
) -> CertificateAuthority:
    """Make a CA in ``folder`` (P-256 key 0600, self-signed certificate); refuse to replace one."""
    ca = CertificateAuthority.at(folder)
    _refuse_existing(ca, force)
    keep_private(Path(folder))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_key(ca.key_file, _key_pem(key))
    atomic_write(ca.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    return ca


def import_ca(
    folder: Path, cert_file: Path, key_file: Path, *, force: bool = False
) -> CertificateAuthority:
    """Copy an operator's own CA (certificate and key files) into ``folder``, checked first.

    ``cert_file`` may hold the chain up to the root after the CA's own
    certificate (an intermediate CA): it is kept whole. Refused: a certificate that is not a CA (basic constraints), a key that
    is not the certificate's, an expired CA.
    """
    ca = CertificateAuthority.at(folder)
    _refuse_existing(ca, force)
    given = CertificateAuthority(Path(cert_file), Path(key_file))
    cert, key = given.certificate(), given.private_key()
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"{cert_file} is not a CA certificate (basic constraints CA:TRUE)")
    if cert.public_key().public_bytes(*_SPKI) != key.public_key().public_bytes(*_SPKI):
        raise ConfigError(f"{key_file} is not the key of {cert_file}")
    if cert.not_valid_after_utc <= _now():
        raise ConfigError(f"{cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    keep_private(Path(folder))
    write_key(ca.key_file, _key_pem(key))
    shutil.copyfile(cert_file, ca.cert_file)
    return ca


def issue_certificate(
    ca: CertificateAuthority,
    device_id: str,
    csr_pem: str | bytes | None = None,
    *,
    days: int = DEVICE_DAYS,
    not_before: datetime.datetime | None = None,
) -> IssuedCertificate:
    """A client certificate ``CN=device_id`` signed by ``ca``, for the CSR's key or a new one.

    ``device_id`` may not be the controller's subject (:data:`CONTROLLER_NAME`,
    in any case): with ``use_identity_as_username`` that certificate would be
    the broker's controller user, allowed the whole prefix. With ``csr_pem`` the request's signature is checked and only its public
    key is used; without it a key is made and returned (an operator issuing
    for a device by hand). ``not_before`` (default now) back-dates it (tests
    of an expired certificate).
    """
    if not device_id or "\n" in device_id or len(device_id) > 64:
        raise ConfigError(f"a certificate subject is 1-64 characters, got {device_id!r}")
    if device_id.casefold() == CONTROLLER_NAME:
        raise ConfigError(
            f"device id {device_id!r} is reserved for the controller's own certificate; choose another"
        )
    return _issue_client(ca, device_id, csr_pem, days=days, not_before=not_before)


def _issue_client(
    ca: CertificateAuthority,
    subject: str,
    csr_pem: str | bytes | None = None,
    *,
    days: int = DEVICE_DAYS,
    not_before: datetime.datetime | None = None,
) -> IssuedCertificate:
    key_pem = None
    if csr_pem is None:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        key_pem = _key_pem(key).decode()
    else:
        public = _csr_key(csr_pem)
    cert = _sign(
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]),
        public,
        days=days,
        not_before=not_before,
        purpose=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return IssuedCertificate(cert, ca.pem(), key_pem)


def issue_server_certificate(
    ca: CertificateAuthority, hosts: Sequence[str] = (), *, days: int = SERVER_DAYS
) -> IssuedCertificate:
    """A server certificate (new key) for the broker and the API: ``localhost``, ``127.0.0.1``, ``hosts``."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*LOCAL_HOSTS, *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")]),
        key.public_key(),
        days=days,
        purpose=ExtendedKeyUsageOID.SERVER_AUTH,
        names=names,
    )
    return IssuedCertificate(cert, ca.pem(), _key_pem(key).decode())


def issue_fleet_certificates(ca: CertificateAuthority, hosts: Sequence[str] = ()) -> list[Path]:
    """Write the broker's and API's server certificate and the controller's client one into the CA folder.

    Returns the certificate files written (``server.pem``, ``controller.pem``;
    their keys beside them, 0600).
    """
    folder = ca.folder
    issue_server_certificate(ca, hosts).write(folder / SERVER_CERT, folder / SERVER_KEY)
    _issue_client(ca, CONTROLLER_NAME).write(folder / CONTROLLER_CERT, folder / CONTROLLER_KEY)
    return [folder / SERVER_CERT, folder / CONTROLLER_CERT]


def certificate_request(key_file: Path, device_id: str) -> str:
    """A CSR (PEM) for the device's TLS key, made 0600 in ``key_file`` if it is not there."""
    try:
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except FileNotFoundError:
        made = ec.generate_private_key(ec.SECP256R1())
        write_key(key_file, _key_pem(made))
        loaded = made
    except (OSError, ValueError, TypeError) as exc:
        raise KeyUnavailable(
            f"{key_file}: not a PEM key ({exc}); delete it and enrol again"
        ) from exc
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise KeyUnavailable(f"{key_file}: the device's TLS key is ECDSA, got {type(loaded)}")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(loaded, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def check_certificate_request(csr_pem: str | bytes) -> None:
    """Raise ConfigError unless ``csr_pem`` is a PEM CSR signed by its own (acceptable) key."""
    _csr_key(csr_pem)


def certificate_info(cert: x509.Certificate | Path) -> dict[str, Any]:
    """Subject, issuer, serial, validity, SHA-256 fingerprint and purpose: for ``fogline ca show``."""
    if isinstance(cert, Path):
        cert = _read_certificate(cert)
    try:
        purposes = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        purpose = ", ".join(sorted(oid._name for oid in purposes))
    except x509.ExtensionNotFound:
        purpose = "CA" if _is_ca(cert) else "any"
    return {
        "subject": _common_name(cert.subject),
        "issuer": _common_name(cert.issuer),
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
        "purpose": purpose,
    }


def write_key(path: Path, pem: bytes) -> None:
    """Write a private key atomically, mode 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, pem, mode=0o600)


# -- helpers ------------------------------------------------------------------------------------

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _refuse_existing(ca: CertificateAuthority, force: bool) -> None:
    if not force and (ca.cert_file.exists() or ca.key_file.exists()):
        raise ConfigError(
            f"{ca.folder} already holds a CA: every device certificate depends on it "
            "(pass --force to replace it and re-enrol every device)"
        )


def _sign(
    ca: CertificateAuthority,
    subject: x509.Name,
    public: Any,
    *,
    days: int,
    purpose: x509.ObjectIdentifier,
    not_before: datetime.datetime | None = None,
    names: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    ca_cert, ca_key = ca.certificate(), ca.private_key()
    start = (not_before or _now()) - _SKEW
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(
            min(start + _SKEW + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _csr_key(csr_pem: str | bytes) -> Any:
    raw = csr_pem.encode() if isinstance(csr_pem, str) else csr_pem
    try:
        csr = x509.load_pem_x509_csr(raw)
        valid = csr.is_signature_valid
        public = csr.public_key()
    except (ValueError, InvalidSignature) as exc:
        raise ConfigError(f"csr: not a PEM certificate signing request ({exc})") from None
    if not valid:
        raise ConfigError("csr: its signature does not match its key")
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.name not in ("secp256r1", "secp384r1"):
            raise ConfigError(f"csr: ECDSA keys are P-256 or P-384, got {public.curve.name}")
    elif isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise ConfigError(f"csr: RSA keys are at least 2048 bits, got {public.key_size}")
    elif not isinstance(public, ed25519.Ed25519PublicKey):
        raise ConfigError(f"csr: an ECDSA, RSA or Ed25519 key is needed, got {type(public)}")
    return public


def _read_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(
            f"{path} is missing: make a CA with 'fogline ca init --data FOLDER'"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a PEM certificate ({exc})") from exc


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
