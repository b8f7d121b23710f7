"""Certificates as the rest of the exporter sees them: parsed once per distinct DER into ``CertFacts``
(``parse_der``: read straight from the DER by ``fields`` when it has a shape servers send, else through
cryptography's objects), bundles in PEM, DER or PKCS#7 (``load_pem_bundle``), and trust anchors by subject
(``TrustStore``). Pure: bytes in, facts out.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID, NameOID

from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs import fields
from mqtt_cert_exporter.certs.der import issuer_name
from mqtt_cert_exporter.results import CacheSize, CertFacts

# --------------------------------------------------------------------------------------------------
# Parsing: once per distinct certificate (a fleet serves few distinct chains; probes repeat them).


@dataclass(frozen=True, slots=True)
class Parsed:
    """One certificate: its facts, kept for as long as it is served, and its DER.

    cryptography's object is loaded on demand and not kept with it (``cert``): once its extensions and
    names were read it holds ~8.5 KB, and a fleet serves one distinct leaf per broker.
    """

    facts: CertFacts
    der: bytes = field(repr=False)
    #: authorityKeyIdentifier's keyIdentifier and subjectKeyIdentifier, when present: how OpenSSL (and
    #: ``chain.is_issued_by`` for a chain OpenSSL verified) tells which certificate issued which
    authority_key_id: bytes | None = field(default=None, repr=False)
    subject_key_id: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """Whether the certificate parsed (else ``facts.parse_error`` says why)."""
        return not self.facts.parse_error

    @property
    def cert(self) -> x509.Certificate | None:
        return load_certificate(self.der) if self.ok else None


#: Parsed certificates by DER. A broker that rotates its certificate on every connection adds one per
#: probe (issue 18.13), so bytes bound it too: an entry is estimated at twice its DER plus 1 KiB
#: (measured: 1.86 KB held for a 545-byte leaf, estimated 2.1 KB), so 32 MiB is about 15,000 leaves.
PARSED: BoundedCache[bytes, Parsed] = BoundedCache("certificates", max_entries=65536, max_bytes=32 << 20)


#: what cryptography raises for bytes that are no certificate it can load (a version other than 1 to 3
#: is not a ValueError)
NOT_LOADED = (ValueError, x509.InvalidVersion)


def parsed_bytes(der: bytes) -> int:
    """What a parsed certificate is estimated to hold: its DER and its facts (names grow with it)."""
    return 2 * len(der) + 1024


def parse_der(der: bytes) -> Parsed:
    """Parse one DER certificate. Never raises: a malformed certificate yields facts with parse_error."""
    found = PARSED.get(der, 0.0)
    if found is not None:
        return found
    with quietly():
        parsed = _parse_der(der)
    PARSED.put(der, parsed, size=parsed_bytes(der), expires=math.inf)
    return parsed


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Without cryptography's warnings about what a certificate holds (a negative serial number, which
    real trust stores still contain; a country name not of two letters): the facts say what it holds,
    and a warning would only reach standard error, once, without the broker's name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        warnings.filterwarnings("ignore", "Attribute's length must be", UserWarning)
        yield


def parsed_cache_size() -> CacheSize:
    return PARSED.size()


@lru_cache(maxsize=1024)
def load_certificate(der: bytes) -> x509.Certificate:
    """cryptography's object for a certificate that parsed; the recently used ones stay loaded (anchors
    and intermediates are asked for again and again, a leaf only when its chain is analysed)."""
    with quietly():
        return x509.load_der_x509_certificate(der)


def _parse_der(der: bytes) -> Parsed:
    fingerprint = hashlib.sha256(der).hexdigest()
    try:
        cert = load_certificate(der)  # strict DER, checked; the object stays loaded for a verdict
    except NOT_LOADED as exc:
        return Parsed(_unparseable(fingerprint, f"not a DER certificate: {exc}"), der)
    read = fields.read(der, fingerprint)
    if read is not None:
        facts, authority_key_id, subject_key_id = read
        return Parsed(facts, der, authority_key_id, subject_key_id)
    return _through_objects(cert, fingerprint, der)


def parse_with_cryptography(der: bytes) -> Parsed:
    """What cryptography's objects say of ``der``, uncached: what ``fields`` must read alike (``parse_der``
    reads so the shapes ``fields`` leaves alone)."""
    fingerprint = hashlib.sha256(der).hexdigest()
    with quietly():
        try:
            cert = x509.load_der_x509_certificate(der)
        except NOT_LOADED as exc:
            return Parsed(_unparseable(fingerprint, f"not a DER certificate: {exc}"), der)
        return _through_objects(cert, fingerprint, der)


def _through_objects(cert: x509.Certificate, fingerprint: str, der: bytes) -> Parsed:
    try:
        return _parsed(cert, fingerprint, der)
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension) as exc:
        return Parsed(_unparseable(fingerprint, f"malformed certificate: {exc}"), der)


def facts_of(der: bytes) -> CertFacts:
    return parse_der(der).facts


def _unparseable(fingerprint: str, error: str) -> CertFacts:
    return CertFacts(
        fingerprint_sha256=fingerprint,
        subject="",
        issuer="",
        serial="",
        not_before=0.0,
        not_after=0.0,
        dns_names=(),
        ip_addresses=(),
        common_name="",
        key="unknown",
        key_bits=0,
        signature_algorithm="unknown",
        signature_hash="",
        is_ca=False,
        self_issued=False,
        parse_error=error,
    )


def _parsed(cert: x509.Certificate, fingerprint: str, der: bytes) -> Parsed:
    # One pass over the extensions by OID: get_extension_for_class walks them all per class, with an
    # abstract isinstance check per extension (a third of parsing a leaf; parsing is most of a broker's
    # first probe beyond the handshake).
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    is_ca = False
    urls: tuple[str, ...] = ()
    crl_urls: tuple[str, ...] = ()
    authority_key_id: bytes | None = None
    subject_key_id: bytes | None = None
    for extension in cert.extensions:
        oid, value = extension.oid, extension.value
        if oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            san = cast(x509.SubjectAlternativeName, value)
            dns_names = tuple(str(name) for name in san.get_values_for_type(x509.DNSName))
            ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
        elif oid == ExtensionOID.BASIC_CONSTRAINTS:
            is_ca = cast(x509.BasicConstraints, value).ca
        elif oid == ExtensionOID.AUTHORITY_INFORMATION_ACCESS:
            urls = _ca_issuers(cast(x509.AuthorityInformationAccess, value))
        elif oid == ExtensionOID.CRL_DISTRIBUTION_POINTS:
            crl_urls = _crl_urls(cast(x509.CRLDistributionPoints, value))
        elif oid == ExtensionOID.AUTHORITY_KEY_IDENTIFIER:
            authority_key_id = cast(x509.AuthorityKeyIdentifier, value).key_identifier
        elif oid == ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            subject_key_id = cast(x509.SubjectKeyIdentifier, value).digest
    key, bits = describe_key(cert)
    try:
        hash_algorithm = cert.signature_hash_algorithm
        signature_hash = hash_algorithm.name.lower() if hash_algorithm else ""
    except UnsupportedAlgorithm:
        signature_hash = "unknown"
    serial = cert.serial_number
    subject = cert.subject
    issuer, issuer_text = named_issuer(cert, der)
    common_names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    facts = CertFacts(
        fingerprint_sha256=fingerprint,
        subject=subject.rfc4514_string(),
        issuer=issuer_text,
        serial=format(serial, "x") if serial >= 0 else "-" + format(-serial, "x"),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
        dns_names=dns_names,
        ip_addresses=ips,
        common_name=str(common_names[0].value) if common_names else "",
        key=key,
        key_bits=bits,
        signature_algorithm=fields.signature_algorithm_name(cert.signature_algorithm_oid),
        signature_hash=signature_hash,
        is_ca=is_ca,
        self_issued=subject == issuer,
        ca_issuers_urls=urls,
        crl_urls=crl_urls,
    )
    return Parsed(facts, der, authority_key_id, subject_key_id)


#: Issuer names by their encoding: the Name and its RFC 4514 text, made once for the fleet's leaves that
#: share an issuer (cryptography builds the Name's Python objects anew for every certificate, and its
#: text in Python: a fifth of parsing a leaf). A server chooses its issuer's name: bounded by bytes too.
ISSUER_NAMES: BoundedCache[bytes, tuple[x509.Name, str]] = BoundedCache(
    "issuers", max_entries=4096, max_bytes=4 << 20
)


def issuer_cache_size() -> CacheSize:
    return ISSUER_NAMES.size()


def named_issuer(cert: x509.Certificate, der: bytes) -> tuple[x509.Name, str]:
    """``cert``'s issuer Name and its RFC 4514 text (``der``: the certificate's DER), as ``cert.issuer``
    would give them, made once per distinct encoding."""
    encoded = issuer_name(der)
    if encoded is None:
        return cert.issuer, cert.issuer.rfc4514_string()
    known = ISSUER_NAMES.get(encoded, 0.0)
    if known is None:
        known = (cert.issuer, cert.issuer.rfc4514_string())
        # the encoding, the text and the Name's objects (about 300 bytes per attribute)
        ISSUER_NAMES.put(encoded, known, size=4 * len(encoded) + 1024, expires=math.inf)
    return known


def _ca_issuers(aia: x509.AuthorityInformationAccess) -> tuple[str, ...]:
    return tuple(
        str(desc.access_location.value)
        for desc in aia
        if desc.access_method == AuthorityInformationAccessOID.CA_ISSUERS
        and isinstance(desc.access_location, x509.UniformResourceIdentifier)
    )


def _crl_urls(points: x509.CRLDistributionPoints) -> tuple[str, ...]:
    """HTTP(S) URLs of the CRL distribution points (full names; relative names and LDAP are skipped)."""
    return tuple(
        str(name.value)
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier) and fields.http_url(str(name.value))
    )


_CURVE_NAMES = {"secp256r1": "P256", "secp384r1": "P384", "secp521r1": "P521", "secp224r1": "P224"}


def describe_key(cert: x509.Certificate) -> tuple[str, int]:
    """("EC-P256", 256), ("RSA-2048", 2048), ("Ed25519", 256)..."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "unknown", 0
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-{key.key_size}", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = _CURVE_NAMES.get(key.curve.name, key.curve.name)
        return f"EC-{curve}", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA-{key.key_size}", key.key_size
    return type(key).__name__, 0


