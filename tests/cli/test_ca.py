"""``fogline ca``: make or import the fleet's CA, issue a device from its CSR, refuse with one line."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from fogline.cli import main
from fogline.cli._app import console
from fogline.security import certificate_request, init_ca


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def fogline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """Run ``fogline ARGS`` in this process, in ``tmp_path`` (a subprocess costs seconds each)."""
    monkeypatch.chdir(tmp_path)
    # The console takes its width once, at import (COLUMNS=80 in a pytest-xdist worker).
    monkeypatch.setattr(console, "width", 200)

    def run(*args: str) -> Done:
        status = main(list(args))
        shown = capsys.readouterr()
        return Done(status, shown.out, shown.err)

    return run


def test_ca_init_issue_and_show(tmp_path: Path, fogline: Any) -> None:
    made = fogline("ca", "init", "--data", "fleet-data", "--host", "edge.example")
    assert made.returncode == 0, made.stderr
    assert "serverAuth" in made.stdout and "controller" in made.stdout
    assert stat.S_IMODE((tmp_path / "fleet-data/ca/ca.key").stat().st_mode) == 0o600

    again = fogline("ca", "init", "--data", "fleet-data")
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds a CA" in again.stderr

    csr = tmp_path / "cam-4.csr"
    csr.write_text(certificate_request(tmp_path / "device" / "tls.key", "cam-4"))
    issued = fogline(
        "ca", "issue", "cam-4", "--data", "fleet-data", "--csr", str(csr), "--out", "out"
    )
    assert issued.returncode == 0, issued.stderr
    cert = x509.load_pem_x509_certificate((tmp_path / "out/cam-4.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=cam-4"
    assert not (tmp_path / "out/cam-4.key").exists()  # its key stays on the device
    # the controller's subject is the broker's all-topics user: never a device's
    taken = fogline("ca", "issue", "controller", "--data", "fleet-data", "--out", "out")
    assert taken.returncode == 2 and "'controller' is reserved" in taken.stderr
    assert not (tmp_path / "out/controller.pem").exists()

    shown = fogline("ca", "show", "--data", "fleet-data")
    assert shown.returncode == 0 and "fogline fleet CA" in shown.stdout
    events = [json.loads(line)["event"] for line in (tmp_path / "fleet-data/audit.jsonl").open()]
    assert events == ["key.created", "cert.issued", "cert.issued", "cert.issued"]


def test_an_operators_own_ca_is_imported_and_mtls_without_a_ca_is_refused(
    tmp_path: Path, fogline: Any
) -> None:
    own = init_ca(tmp_path / "corporate", name="Example Corp Devices")
    given = ["--cert", str(own.cert_file), "--key", str(own.key_file)]
    imported = fogline("ca", "init", "--data", "fleet-data", *given)
    assert imported.returncode == 0, imported.stderr
    assert "Example Corp Devices" in imported.stdout and "imported" in imported.stdout

    no_ca = fogline("broker", "--mtls", "--data", "elsewhere/broker")
    assert no_ca.returncode == 2
    assert "fogline ca init" in no_ca.stderr and "Traceback" not in no_ca.stderr
