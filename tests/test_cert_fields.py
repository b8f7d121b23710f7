"""A certificate's facts read straight from its DER (``certs.fields``) are what cryptography's objects say
(``parse.parse_with_cryptography``): for the shapes servers send, for the shapes left to cryptography,
and for DER mutated byte by byte (a hostile broker chooses every byte it sends). Pure: certificates made
here, no network.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import warnings
from collections.abc import Callable, Iterable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from mqtt_cert_exporter.certs import fields
from mqtt_cert_exporter.certs.parse import NOT_LOADED, parse_der, parse_with_cryptography
from mqtt_cert_exporter.lab.pki import generate_key

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey
Digest = hashes.SHA224 | hashes.SHA256 | hashes.SHA384 | hashes.SHA512
NOW = dt.datetime(2026, 12, 4, tzinfo=dt.UTC)
CN, ORG = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME


@functools.cache
def key(kind: str) -> Key:
    match kind:
        case "p521":
            return ec.generate_private_key(ec.SECP521R1())
        case "secp256k1":
            return ec.generate_private_key(ec.SECP256K1())
        case "ed448":
            return ed448.Ed448PrivateKey.generate()
    made = generate_key(kind)
    assert not isinstance(made, ed448.Ed448PrivateKey)
    return made


def name(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])


CA_NAME = name((CN, "Fleet Intermediate"), (ORG, "Example, Inc."))
LEAF_NAME = name((CN, "broker.example"), (ORG, "Example"))
SHA256 = hashes.SHA256()


def certificate(
    subject: x509.Name = LEAF_NAME,
    *,
    issuer: x509.Name = CA_NAME,
    subject_key: str = "ec256",
    signer: str = "ec256",
    extensions: Iterable[tuple[x509.ExtensionType, bool]] = (),
    serial: int = 0x1D2C3B4A,
    not_before: dt.datetime = NOW - dt.timedelta(days=1),
    not_after: dt.datetime = NOW + dt.timedelta(days=90),
    digest: Digest | None = SHA256,
    pss: bool = False,
) -> bytes:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key(subject_key).public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    signing = key(signer)
    if isinstance(signing, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        digest = None
    if pss:
        assert isinstance(signing, rsa.RSAPrivateKey) and digest is not None
        pss_padding = padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.DIGEST_LENGTH)
        return builder.sign(signing, digest, rsa_padding=pss_padding).public_bytes(Encoding.DER)
    return builder.sign(signing, digest).public_bytes(Encoding.DER)


def san(*names: str) -> tuple[x509.SubjectAlternativeName, bool]:
    general: list[x509.GeneralName] = []
    for item in names:
        kind, _, value = item.partition(":")
        if kind == "ip":
            general.append(x509.IPAddress(ipaddress.ip_address(value)))
        elif kind == "email":
            general.append(x509.RFC822Name(value))
        elif kind == "uri":
            general.append(x509.UniformResourceIdentifier(value))
        else:
            general.append(x509.DNSName(value))
    return x509.SubjectAlternativeName(general), False


def server_leaf(key_kind: str = "ec256", signer: str = "ec256", digest: Digest | None = SHA256) -> bytes:
    """A leaf as CAs issue them: every extension servers' certificates carry."""
    subject_key = key(key_kind)
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        san("broker.example", "*.mqtt.example", "ip:192.0.2.7", "ip:2001:db8::7", "ip:::1"),
        (x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()), False),
        (x509.AuthorityKeyIdentifier(b"\x01" * 20, None, None), False),
        (
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.OCSP,
                        x509.UniformResourceIdentifier("http://ocsp.example"),
                    ),
                    x509.AccessDescription(
                        AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier("http://ca.example/int.der"),
                    ),
                ]
            ),
            False,
        ),
        (
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [
                            x509.UniformResourceIdentifier("HTTP://crl.example/a.crl"),
                            x509.UniformResourceIdentifier("ldap://ldap.example/cn=CA"),
                        ],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            False,
        ),
        (
            x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("2.23.140.1.2.1"), None)]),
            False,
        ),
    ]
    return certificate(subject_key=key_kind, signer=signer, extensions=extensions, digest=digest)


