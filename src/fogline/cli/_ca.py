"""``fogline ca init|issue|show``: the fleet's certificate authority for mutual TLS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from fogline.cli._app import app, console, needs_extra
from fogline.cli._options import data_option, file_option
from fogline.errors import ConfigError

ca = typer.Typer(
    help="The fleet's certificate authority: device, broker and API certificates (mutual TLS).",
    no_args_is_help=True,
)
app.add_typer(ca, name="ca")

_DATA = data_option("The controller's data folder (the CA goes in DATA/ca).")


def _audit(data: Path, event: str, **fields: Any) -> None:
    from fogline.security import AuditLog

    AuditLog(data / "audit.jsonl").record(event, **fields)


def _table(title: str, files: list[Path], folder: Path) -> None:
    from fogline.security import certificate_info

    table = Table(title=title)
    for column in ("file", "subject", "issuer", "purpose", "expires", "sha-256"):
        table.add_column(column)
    for path in files:
        info = certificate_info(path)
        table.add_row(
            escape(path.name if path.parent == folder else str(path)),
            escape(info["subject"]),
            escape(info["issuer"]),
            info["purpose"],
            info["not_after"].strftime("%Y-%m-%d"),
            info["fingerprint"][:12],
        )
    console.print(table)


@ca.command("init")
def init(
    data: Path = _DATA,
    host: list[str] = typer.Option(
        [],
        "--host",
        help="A name or address devices reach the broker and controller by (besides "
        "localhost and 127.0.0.1); repeat for more.",
    ),
    cert: Path | None = file_option(
        "--cert", "Your own CA's certificate (PEM), to use instead of a new CA."
    ),
    key: Path | None = file_option("--key", "Your own CA's private key (PEM)."),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing CA (every device must enrol again)."
    ),
) -> None:
    """Make the fleet's CA (or import yours), and the broker's, API's and controller's certificates."""
    needs_extra("fleet", "cryptography")
    from fogline.security import certificate_info, import_ca, init_ca, issue_fleet_certificates

    folder = data / "ca"
    if (cert is None) != (key is None):
        raise ConfigError("--cert and --key go together: your CA's certificate and its key")
    if cert is not None and key is not None:
        authority = import_ca(folder, cert, key, force=force)
        how = f"imported from {cert}"
    else:
        authority = init_ca(folder, force=force)
        how = "new, ECDSA P-256"
    info = certificate_info(authority.cert_file)
    _audit(data, "key.created", kind="tls-ca", subject=info["subject"], how=how)
    issued = issue_fleet_certificates(authority, host)
    for path in issued:
        made = certificate_info(path)
        _audit(data, "cert.issued", subject=made["subject"], serial=made["serial"], by="ca init")
    files = [authority.cert_file, *issued]
    _table(f"certificate authority in {escape(str(folder))} ({how})", files, folder)
    console.print(
        f"Keys are 0600 beside each certificate; give devices {escape(str(authority.cert_file))} "
        "(public). Next: 'fogline broker --mtls' and 'fogline controller --mtls'.",
        highlight=False,
    )


@ca.command("issue")
def issue(
    device_id: str = typer.Argument(..., help="The device id: the certificate's subject (CN)."),
    data: Path = _DATA,
    csr: Path | None = typer.Option(
        None, "--csr", help="The device's certificate signing request (default: make a key here)."
    ),
    out: Path = typer.Option(
        Path("."), "--out", help="Folder for DEVICE.pem (and DEVICE.key, 0600, without --csr)."
    ),
    days: int = typer.Option(397, "--days", min=1, max=3650, help="Days the certificate is valid."),
) -> None:
    """Issue one device a client certificate by hand (enrolment does it by itself)."""
    needs_extra("fleet", "cryptography")
    from fogline.protocol import check_device_id
    from fogline.security import CertificateAuthority, issue_certificate

    try:
        check_device_id(device_id)
    except ValueError as exc:
        raise ConfigError(f"DEVICE_ID: {exc}") from None
    request = None
    if csr is not None:
        try:
            request = csr.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--csr {csr}: {exc.strerror or exc}") from None
    issued = issue_certificate(CertificateAuthority.at(data / "ca"), device_id, request, days=days)
    cert_file = out / f"{device_id}.pem"
    key_file = out / f"{device_id}.key"
    issued.write(cert_file, key_file)
    _audit(
        data,
        "cert.issued",
        subject=device_id,
        serial=issued.serial,
        not_after=issued.certificate.not_valid_after_utc.isoformat(),
        by="ca issue",
    )
    _table(f"issued to {escape(device_id)}", [cert_file], out)
    if issued.key_pem is not None:
        console.print(f"Its key: {escape(str(key_file))} (0600; copy it to the device only).")


@ca.command("show")
def show(
    data: Path = _DATA,
    files: list[Path] = typer.Argument(None, help="More certificates to show (PEM files)."),
) -> None:
    """The CA and the certificates in DATA/ca (and any given): subject, purpose, expiry."""
    needs_extra("fleet", "cryptography")
    folder = data / "ca"
    kept = sorted(path for path in folder.glob("*.pem")) if folder.is_dir() else []
    if not kept and not files:
        raise ConfigError(f"{folder} holds no certificates: run 'fogline ca init --data {data}'")
    _table(f"certificates in {escape(str(folder))}", [*kept, *(files or [])], folder)
