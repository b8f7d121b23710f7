"""Is a certificate fit to be a TLS server's? What OpenSSL checks for the leaf under the "sslserver"
purpose (X509_V_ERR_INVALID_PURPOSE, "unsupported certificate purpose"), in words: a keyUsage that
allows no TLS key use, an extendedKeyUsage without serverAuth. A CA certificate served as the leaf
(an intermediate deployed by mistake) usually fails on its keyUsage (keyCertSign, cRLSign) and is named
as such. Pure: a certificate in, the reason out.
"""

from __future__ import annotations

from typing import TypeVar

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

_E = TypeVar("_E", bound=x509.ExtensionType)

#: Server-gated cryptography, which OpenSSL still accepts in place of serverAuth
_SGC = (ObjectIdentifier("2.16.840.1.113730.4.1"), ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"))
_KEY_USAGE_NAMES = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


def unsuitable_for_tls_server(cert: x509.Certificate) -> str:
    """Why OpenSSL refuses ``cert`` as a TLS server certificate; "" when it does not."""
    reasons: list[str] = []
    usage = _extension(cert, x509.KeyUsage)
    if usage is not None and not (usage.digital_signature or usage.key_encipherment or usage.key_agreement):
        reasons.append(f"its keyUsage ({_key_usages(usage)}) allows no TLS server key use")
    extended = _extension(cert, x509.ExtendedKeyUsage)
    if extended is not None and not any(oid in extended for oid in (ExtendedKeyUsageOID.SERVER_AUTH, *_SGC)):
        names = ", ".join(getattr(oid, "_name", oid.dotted_string) for oid in extended)
        reasons.append(f"its extendedKeyUsage ({names}) does not include serverAuth")
    if not reasons:
        return ""
    constraints = _extension(cert, x509.BasicConstraints)
    what = (
        "a CA certificate is served as the server's own"
        if constraints and constraints.ca
        else "the certificate"
    )
    return f"{what}: " + "; ".join(reasons)


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _key_usages(usage: x509.KeyUsage) -> str:
    return ", ".join(name for attribute, name in _KEY_USAGE_NAMES if getattr(usage, attribute)) or "none"