def ca_certificate(path_length: int | None = 0) -> bytes:
    return certificate(
        CA_NAME,
        issuer=CA_NAME,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=path_length), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
            (x509.SubjectKeyIdentifier.from_public_key(key("ec256").public_key()), False),
        ],
        not_after=NOW + dt.timedelta(days=3650),
    )


def replaced(der: bytes, old: bytes, new: bytes) -> bytes:
    """``der`` with ``old`` (found once) replaced in place by ``new`` of the same length: a shape
    cryptography's builder does not make (the signature no longer matches; nothing here checks it)."""
    assert len(old) == len(new) and der.count(old) == 1
    return der.replace(old, new)


SHA256_WITH_RSA = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b"


def weakly_signed(last_arc: bytes) -> bytes:
    """A leaf whose signature algorithm (both places) says sha1WithRSAEncryption (arc 5) or
    md5WithRSAEncryption (4): cryptography no longer signs so; real brokers still serve them."""
    der = server_leaf(signer="rsa2048")
    assert der.count(SHA256_WITH_RSA) == 2
    return der.replace(SHA256_WITH_RSA, SHA256_WITH_RSA[:-1] + last_arc)


#: shapes read here, each as cryptography reads it
READ_HERE: dict[str, Callable[[], bytes]] = {
    "a server's leaf, EC P-256": server_leaf,
    "a server's leaf, RSA 2048 signed by RSA": lambda: server_leaf("rsa2048", "rsa2048"),
    "a server's leaf, RSA 1024": lambda: server_leaf("rsa1024"),
    "a leaf with an EC P-384 key, signed with SHA-384": lambda: server_leaf(
        "ec384", "ec384", digest=hashes.SHA384()
    ),
    "a leaf with an EC P-521 key, signed with SHA-512": lambda: server_leaf(
        "p521", "p521", digest=hashes.SHA512()
    ),
    "a leaf with an Ed25519 key, signed with Ed25519": lambda: server_leaf("ed25519", "ed25519"),
    "a leaf with an Ed448 key, signed with Ed448": lambda: server_leaf("ed448", "ed448"),
    "a leaf signed with SHA-1 (RSA)": lambda: weakly_signed(b"\x05"),
    "a leaf signed with MD5 (RSA)": lambda: weakly_signed(b"\x04"),
    "a leaf signed with SHA-224 by RSA": lambda: server_leaf(signer="rsa2048", digest=hashes.SHA224()),
    "a CA certificate": ca_certificate,
    "a CA certificate without a path length": lambda: ca_certificate(None),
    "a self-issued leaf": lambda: certificate(issuer=LEAF_NAME),
    "names RFC 4514 escapes": lambda: certificate(
        name(
            (CN, '#1 "broker", a+b; <c> \\ d '),
            (ORG, " leading space"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "nul\0inside"),
        )
    ),
    "names with every short attribute name and a dotted one": lambda: certificate(
        name(
            (NameOID.COUNTRY_NAME, "DE"),
            (NameOID.STATE_OR_PROVINCE_NAME, "Bayern"),
            (NameOID.LOCALITY_NAME, "München"),
            (NameOID.STREET_ADDRESS, "Straße 1"),
            (ORG, "Rück AG"),
            (NameOID.ORGANIZATIONAL_UNIT_NAME, "IoT"),
            (NameOID.DOMAIN_COMPONENT, "example"),
            (NameOID.USER_ID, "u1"),
            (NameOID.EMAIL_ADDRESS, "ops@example.com"),
            (NameOID.SERIAL_NUMBER, "42"),
            (CN, "broker"),
        )
    ),
    "an empty subject": lambda: certificate(x509.Name([]), extensions=[(san("broker.example")[0], True)]),
    "a value of a single space": lambda: certificate(name((CN, " "))),
    "SAN with e-mail and URI names": lambda: certificate(
        extensions=[san("email:ops@example.com", "uri:https://broker.example/", "broker.example")]
    ),
    "a long serial": lambda: certificate(serial=(1 << 159) - 12345),
    "a serial of 1": lambda: certificate(serial=1),
    "dates of 1950 (UTCTime) and after 2049 (GeneralizedTime)": lambda: certificate(
        not_before=dt.datetime(1950, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2051, 2, 28, 1, 2, 3, tzinfo=dt.UTC),
    ),
    "dates of the last century (UTCTime)": lambda: certificate(
        not_before=dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        not_after=dt.datetime(2000, 2, 29, 12, 0, 0, tzinfo=dt.UTC),
    ),
    "no extensions at all": certificate,
}

