"""A device's identity on disk: enrolment with a one-time token, its credentials, its trusted root.

``DEV/credentials.json`` (mode 0600) holds the MQTT user name and password the
controller issued and the topic prefix; ``DEV/trust/root.json`` is the TUF
root every release is verified against. Both are written atomically (a
temporary file beside the target, fsync, rename), so a device killed at any
moment has either no file or a whole one, and enrolment can simply be run
again.

Enrolment is one HTTPS (or HTTP) request: ``POST {controller}/api/enrol``
with ``{"device_id", "token", "csr"}``, answered with ``{"username", "password",
"trusted_root", "prefix"}`` and, from a controller with a CA, the device's
``certificate``, the ``ca_certificate`` and the device listener's
``repository`` (:mod:`._certificate`). Failures are a
:class:`~fogline.errors.TransportError` of the most specific kind:
:class:`~fogline.errors.Unreachable` when no connection can be made,
:class:`~fogline.errors.TimedOut` when no answer comes in time, and
:class:`~fogline.errors.Refused` for a 4xx answer (an unknown, used or
expired token) other than 408, 425 and 429; a malformed answer is a
:class:`~fogline.errors.ConfigError`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fogline.errors import ConfigError
from fogline.fleet.agent._certificate import keep_certificate, tls_request
from fogline.fleet.agent._download import http_error, status_error
from fogline.fleet.agent._keyring import enrol_fields
from fogline.protocol import DEFAULT_PREFIX
from fogline.security import ClientTls

CREDENTIALS_NAME = "credentials.json"
TRUSTED_ROOT = Path("trust") / "root.json"


class DeviceLogin(BaseModel):
    """What enrolment gives a device: its MQTT user name and password, and the topic prefix.

    Both are None when the broker takes anonymous clients (a local trial).

    >>> DeviceLogin(username="cam-7", password="s3cret")
    DeviceLogin(username='cam-7', prefix='fogline')
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    username: str | None = Field(default=None, min_length=1)
    password: str | None = Field(default=None, repr=False)
    prefix: str = Field(default=DEFAULT_PREFIX, min_length=1)
    #: Where releases come from with mutual TLS (the controller's device listener); None: the
    #: controller URL's /repository.
    repository: str | None = Field(default=None, repr=False)


class _Enrolment(DeviceLogin):
    trusted_root: str = Field(min_length=2, repr=False)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically with ``mode``, durable when this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        if os.path.exists(name):
            os.unlink(name)


def read_credentials(data: Path) -> DeviceLogin | None:
    """The device's credentials, or None before enrolment."""
    path = data / CREDENTIALS_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the credentials: {exc.strerror or exc}") from exc
    try:
        return DeviceLogin.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(
            f"{path} is not valid credentials ({exc.errors()[0]['msg']}); "
            "delete it and enrol the device again with --token"
        ) from exc


def install_root(data: Path, root: bytes | str) -> Path:
    """Install ``root`` (a TUF root.json) as the device's trusted root; return its path."""
    raw = root.encode() if isinstance(root, str) else root
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"the trusted root is not JSON: {exc}") from exc
    if not isinstance(document, dict) or "signed" not in document:
        raise ConfigError("the trusted root is not a TUF root.json (no 'signed' section)")
    path = data / TRUSTED_ROOT
    write_private(path, raw, 0o644)
    return path


def enrol(
    controller: str,
    data: Path,
    device_id: str,
    token: str,
    *,
    timeout: float = 30.0,
    tls: ClientTls | None = None,
) -> DeviceLogin:
    """Trade a one-time ``token`` for credentials and the trusted root; store both.

    The request carries the device's public release key (:mod:`._keyring`).
    The root (and a TLS certificate, :mod:`._certificate`) is written before
    the credentials: a device with credentials always has what goes with them.
    ``tls`` says which CA the controller's HTTPS certificate is checked with.
    """
    url = controller.rstrip("/") + "/api/enrol"
    request = {
        "device_id": device_id,
        "token": token,
        **tls_request(data, device_id),
        **enrol_fields(data),  # the X25519 key encrypted releases are wrapped for
    }
    verify = True if tls is None else tls.context()
    try:
        response = httpx.post(url, json=request, timeout=timeout, verify=verify)
    except httpx.HTTPError as exc:
        raise http_error(f"cannot enrol at {url}: {exc}", exc) from exc
    if response.status_code >= 400:
        why = response.text
        try:
            body = response.json()
            if isinstance(body, dict) and body.get("error"):
                why = str(body["error"])
        except ValueError:
            pass
        raise status_error(
            f"the controller refused the enrolment of {device_id!r} "
            f"({response.status_code}): {str(why).strip()[:300]}",
            response.status_code,
        )
    try:
        answer = _Enrolment.model_validate_json(response.content)
    except ValidationError as exc:
        raise ConfigError(f"{url} answered with a malformed enrolment: {exc}") from exc
    install_root(data, answer.trusted_root)
    keep_certificate(data, response.json())
    credentials = DeviceLogin(
        username=answer.username,
        password=answer.password,
        prefix=answer.prefix,
        repository=answer.repository,
    )
    write_private(data / CREDENTIALS_NAME, credentials.model_dump_json().encode())
    return credentials
