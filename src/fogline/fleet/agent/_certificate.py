"""A device's TLS identity: the key it makes, the certificate enrolment brings, what it trusts.

With mutual TLS the device presents a client certificate to the broker and
to the controller's device listener. Its private key is made on the device
(``DEV/keys/tls.key``, 0600, in a 0700 folder) and never leaves it: the
enrol request carries a certificate signing request (:func:`tls_request`),
and the answer brings the certificate (``DEV/keys/tls.pem``), the CA
certificate (``DEV/trust/ca.pem``) and the address of the device listener
(:func:`keep_certificate`). A controller without a CA ignores the request and
sends none of these; the device then connects as before.

:func:`device_tls` is what the agent connects with: the operator's
``--tls-cert``/``--tls-key``/``--tls-ca`` win, then the enrolment's files,
then ``FOGLINE_TLS_*``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fogline._files import atomic_write, keep_private
from fogline.errors import ConfigError
from fogline.security import ClientTls

TLS_KEY = Path("keys") / "tls.key"
TLS_CERT = Path("keys") / "tls.pem"
TRUSTED_CA = Path("trust") / "ca.pem"


def tls_request(data: Path, device_id: str) -> dict[str, str]:
    """The enrol request's ``csr``: a CSR for the device's TLS key (made now if it has none)."""
    from fogline.security import certificate_request  # loads cryptography only to enrol

    keep_private(data / TLS_KEY.parent)
    return {"csr": certificate_request(data / TLS_KEY, device_id)}


def keep_certificate(data: Path, answer: dict[str, Any]) -> bool:
    """Store the certificate and CA an enrolment answer brings; whether it brought them."""
    cert, ca = answer.get("certificate"), answer.get("ca_certificate")
    if cert is None and ca is None:
        return False
    if not isinstance(cert, str) or not isinstance(ca, str) or "BEGIN CERTIFICATE" not in cert:
        raise ConfigError("the enrolment answer's certificate or ca_certificate is not PEM")
    atomic_write(data / TRUSTED_CA, ca.encode())  # the CA first: a certificate needs it
    atomic_write(data / TLS_CERT, cert.encode())
    return True


def device_tls(
    data: Path, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ClientTls | None:
    """What the device trusts and presents over TLS, or None to use ``FOGLINE_TLS_*``/the system's."""
    enrolled = (data / TLS_CERT).is_file()
    if cert is None and key is None and enrolled:
        cert, key = data / TLS_CERT, data / TLS_KEY
    if ca is None and (data / TRUSTED_CA).is_file():
        ca = data / TRUSTED_CA
    if ca is None and cert is None and key is None:
        return ClientTls.from_env()
    return ClientTls(ca, cert, key)