#: shapes left to cryptography (None here), read by parse_der as cryptography reads them
LEFT_TO_CRYPTOGRAPHY: dict[str, Callable[[], bytes]] = {
    "a multi-valued RDN": lambda: certificate(
        x509.Name(
            [x509.RelativeDistinguishedName([x509.NameAttribute(CN, "a"), x509.NameAttribute(ORG, "b")])]
        )
    ),
    "a BMPString value": lambda: replaced(
        certificate(name((CN, "Bx"), (ORG, "Example"))), b"\x0c\x02Bx", b"\x1e\x02\x00B"
    ),
    "a key on a curve not read here (secp256k1)": lambda: certificate(subject_key="secp256k1"),
    "an RSA key under 1024 bits": lambda: certificate(subject_key="rsa512"),
    "an RSA-PSS signature": lambda: certificate(signer="rsa2048", pss=True),
    "authorityKeyIdentifier with issuer and serial": lambda: certificate(
        extensions=[
            (x509.AuthorityKeyIdentifier(b"\x02" * 20, [x509.DirectoryName(CA_NAME)], 7), False),
        ]
    ),
    "SAN with a directory name": lambda: certificate(
        extensions=[(x509.SubjectAlternativeName([x509.DirectoryName(CA_NAME)]), False)]
    ),
    "a CRL distribution point with a CRL issuer": lambda: certificate(
        extensions=[
            (
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier("http://crl.example/a.crl")],
                            None,
                            None,
                            [x509.DirectoryName(CA_NAME)],
                        )
                    ]
                ),
                False,
            )
        ]
    ),
    "a duplicate extension": lambda: replaced(  # extendedKeyUsage's OID turned into keyUsage's
        server_leaf(), b"\x06\x03\x55\x1d\x25", b"\x06\x03\x55\x1d\x0f"
    ),
    "a non-UTF-8 value": lambda: replaced(certificate(name((CN, "Bx"))), b"\x0c\x02Bx", b"\x0c\x02\xc3\x28"),
}


def read(der: bytes) -> fields.Read | None:
    return fields.read(der, hashlib.sha256(der).hexdigest())


def by_cryptography(der: bytes) -> fields.Read:
    parsed = parse_with_cryptography(der)
    return parsed.facts, parsed.authority_key_id, parsed.subject_key_id


@pytest.mark.parametrize("shape", READ_HERE)
def test_a_shape_servers_send_is_read_here_as_cryptography_reads_it(shape: str) -> None:
    der = READ_HERE[shape]()
    found = read(der)
    assert found is not None, "left to cryptography"
    assert found == by_cryptography(der)
    assert not found[0].parse_error


def test_what_is_read_here_is_what_parse_der_gives() -> None:
    der = server_leaf()
    parsed = parse_der(der)
    assert (parsed.facts, parsed.authority_key_id, parsed.subject_key_id) == read(der)
    assert parsed.facts.ip_addresses == ("192.0.2.7", "2001:db8::7", "::1")
    assert parsed.facts.crl_urls == ("HTTP://crl.example/a.crl",)
    assert parsed.facts.ca_issuers_urls == ("http://ca.example/int.der",)


@pytest.mark.parametrize("shape", LEFT_TO_CRYPTOGRAPHY)
def test_other_shapes_are_left_to_cryptography(shape: str) -> None:
    der = LEFT_TO_CRYPTOGRAPHY[shape]()
    assert read(der) is None
    parsed = parse_der(der)
    assert (parsed.facts, parsed.authority_key_id, parsed.subject_key_id) == by_cryptography(der)


READ_HERE_OIDS = {
    x509.ObjectIdentifier(fields.dotted(oid))
    for oid in (
        fields.SUBJECT_ALTERNATIVE_NAME,
        fields.BASIC_CONSTRAINTS,
        fields.AUTHORITY_INFORMATION_ACCESS,
        fields.CRL_DISTRIBUTION_POINTS,
        fields.AUTHORITY_KEY_IDENTIFIER,
        fields.SUBJECT_KEY_IDENTIFIER,
    )
}


