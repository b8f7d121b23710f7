"""Lints: what a careful operator wants to know before a client library tells them. Pure, no I/O.

Every lint is a warning: it never fails a probe and never changes ``mqtt_broker_probe_success``. Each
function looks at the chain exactly as the server sent it (``CertFacts``, position 0 = leaf) and returns
a ``LintFinding`` or None. The values are the ``lint`` label of ``mqtt_broker_cert_lint``
(docs/metrics.md documents each one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from mqtt_cert_exporter.results import CertFacts, LegacyTlsFacts, Lint, LintFinding

DAY = 86400.0
#: CA/Browser Forum limit for publicly trusted TLS certificates since 2020-09-01; Apple and Chrome
#: refuse longer-lived leaves that chain to a public root.
MAX_LEAF_VALIDITY_DAYS = 398
MIN_RSA_BITS = 2048
#: Signature hashes with practical collisions (SHA-1, MD5) and worse.
WEAK_SIGNATURE_HASHES = frozenset({"sha1", "md5", "md4", "md2"})
#: ACME clients (certbot, lego, acme.sh) renew when a third of the lifetime is left.
RENEWAL_SHARE_LEFT = 1 / 3

ChainLint = Callable[[Sequence[CertFacts], float], LintFinding | None]


def _who(position: int, cert: CertFacts) -> str:
    name = cert.common_name or cert.subject or cert.fingerprint_sha256[:16]
    return f"certificate {position} ({name})"


def _parsed(chain: Sequence[CertFacts]) -> list[tuple[int, CertFacts]]:
    return [(position, cert) for position, cert in enumerate(chain) if not cert.parse_error]


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


def no_subject_alt_name(chain: Sequence[CertFacts], now: float) -> LintFinding | None:
    """The leaf names its host only in the subject CN: Go, rustls, Java and many embedded TLS stacks
    ignore the CN and reject it, even though OpenSSL-based clients still accept it."""
    if not chain or chain[0].parse_error:
        return None
    leaf = chain[0]
    if leaf.dns_names or leaf.ip_addresses:
        return None
    where = f"only in its common name {leaf.common_name!r}" if leaf.common_name else "nowhere"
    return LintFinding(
        Lint.NO_SUBJECT_ALT_NAME,
        f"the certificate has no subjectAltName: its host name is {where}; Go, rustls and many embedded "
        "clients reject it",
        (0,),
    )


def sha1_or_md5_signature(chain: Sequence[CertFacts], now: float) -> LintFinding | None:
    """A certificate of the chain is signed with SHA-1 or MD5. A root's self-signature is not checked
    by anyone and does not count."""
    found = [
        (position, cert)
        for position, cert in _parsed(chain)
        if cert.signature_hash in WEAK_SIGNATURE_HASHES and not (cert.self_issued and cert.is_ca)
    ]
    if not found:
        return None
    what = ", ".join(f"{_who(p, c)} with {c.signature_hash.upper()}" for p, c in found)
    return LintFinding(Lint.SHA1_OR_MD5_SIGNATURE, f"signed with a broken hash: {what}", _positions(found))


def rsa_key_under_2048(chain: Sequence[CertFacts], now: float) -> LintFinding | None:
    """An RSA key under 2048 bits anywhere in the chain (OpenSSL's default level refuses it)."""
    found = [
        (position, cert)
        for position, cert in _parsed(chain)
        if cert.key.startswith("RSA-") and 0 < cert.key_bits < MIN_RSA_BITS
    ]
    if not found:
        return None
    what = ", ".join(f"{_who(p, c)} has {c.key}" for p, c in found)
    return LintFinding(
        Lint.RSA_KEY_UNDER_2048, f"RSA key under {MIN_RSA_BITS} bits: {what}", _positions(found)
    )


def leaf_validity_over_398_days(chain: Sequence[CertFacts], now: float) -> LintFinding | None:
    """The leaf is valid for more than 398 days (the CA/Browser Forum maximum)."""
    if not chain or chain[0].parse_error:
        return None
    leaf = chain[0]
    days = (leaf.not_after - leaf.not_before) / DAY
    if days <= MAX_LEAF_VALIDITY_DAYS:
        return None
    return LintFinding(
        Lint.LEAF_VALIDITY_OVER_398_DAYS,
        f"the certificate is valid for {days:.0f} days, more than {MAX_LEAF_VALIDITY_DAYS}: clients that "
        "enforce the CA/Browser Forum limit (Apple, Chrome) reject it when it chains to a public root, and "
        "a long life means a leaked key stays usable for long",
        (0,),
    )


def chain_out_of_order(chain: Sequence[CertFacts], now: float) -> LintFinding | None:
    """Each certificate after the leaf must be the issuer of the one before it (RFC 8446 4.4.2 allows
    otherwise, but many embedded stacks and older clients do not cope). An unrelated extra certificate
    counts too."""
    wrong = [
        (position, cert)
        for position, cert in enumerate(chain)
        if position > 0
        and not cert.parse_error
        and not chain[position - 1].parse_error
        and cert.subject != chain[position - 1].issuer
    ]
    if not wrong:
        return None
    what = "; ".join(
        f"{_who(p, c)} did not issue {_who(p - 1, chain[p - 1])}, which was issued by "
        f"{chain[p - 1].issuer or 'an unnamed issuer'}"
        for p, c in wrong
    )
    return LintFinding(
        Lint.CHAIN_OUT_OF_ORDER,
        f"the chain is not sent leaf first, each followed by its issuer: {what}",
        _positions(wrong),
    )


def root_included(chain: Sequence[CertFacts], now: float) -> LintFinding | None:
    """The server sends a self-signed CA (a root): clients must already have it to trust it, so it only
    costs bytes on every handshake; it often means the chain was assembled by hand."""
    found = [
        (position, cert)
        for position, cert in _parsed(chain)
        if position > 0 and cert.self_issued and cert.is_ca
    ]
    if not found:
        return None
    what = ", ".join(_who(p, c) for p, c in found)
    return LintFinding(
        Lint.ROOT_INCLUDED,
        f"the server sends the root {what}: clients need it in their trust store anyway; leave it out "
        "of the broker's certfile",
        _positions(found),
    )


def renewal_overdue(chain: Sequence[CertFacts], now: float) -> LintFinding | None:
    """Less than a third of the leaf's lifetime is left: the point where ACME clients renew. Still
    reported once expired (the alert must not resolve at the worst moment)."""
    if not chain or chain[0].parse_error:
        return None
    leaf = chain[0]
    lifetime = leaf.not_after - leaf.not_before
    left = leaf.not_after - now
    if lifetime <= 0 or left >= lifetime * RENEWAL_SHARE_LEFT:
        return None
    if left < 0:
        state = f"expired on {_date(leaf.not_after)}"
    else:
        state = f"{left / DAY:.1f} of its {lifetime / DAY:.0f} days left"
    return LintFinding(
        Lint.RENEWAL_OVERDUE,
        f"the certificate should have been renewed by {_date(leaf.not_after - lifetime * RENEWAL_SHARE_LEFT)} "
        f"(a third of its life left, when ACME clients renew): {state}; is the renewal job running, and "
        "was the broker reloaded after it?",
        (0,),
    )


#: The chain lints, in ``Lint`` declaration order.
CHAIN_LINTS: tuple[ChainLint, ...] = (
    no_subject_alt_name,
    sha1_or_md5_signature,
    rsa_key_under_2048,
    leaf_validity_over_398_days,
    chain_out_of_order,
    root_included,
    renewal_overdue,
)


def legacy_tls_accepted(legacy: LegacyTlsFacts | None) -> LintFinding | None:
    """The broker still completes a handshake capped at TLS 1.1 (TLS 1.0 and 1.1 are deprecated by
    RFC 8996)."""
    if legacy is None or not legacy.accepted:
        return None
    version = legacy.version or "TLS 1.1 or older"
    return LintFinding(
        Lint.LEGACY_TLS_ACCEPTED,
        f"the broker still accepts {version} (deprecated by RFC 8996); Mosquitto: tls_version tlsv1.2 "
        "on the listener",
    )


def lint(
    chain: Sequence[CertFacts], *, now: float, legacy: LegacyTlsFacts | None = None
) -> tuple[LintFinding, ...]:
    """Every lint that applies, in ``Lint`` declaration order, one finding per lint."""
    found = [finding for check in CHAIN_LINTS if (finding := check(chain, now)) is not None]
    legacy_finding = legacy_tls_accepted(legacy)
    if legacy_finding is not None:
        found.append(legacy_finding)
    return tuple(sorted(found, key=lambda finding: _LINT_ORDER[finding.lint]))


#: ``Lint`` declaration order (listing the enum anew took a quarter of linting a chain)
_LINT_ORDER = {lint: position for position, lint in enumerate(Lint)}


def _positions(found: Sequence[tuple[int, CertFacts]]) -> tuple[int, ...]:
    return tuple(position for position, _ in found)