# --------------------------------------------------------------------------------------------------
# Trust store


@dataclass(frozen=True, eq=False)
class TrustStore:
    """Trust anchors by subject, for diagnosis (OpenSSL remains the judge of trust)."""

    description: str
    anchors: tuple[Parsed, ...]
    _fingerprints: frozenset[str] = field(init=False, repr=False)
    _by_subject: dict[str, tuple[Parsed, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_subject: dict[str, list[Parsed]] = {}
        for anchor in self.anchors:
            if anchor.ok:
                by_subject.setdefault(anchor.facts.subject, []).append(anchor)
        object.__setattr__(self, "_fingerprints", frozenset(a.facts.fingerprint_sha256 for a in self.anchors))
        object.__setattr__(self, "_by_subject", {name: tuple(found) for name, found in by_subject.items()})

    @classmethod
    def from_pem(cls, data: bytes, description: str) -> TrustStore:
        return cls(description, tuple(load_pem_bundle(data)))

    def fingerprints(self) -> frozenset[str]:
        return self._fingerprints

    def issuers_of(self, cert: Parsed) -> tuple[Parsed, ...]:
        """The anchors named as the certificate's issuer (whether they signed it is for is_issued_by)."""
        return self._by_subject.get(cert.facts.issuer, ())


def load_pem_bundle(data: bytes) -> list[Parsed]:
    """Every certificate in a PEM bundle; DER if it is not PEM at all; PKCS#7 (AIA .p7c) too."""
    with quietly():
        return _load_bundle(data)


def _load_bundle(data: bytes) -> list[Parsed]:
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

    if b"-----BEGIN" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except NOT_LOADED:
            try:
                certs = pkcs7.load_pem_pkcs7_certificates(data)
            except ValueError:
                return []
    else:
        try:
            return [parse_der(x509.load_der_x509_certificate(data).public_bytes(Encoding.DER))]
        except NOT_LOADED:
            try:
                certs = pkcs7.load_der_pkcs7_certificates(data)
            except ValueError:
                return []
    return [parse_der(cert.public_bytes(Encoding.DER)) for cert in certs]
