"""Mutual TLS on the controller: device certificates at enrolment, and the device listener.

With a CA (``ControllerConfig.ca``, made by ``fogline ca init``) every
enrolment carries the device's certificate signing request and is answered
with a certificate ``CN=<device id>`` (:meth:`DeviceListener.certify`, one
``cert.issued`` event in ``fleet-data/audit.jsonl``), the CA certificate and
where the device listener is.

Operators and devices reach the controller differently, so they get two
listeners rather than one with optional client certificates: uvicorn hands
the application no peer certificate, so a route could not tell a device
that presented one from an operator that did not. The **operator
listener** (``--http-port``) keeps the API, the dashboard and enrolment
behind the bearer token and a one-time enrolment token, over HTTPS with no
client certificate. The **device listener** (``--device-port``) serves the
release repository and ``/api/health`` with ``ssl.CERT_REQUIRED`` against
the fleet's CA: a client without a certificate from that CA (or with an
expired one) fails the TLS handshake and never reaches a route. With mTLS
on, releases are served only there.

Concurrency: uvicorn on a thread of its own, as the operator listener.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from fogline.errors import ConfigError


class DeviceListener:
    """The CA that certifies enrolling devices, and the HTTPS listener that requires their certificates."""

    def __init__(self, ca_folder: Path, audit_file: Path) -> None:
        from fogline.security import CertificateAuthority

        self.ca = CertificateAuthority.at(ca_folder)
        if not self.ca.exists():
            raise ConfigError(
                f"{ca_folder} holds no CA (ca.pem, ca.key): run 'fogline ca init' first"
            )
        self.audit_file = audit_file
        self.port: int | None = None
        self.host = "127.0.0.1"
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str | None:
        """``https://host:port`` of the device listener once it runs."""
        if self.port is None:
            return None
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"https://{host}:{self.port}"

    def certify(self, device_id: str, csr: str) -> dict[str, Any]:
        """Issue ``device_id`` its certificate for ``csr``; record it; what the answer adds."""
        from fogline.security import AuditLog, issue_certificate

        issued = issue_certificate(self.ca, device_id, csr)
        AuditLog(self.audit_file).record(
            "cert.issued",
            subject=device_id,
            serial=issued.serial,
            not_after=issued.certificate.not_valid_after_utc.isoformat(),
            by="enrolment",
        )
        answer: dict[str, Any] = {"certificate": issued.pem, "ca_certificate": issued.ca_pem}
        if self.base_url is not None:
            answer["repository"] = f"{self.base_url}/repository"
        return answer

    def start(
        self,
        routes: Sequence[BaseRoute],
        *,
        host: str,
        port: int,
        cert: Path,
        key: Path,
        timeout: float = 30.0,
    ) -> None:
        """Serve ``routes`` (and ``/api/health``) over HTTPS to clients with a certificate only."""
        import uvicorn

        async def health(request: Request) -> Response:
            return JSONResponse({"ok": True, "time": time.time()})

        app = Starlette(routes=[Route("/api/health", health), *routes])
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_certfile=str(cert),
            ssl_keyfile=str(key),
            ssl_ca_certs=str(self.ca.cert_file),
            ssl_cert_reqs=ssl.CERT_REQUIRED,
        )
        self.host = host
        self._server, self._thread, self.port = serve_in_thread(config, "devices", timeout)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)


def serve_in_thread(config: Any, name: str, timeout: float) -> tuple[Any, threading.Thread, int]:
    """Run a ``uvicorn.Config`` on a thread; return the server, the thread and its port once up."""
    import uvicorn

    server = uvicorn.Server(config)
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:  # reported below
            failure.append(exc)

    thread = threading.Thread(target=serve, name=f"fogline-controller-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if failure or not thread.is_alive():
            reason = failure[0] if failure else "it stopped"
            raise ConfigError(f"HTTP port {config.port}: cannot listen ({reason})")
        if time.monotonic() > deadline:
            raise ConfigError(f"the controller's {name} listener did not start in time")
        time.sleep(0.01)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]
