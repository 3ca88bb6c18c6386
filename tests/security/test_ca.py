"""The fleet's CA: what it issues, what it refuses, and how its keys are kept."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fogline.errors import ConfigError, KeyUnavailable
from fogline.security import (
    CertificateAuthority,
    ClientTls,
    certificate_request,
    check_certificate_request,
    import_ca,
    init_ca,
    issue_certificate,
    issue_fleet_certificates,
)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return init_ca(tmp_path_factory.mktemp("fleet") / "ca")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_device_certificate_names_the_enrolled_device_not_what_the_csr_claims(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    claims = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "controller")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(claims).sign(key, hashes.SHA256())

    issued = issue_certificate(ca, "cam-7", csr.public_bytes(serialization.Encoding.PEM))

    cert = issued.certificate
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "cam-7"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 300 < (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 398
    cert.verify_directly_issued_by(ca.certificate())
    assert issued.key_pem is None  # the key stayed with whoever made the request


def test_a_device_makes_its_key_once_0600_and_only_sends_a_request(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "tls.key"
    first = certificate_request(key_file, "cam-7")
    second = certificate_request(key_file, "cam-7")

    assert mode(key_file) == 0o600
    assert "PRIVATE KEY" not in first
    one, two = (x509.load_pem_x509_csr(pem.encode()) for pem in (first, second))
    assert one.public_key().public_numbers() == two.public_key().public_numbers()  # same key


def test_a_request_that_is_not_one_or_whose_signature_fails_is_refused(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    good = certificate_request(tmp_path / "tls.key", "cam-7")
    with pytest.raises(ConfigError, match="not a PEM certificate signing request"):
        check_certificate_request("hello")
    body = good.splitlines()
    middle = len(body) // 2
    body[middle] = body[middle][:-4] + ("AAAA" if not body[middle].endswith("AAAA") else "BBBB")
    with pytest.raises(ConfigError, match="csr"):
        issue_certificate(ca, "cam-7", "\n".join(body))


def test_the_ca_and_fleet_keys_are_0600_and_a_ca_is_never_replaced_silently(
    tmp_path: Path,
) -> None:
    made = init_ca(tmp_path / "ca")
    files = issue_fleet_certificates(made, ["broker.example"])

    assert mode(made.key_file) == 0o600
    assert all(mode(path.with_suffix(".key")) == 0o600 for path in files)
    server = x509.load_pem_x509_certificate(files[0].read_bytes())
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "broker.example"}
    with pytest.raises(ConfigError, match="already holds a CA"):
        init_ca(tmp_path / "ca")


def test_an_operators_own_ca_is_checked_then_used(ca: CertificateAuthority, tmp_path: Path) -> None:
    imported = import_ca(tmp_path / "ca", ca.cert_file, ca.key_file)
    issued = issue_certificate(imported, "cam-8")
    issued.certificate.verify_directly_issued_by(ca.certificate())

    leaf, leaf_key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    issued.write(leaf, leaf_key)
    with pytest.raises(ConfigError, match="not a CA certificate"):
        import_ca(tmp_path / "other", leaf, leaf_key)
    other = init_ca(tmp_path / "stranger")
    with pytest.raises(ConfigError, match="is not the key of"):
        import_ca(tmp_path / "other", ca.cert_file, other.key_file)
    with pytest.raises(KeyUnavailable, match="missing"):
        CertificateAuthority.at(tmp_path / "nowhere").private_key()


def test_client_tls_needs_a_certificate_and_its_key_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs its key"):
        ClientTls(key=tmp_path / "k")
    with pytest.raises(ConfigError, match="does not exist"):
        ClientTls(ca=tmp_path / "missing.pem").context()
    with pytest.raises(KeyUnavailable, match="missing"):
        ClientTls(cert=tmp_path / "c.pem", key=tmp_path / "k.pem").context()
    assert ClientTls.from_env({}) is None
    assert ClientTls.from_env({"FOGLINE_TLS_CA": "ca.pem"}) == ClientTls(Path("ca.pem"))


def test_an_intermediate_ca_is_kept_with_its_chain_so_devices_verify_to_the_root(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    root = ca.certificate()
    now = root.not_valid_before_utc
    middle = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Plant 4 Devices")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(root.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key().public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
        .sign(ca.private_key(), hashes.SHA256())
    )
    chain, chain_key = tmp_path / "chain.pem", tmp_path / "middle.key"
    chain.write_bytes(middle.public_bytes(serialization.Encoding.PEM) + ca.cert_file.read_bytes())
    chain_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    imported = import_ca(tmp_path / "ca", chain, chain_key)

    issued = issue_certificate(imported, "cam-9")

    trusted = x509.load_pem_x509_certificates(issued.ca_pem.encode())
    assert [c.subject for c in trusted] == [middle.subject, root.subject]
    issued.certificate.verify_directly_issued_by(trusted[0])  # the device, by the intermediate
    trusted[0].verify_directly_issued_by(trusted[1])  # the intermediate, by the root
