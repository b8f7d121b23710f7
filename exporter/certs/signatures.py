"""Did this issuer sign this certificate? Also for the SHA-1 and MD5 signatures that cryptography's
``verify_directly_issued_by`` refuses ("Unsupported signature algorithm"): chains found in the wild
still use them, and the analysis of issuer links, self-signed certificates and anchors must not depend
on the signature algorithm (``weak_signature`` says what is wrong with it).

The fallback checks the signature with the issuer's public key and the certificate's own hash, as
OpenSSL does at security level 0; when even that cannot be done (an algorithm OpenSSL's build lacks),
the key identifiers decide (authorityKeyIdentifier of the certificate = subjectKeyIdentifier of the
issuer), and without them nothing links.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import dsa, ec, padding, rsa


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s key made ``cert``'s signature (names are the caller's business)."""
    if not _plain_signature(cert, issuer):
        try:
            cert.verify_directly_issued_by(issuer)
            return True
        except InvalidSignature:
            return False
        except (ValueError, TypeError, UnsupportedAlgorithm):
            pass  # an algorithm cryptography will not verify here: SHA-1, MD5
    try:
        return _verify_with_primitives(cert, issuer)
    except UnsupportedAlgorithm:
        return key_ids_link(cert, issuer)


def _plain_signature(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """An ECDSA signature and an EC key, or RSA PKCS#1 v1.5 and an RSA key (nearly every chain): checked
    with the primitives as ``verify_directly_issued_by`` checks them, but with the issuer's key as its
    certificate object keeps it loaded, where ``verify_directly_issued_by`` hands it to OpenSSL anew for
    every check (a fifth of checking an ECDSA signature)."""
    try:
        parameters, key = cert.signature_algorithm_parameters, issuer.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return False
    return (isinstance(parameters, ec.ECDSA) and isinstance(key, ec.EllipticCurvePublicKey)) or (
        isinstance(parameters, padding.PKCS1v15) and isinstance(key, rsa.RSAPublicKey)
    )


def _verify_with_primitives(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    algorithm = cert.signature_hash_algorithm
    if algorithm is None:
        return False
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, algorithm)
        else:
            raise UnsupportedAlgorithm(f"no fallback for {type(key).__name__}")
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def key_ids_link(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """authorityKeyIdentifier(cert) == subjectKeyIdentifier(issuer), both present."""
    try:
        authority = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        subject = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except (x509.ExtensionNotFound, ValueError):
        return False
    return key_ids_match(authority, subject)


def key_ids_match(authority: bytes | None, subject: bytes | None) -> bool:
    """A certificate's authorityKeyIdentifier names the issuer's subjectKeyIdentifier (both present)."""
    return authority is not None and authority == subject
