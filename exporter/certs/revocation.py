"""Pure CRL analysis: parse a CRL and say whether one certificate of a chain is revoked. No I/O here;
the fetching (HTTP, timeout, cache until nextUpdate) is in ``exporter.probe.lifecycle.crl``.

Supported: full CRLs issued and signed by the certificate's own issuer (what public and private CAs
publish at a CRL distribution point). Not supported, reported as ``unknown`` with the reason: indirect
CRLs (issued by another CA) and delta CRLs.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from mqtt_cert_exporter.certs.chain import is_issued_by
from mqtt_cert_exporter.certs.parse import Parsed, TrustStore, named_issuer
from mqtt_cert_exporter.results import RevocationCheck, RevocationStatus


@dataclass(frozen=True, slots=True)
class Revoked:
    revoked_at: float
    #: RFC 5280 CRLReason (``keyCompromise``...) or ""
    reason: str


@dataclass(frozen=True, eq=False)
class Crl:
    """A parsed CRL. Compared and hashed by identity (it is cached per URL and per fetch)."""

    crl: x509.CertificateRevocationList
    issuer: x509.Name
    last_update: float
    next_update: float | None
    revoked: Mapping[int, Revoked]
    delta: bool = False


def parse_crl(data: bytes) -> Crl:
    """A CRL in DER (RFC 5280 says so for HTTP) or PEM. Raises ValueError when it is neither."""
    if b"-----BEGIN" in data[:64] or b"-----BEGIN X509 CRL" in data:
        crl = x509.load_pem_x509_crl(data)
    else:
        crl = x509.load_der_x509_crl(data)
    revoked: dict[int, Revoked] = {}
    for entry in crl:
        reason = ""
        try:
            reason = str(entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value)
        except (x509.ExtensionNotFound, ValueError):
            pass
        revoked[entry.serial_number] = Revoked(entry.revocation_date_utc.timestamp(), reason)
    try:
        crl.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
        delta = True
    except x509.ExtensionNotFound:
        delta = False
    next_update = crl.next_update_utc
    return Crl(
        crl=crl,
        issuer=crl.issuer,
        last_update=crl.last_update_utc.timestamp(),
        next_update=next_update.timestamp() if next_update is not None else None,
        revoked=revoked,
        delta=delta,
    )


#: whether a CRL's signature verifies, per issuer; kept as long as the CRL itself (a cache of CRLs by
#: identity would keep CRLs alive after the fetcher's bounded cache let them go)
_SIGNATURES: weakref.WeakKeyDictionary[Crl, dict[x509.Certificate, bool]] = weakref.WeakKeyDictionary()


def signed_by(crl: Crl, issuer: x509.Certificate) -> bool:
    """True when the CRL's signature verifies with the issuer's public key."""
    known = _SIGNATURES.setdefault(crl, {})
    verdict = known.get(issuer)
    if verdict is None:
        verdict = _verify_signature(crl, issuer)
        if len(known) >= 8:  # a CRL has one issuer; candidates beyond a few are not worth keeping
            known.clear()
        known[issuer] = verdict
    return verdict


def _verify_signature(crl: Crl, issuer: x509.Certificate) -> bool:
    try:
        return crl.crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError, InvalidSignature, UnsupportedAlgorithm):
        return False


def issuer_of(cert: Parsed, pool: Sequence[Parsed], store: TrustStore) -> Parsed | None:
    """The certificate that signed ``cert``: from what the server sent (and configured intermediates),
    else from the trust store."""
    for candidate in pool:
        if candidate is not cert and is_issued_by(cert, candidate):
            return candidate
    return next((anchor for anchor in store.issuers_of(cert) if is_issued_by(cert, anchor)), None)


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def check(
    cert: Parsed, issuer: Parsed | None, crl: Crl, *, position: int, url: str, now: float
) -> RevocationCheck:
    """The verdict of one CRL on one certificate."""

    def unknown(detail: str) -> RevocationCheck:
        return RevocationCheck(
            position, RevocationStatus.UNKNOWN, url, detail, crl_next_update=crl.next_update
        )

    loaded = cert.cert
    if loaded is None:
        return unknown("the certificate could not be parsed")
    if crl.delta:
        return unknown(f"{url} is a delta CRL (not supported)")
    issuer_name, issuer_text = named_issuer(loaded, cert.der)
    if crl.issuer != issuer_name:
        return unknown(
            f"the CRL at {url} is issued by {crl.issuer.rfc4514_string()}, not by the certificate's issuer "
            f"{issuer_text} (indirect CRLs are not supported)"
        )
    signer = issuer.cert if issuer is not None else None
    if issuer is None or signer is None:
        return unknown(
            f"cannot verify the CRL's signature: the issuer {issuer_text} was neither "
            "sent by the server nor found in the trust store"
        )
    if not signed_by(crl, signer):
        return unknown(f"the CRL at {url} is not signed by {issuer.facts.subject}")
    entry = crl.revoked.get(loaded.serial_number)
    if entry is not None:
        why = f" ({entry.reason})" if entry.reason else ""
        return RevocationCheck(
            position,
            RevocationStatus.REVOKED,
            url,
            f"revoked on {_date(entry.revoked_at)}{why} according to {url}",
            revoked_at=entry.revoked_at,
            reason=entry.reason,
            crl_next_update=crl.next_update,
        )
    if crl.next_update is not None and crl.next_update < now:
        return unknown(
            f"the CRL at {url} is stale: its nextUpdate {_date(crl.next_update)} has passed, so it cannot "
            "vouch that the certificate is not revoked"
        )
    return RevocationCheck(
        position,
        RevocationStatus.GOOD,
        url,
        f"not revoked according to {url}",
        crl_next_update=crl.next_update,
    )
