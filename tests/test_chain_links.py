"""Which certificate issued which: by key identifier when OpenSSL verified the chain, by signature
otherwise (certs.chain.is_issued_by). Pure: chains made here, no network."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs import chain
from mqtt_cert_exporter.certs.chain import build_path, classify
from mqtt_cert_exporter.certs.parse import Parsed, TrustStore, parse_der
from mqtt_cert_exporter.certs.revocation import issuer_of
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.results import Problem

NOW = dt.datetime.now(dt.UTC)
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20


@pytest.fixture(autouse=True)
def fresh_links(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test judges its pairs itself: nothing an earlier test (or path) linked is reused."""
    monkeypatch.setattr(chain, "SIGNATURES", BoundedCache("signatures", max_entries=1024, max_bytes=1 << 20))
    yield


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    p = Pki(tmp_path_factory.mktemp("pki"))
    root = p.root("Root")
    inter = p.intermediate("Inter", root)
    return {"root": root, "inter": inter, "leaf": p.leaf("leaf", inter), "self": p.leaf("self", None)}


def parsed(cert: Issued | x509.Certificate) -> Parsed:
    loaded = cert.cert if isinstance(cert, Issued) else cert
    return parse_der(loaded.public_bytes(Encoding.DER))


def store(root: Issued) -> TrustStore:
    return TrustStore("the test store", (parsed(root),))


def issue(
    subject: x509.Name,
    key: ec.EllipticCurvePublicKey,
    issuer: Issued,
    *,
    ca: bool,
    subject_key_id: bytes | None,
    authority_key_id: bytes | None,
) -> x509.Certificate:
    """A certificate signed by ``issuer`` with the key identifiers given (None: no such extension)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    if subject_key_id is not None:
        builder = builder.add_extension(x509.SubjectKeyIdentifier(subject_key_id), critical=False)
    if authority_key_id is not None:
        authority = x509.AuthorityKeyIdentifier(authority_key_id, None, None)
        builder = builder.add_extension(authority, critical=False)
    assert isinstance(issuer.key, ec.EllipticCurvePrivateKey)
    return builder.sign(issuer.key, hashes.SHA256())


def key_id(cert: Issued) -> bytes:
    return cert.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def leaf_name() -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "localhost")])


def new_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def test_the_key_identifiers_are_parsed(pki: dict[str, Issued]) -> None:
    leaf, inter, root = parsed(pki["leaf"]), parsed(pki["inter"]), parsed(pki["root"])
    assert leaf.authority_key_id == inter.subject_key_id == key_id(pki["inter"])
    assert inter.authority_key_id == root.subject_key_id == key_id(pki["root"])
    assert leaf.subject_key_id is not None and leaf.subject_key_id != inter.subject_key_id
    garbage = parse_der(b"\x30\x03\x02\x01\x00")
    assert garbage.authority_key_id is None and garbage.subject_key_id is None


def test_a_verified_chain_finds_its_anchor_as_with_signature_checks(pki: dict[str, Issued]) -> None:
    presented = (parsed(pki["leaf"]), parsed(pki["inter"]))
    by_key_id = build_path(presented, (), store(pki["root"]), verified=True)
    chain.SIGNATURES = BoundedCache("signatures", max_entries=1024, max_bytes=1 << 20)
    by_signature = build_path(presented, (), store(pki["root"]), verified=False)
    assert by_key_id == by_signature
    assert by_key_id.anchor == parsed(pki["root"]) and by_key_id.dead_end is None


def test_the_link_a_verified_chain_made_serves_the_revocation_check(pki: dict[str, Issued]) -> None:
    presented = (parsed(pki["leaf"]), parsed(pki["inter"]))
    verdict = classify(
        presented, verify_code=None, server_name="localhost", now=NOW.timestamp(), store=store(pki["root"])
    )
    assert verdict.trusted and verdict.anchor == parsed(pki["root"]).facts
    assert chain.SIGNATURES.get((presented[0].der, presented[1].der), 0.0) is True
    assert issuer_of(presented[0], presented, store(pki["root"])) == presented[1]


def test_without_key_identifiers_the_signature_links_a_verified_chain(pki: dict[str, Issued]) -> None:
    inter = pki["inter"]
    bare = issue(leaf_name(), new_key(), inter, ca=False, subject_key_id=None, authority_key_id=None)
    assert parsed(bare).authority_key_id is None
    path = build_path((parsed(bare), parsed(inter)), (), store(pki["root"]), verified=True)
    assert path.anchor == parsed(pki["root"]) and path.certs == (parsed(bare), parsed(inter))


def test_an_issuer_reissued_with_another_key_identifier_is_linked_by_its_signature(
    pki: dict[str, Issued],
) -> None:
    """A CA that re-issued its certificate (same name and key) with a new subjectKeyIdentifier: the leaf's
    authorityKeyIdentifier names the old one, the signature still says who signed it."""
    inter = pki["inter"]
    reissued = issue(
        inter.cert.subject,
        inter.cert.public_key(),  # type: ignore[arg-type]
        pki["root"],
        ca=True,
        subject_key_id=b"\x01" * 20,
        authority_key_id=key_id(pki["root"]),
    )
    presented = (parsed(pki["leaf"]), parsed(reissued))
    assert presented[0].authority_key_id != presented[1].subject_key_id
    path = build_path(presented, (), store(pki["root"]), verified=True)
    assert path.anchor == parsed(pki["root"]) and path.certs == presented


def test_an_impostor_with_the_issuers_name_and_key_identifier_is_not_the_issuer_of_a_rejected_chain(
    pki: dict[str, Issued],
) -> None:
    """Only OpenSSL's verification of the chain vouches for a key identifier: when it rejected the
    chain, the signature decides, and a certificate that copies the issuer's name and key identifier
    around another key is not taken for the issuer."""
    inter = pki["inter"]
    impostor = issue(
        inter.cert.subject,
        new_key(),
        pki["root"],
        ca=True,
        subject_key_id=key_id(inter),
        authority_key_id=key_id(pki["root"]),
    )
    presented = (parsed(pki["leaf"]), parsed(impostor))
    assert presented[0].authority_key_id == presented[1].subject_key_id
    verdict = classify(
        presented,
        verify_code=UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        verify_message="unable to get local issuer certificate",
        server_name="localhost",
        now=NOW.timestamp(),
        store=store(pki["root"]),
    )
    assert verdict.anchor is None
    assert verdict.problems == (Problem.UNKNOWN_CA,)
    assert "CN=Inter, which is neither sent by the server" in verdict.details[0]


def test_a_self_signed_leaf_is_still_recognized(pki: dict[str, Issued]) -> None:
    verdict = classify(
        (parsed(pki["self"]),),
        verify_code=18,
        verify_message="self-signed certificate",
        server_name="localhost",
        now=NOW.timestamp(),
        store=store(pki["root"]),
    )
    assert verdict.problems == (Problem.SELF_SIGNED,)
