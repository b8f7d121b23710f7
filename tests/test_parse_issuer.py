"""A certificate's issuer: found in the DER (certs.der), its Name (for signature checks) and text made once
per distinct encoding (parse.named_issuer, parse.ISSUER_NAMES), and its text as parse_der reads it. Pure:
certificates made here, no network."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs import parse
from mqtt_cert_exporter.certs.der import issuer_name
from mqtt_cert_exporter.certs.parse import load_certificate, named_issuer, parse_der

NOW = dt.datetime.now(dt.UTC)
KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(parse, "PARSED", BoundedCache("certificates", max_entries=1024, max_bytes=1 << 20))
    monkeypatch.setattr(parse, "ISSUER_NAMES", BoundedCache("issuer names", max_entries=3, max_bytes=1 << 20))
    yield


def name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


def certificate(subject: x509.Name, issuer: x509.Name, *, serial: int | None = None) -> bytes:
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(KEY.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


CN = x509.NameOID.COMMON_NAME
ORG = x509.NameOID.ORGANIZATION_NAME
CA = name((CN, "Fleet CA"), (ORG, "Example, Inc."))


def test_the_issuer_is_found_as_encoded() -> None:
    for serial in (1, 1 << 150):  # a short serial and one whose length takes more bytes
        der = certificate(name((CN, "leaf")), CA, serial=serial)
        assert issuer_name(der) == x509.load_der_x509_certificate(der).issuer.public_bytes()


@pytest.mark.parametrize(
    "der", [b"", b"\x30", b"\x30\x03\x02\x01\x00", b"\x31\x00", b"\x30\x84\xff\xff\xff\xff"]
)
def test_what_is_not_shaped_like_a_certificate_has_no_issuer(der: bytes) -> None:
    assert issuer_name(der) is None


def test_a_truncated_certificate_has_no_issuer() -> None:
    der = certificate(name((CN, "leaf")), CA)
    assert issuer_name(der[:40]) is None


def issuer_of(der: bytes) -> tuple[x509.Name, str]:
    return named_issuer(load_certificate(der), der)


def test_leaves_of_one_issuer_share_its_name_and_each_issuer_has_its_own() -> None:
    ders = [certificate(name((CN, f"leaf-{n}")), CA) for n in range(3)]
    other_der = certificate(name((CN, "leaf-x")), name((CN, "Other CA")))
    leaves, other = [parse_der(der) for der in ders], parse_der(other_der)
    assert {leaf.facts.issuer for leaf in leaves} == {"O=Example\\, Inc.,CN=Fleet CA"}
    assert other.facts.issuer == "CN=Other CA"
    assert not any(leaf.facts.self_issued for leaf in [*leaves, other])
    names = [issuer_of(der) for der in ders]
    assert all(found is names[0] for found in names)  # made once, shared
    assert names[0] == (CA, "O=Example\\, Inc.,CN=Fleet CA")
    assert issuer_of(other_der) == (name((CN, "Other CA")), "CN=Other CA")
    assert len(parse.ISSUER_NAMES) == 2


def test_a_self_issued_certificate_is_still_recognized() -> None:
    parse_der(certificate(name((CN, "leaf")), CA))  # the issuer's name is known before
    root = parse_der(certificate(CA, CA))
    assert root.facts.self_issued
    assert root.facts.issuer == root.facts.subject == "O=Example\\, Inc.,CN=Fleet CA"


def test_the_issuer_names_are_bounded() -> None:
    for n in range(10):
        der = certificate(name((CN, "leaf")), name((CN, f"CA {n}")))
        assert parse_der(der).facts.issuer == issuer_of(der)[1] == f"CN=CA {n}"
    assert len(parse.ISSUER_NAMES) == 3  # the least recently used went


def test_a_version_1_certificate_has_its_issuer_found_too(tmp_path: Path) -> None:
    """No version field (openssl x509 -req without extensions still makes these)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command (Debian package openssl) to make a version 1 certificate")
    key = tmp_path / "key.pem"
    key.write_bytes(
        KEY.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    csr = (
        x509.CertificateSigningRequestBuilder().subject_name(name((CN, "v1 leaf"))).sign(KEY, hashes.SHA256())
    )
    (tmp_path / "leaf.csr").write_bytes(csr.public_bytes(Encoding.PEM))
    ca = tmp_path / "ca.pem"
    ca.write_bytes(x509.load_der_x509_certificate(certificate(CA, CA)).public_bytes(Encoding.PEM))
    command = [openssl, "x509", "-req", "-in", str(tmp_path / "leaf.csr"), "-CA", str(ca), "-CAkey", str(key)]
    command += ["-set_serial", "7", "-days", "5", "-outform", "DER", "-out", str(tmp_path / "leaf.der")]
    subprocess.run(command, check=True, capture_output=True)
    der = (tmp_path / "leaf.der").read_bytes()
    assert x509.load_der_x509_certificate(der).version is x509.Version.v1
    assert issuer_name(der) == CA.public_bytes()
    assert parse_der(der).facts.issuer == "O=Example\\, Inc.,CN=Fleet CA"
