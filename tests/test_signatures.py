"""certs.signatures.signed_by: whose key made a certificate's signature, whatever the algorithm (names are the
caller's business: an impostor here has a name of its own, and the lab writes each under its name). Pure:
certificates made here (SHA-1 ones by the openssl command, as the lab makes them)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mqtt_cert_exporter.certs.signatures import signed_by
from mqtt_cert_exporter.lab.pki import Issued, Pki

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("key", ["ec256", "ec384", "rsa2048", "ed25519"])
def test_a_signature_links_to_its_issuer_and_to_no_other_key(pki: Pki, key: str) -> None:
    issuer, impostor = pki.root(f"CA {key}", key=key), pki.root(f"Impostor {key}", key=key)
    for leaf_key in ("ec256", "rsa2048"):
        leaf = pki.leaf(f"leaf {key} {leaf_key}", issuer, key=leaf_key).cert
        assert signed_by(leaf, issuer.cert)
        assert not signed_by(leaf, impostor.cert)
    assert signed_by(issuer.cert, issuer.cert)  # a root's own signature
    assert not signed_by(issuer.cert, impostor.cert)


@pytest.mark.parametrize("key", ["ec256", "rsa2048"])
def test_sha1_signatures_link_too(pki: Pki, key: str) -> None:
    issuer, impostor = pki.root(f"SHA-1 CA {key}", key=key), pki.root(f"SHA-1 impostor {key}", key=key)
    leaf = pki.leaf_sha1(f"sha1 leaf {key}", issuer).cert
    assert signed_by(leaf, issuer.cert)
    assert not signed_by(leaf, impostor.cert)


def test_an_rsa_pss_signature_links_to_its_issuer(pki: Pki) -> None:
    issuer, impostor = pki.root("PSS CA", key="rsa2048"), pki.root("PSS impostor", key="rsa2048")
    leaf = pss_signed(issuer)
    assert isinstance(leaf.signature_algorithm_parameters, padding.PSS)
    assert signed_by(leaf, issuer.cert)
    assert not signed_by(leaf, impostor.cert)


def test_a_key_of_another_type_signed_nothing(pki: Pki) -> None:
    ec_issuer, rsa_issuer = pki.root("Mixed EC CA", key="ec256"), pki.root("Mixed RSA CA", key="rsa2048")
    leaf = pki.leaf("mixed leaf", ec_issuer).cert
    assert not signed_by(leaf, rsa_issuer.cert)
    assert not signed_by(pki.leaf("mixed leaf 2", rsa_issuer).cert, ec_issuer.cert)


def pss_signed(issuer: Issued) -> x509.Certificate:
    assert isinstance(issuer.key, rsa.RSAPrivateKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "pss leaf")]))
        .issuer_name(issuer.cert.subject)
        .public_key(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .sign(issuer.key, hashes.SHA256(), rsa_padding=pss)
    )