def _not_read_here(der: bytes) -> list[range]:
    """Where a changed byte may break cryptography's reading of an extension ``fields`` does not read
    (found by cryptography's own encoding of each): the values of those extensions, and every
    extension's OID (turned into the OID of another extension, which cryptography then reads)."""
    spans = []
    for extension in x509.load_der_x509_certificate(der).extensions:
        oid = b"\x06" + bytes([len(fields.oid_bytes(extension.oid.dotted_string))])
        oid += fields.oid_bytes(extension.oid.dotted_string)
        spans.append(range(der.index(oid), der.index(oid) + len(oid)))
        if extension.oid not in READ_HERE_OIDS:
            value = extension.value.public_bytes()
            spans.append(range(der.index(value), der.index(value) + len(value)))
    return spans


def _mutations(der: bytes) -> Iterable[tuple[int, bytes]]:
    for at in range(len(der)):
        for flip in (0x01, 0x80, 0xFF):
            yield at, der[:at] + bytes([der[at] ^ flip]) + der[at + 1 :]


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("base", READ_HERE)
def test_mutated_der_is_read_as_cryptography_reads_it_or_left_to_it(base: str) -> None:
    der = READ_HERE[base]()
    unread = _not_read_here(der)
    read_here = differing = 0
    for at, mutated in _mutations(der):
        found = read(mutated)  # never raises, loaded or not
        try:
            x509.load_der_x509_certificate(mutated)
        except NOT_LOADED:
            continue  # parse never asks fields about DER cryptography refuses to load
        if found is None:
            continue
        read_here += 1
        expected = by_cryptography(mutated)
        if expected[0].parse_error:
            assert any(at in span for span in unread), (
                f"byte {at}: cryptography says {expected[0].parse_error}"
            )
            differing += 1
        else:
            assert found == expected, f"byte {at}"
    assert read_here > len(der) // 2  # many mutations that load are still read here (else it says little)
    assert differing < read_here // 10


def test_garbage_is_never_read() -> None:
    for garbage in (b"", b"\x30", b"\x30\x80", b"\x30\x03\x02\x01", b"\x1f\xff\xff", bytes(range(256))):
        assert read(garbage) is None


def test_the_signature_algorithms_read_here_are_named_as_cryptography_names_them() -> None:
    named: Sequence[tuple[str, str]] = list(fields.SIGNATURES.values())
    assert ("ecdsa-with-SHA256", "sha256") in named
    assert ("sha256WithRSAEncryption", "sha256") in named
    assert ("ed25519", "") in named


def test_a_certificate_of_an_unknown_version_is_named_not_raised() -> None:
    """cryptography raises InvalidVersion, not a ValueError, for a version beyond 3: a broker's chain, an
    AIA download or the raw records of an oversized Certificate message could carry one."""
    der = certificate()
    version_3 = b"\xa0\x03\x02\x01\x02"
    bad = der.replace(version_3, b"\xa0\x03\x02\x01\x03")
    assert parse_der(bad).facts.parse_error == "not a DER certificate: 3 is not a valid X509 version"
    assert parse_with_cryptography(bad).facts.parse_error == parse_der(bad).facts.parse_error


def test_what_cryptography_warns_about_a_certificate_stays_out_of_standard_error() -> None:
    """A country name of three letters: cryptography warns (a UserWarning, with no broker's name) and
    reads it. Left to cryptography (a BMPString beside it), the facts say what the certificate holds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the builder's own warning: as a CA may have issued it
        country = x509.NameAttribute(NameOID.COUNTRY_NAME, "DEU", _validate=False)
    subject = x509.Name([country, x509.NameAttribute(CN, "Bx")])
    der = replaced(certificate(subject), b"\x0c\x02Bx", b"\x1e\x02\x00B")
    assert read(der) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        facts = parse_with_cryptography(der).facts
        assert parse_der(der).facts == facts
    assert facts.subject == "CN=B,C=DEU"
    assert not caught, [str(warning.message) for warning in caught]
