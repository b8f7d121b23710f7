"""Pure certificate analysis: parse a presented chain and name *every* reason it is not trusted.

OpenSSL stops at the first error it meets (and builds the path before it checks names or dates), so
its verdict alone would hide "expired AND wrong hostname". We keep OpenSSL as the judge of *whether*
the chain is trusted -- that is what paho and mosquitto_sub experience -- and use the functions here to
list every problem that applies. No I/O here: the trust store and extra intermediates are passed in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs.parse import Parsed, TrustStore, load_certificate, named_issuer
from mqtt_cert_exporter.certs.purpose import unsuitable_for_tls_server
from mqtt_cert_exporter.certs.signatures import key_ids_match, signed_by
from mqtt_cert_exporter.config.grammar import certificate_covers
from mqtt_cert_exporter.results import CacheSize, CertFacts, Problem, TrustVerdict

MAX_CHAIN_DEPTH = 10
#: Minimum sizes at OpenSSL security level 2 (Debian's default): what clients will refuse below.
MIN_RSA_BITS = 2048
MIN_EC_BITS = 224
WEAK_HASHES = frozenset({"md5", "sha1", "md2", "md4"})

# OpenSSL X509_V_ERR_* codes we map to problems directly.
V_ERR_UNABLE_TO_GET_ISSUER_CERT = 2
V_ERR_CERT_NOT_YET_VALID = 9
V_ERR_CERT_HAS_EXPIRED = 10
V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT = 18
V_ERR_SELF_SIGNED_CERT_IN_CHAIN = 19
V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
V_ERR_INVALID_PURPOSE = 26
V_ERR_HOSTNAME_MISMATCH = 62
V_ERR_IP_ADDRESS_MISMATCH = 64
V_ERR_EE_KEY_TOO_SMALL = 66
V_ERR_CA_KEY_TOO_SMALL = 67
V_ERR_CA_MD_TOO_WEAK = 68

CHAIN_ERRORS = frozenset(
    {
        V_ERR_UNABLE_TO_GET_ISSUER_CERT,
        V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT,
        V_ERR_SELF_SIGNED_CERT_IN_CHAIN,
        V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE,
    }
)
_DIRECT_PROBLEMS = {
    V_ERR_CERT_NOT_YET_VALID: Problem.NOT_YET_VALID,
    V_ERR_CERT_HAS_EXPIRED: Problem.EXPIRED,
    V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: Problem.SELF_SIGNED,
    V_ERR_HOSTNAME_MISMATCH: Problem.HOSTNAME_MISMATCH,
    V_ERR_IP_ADDRESS_MISMATCH: Problem.HOSTNAME_MISMATCH,
    V_ERR_EE_KEY_TOO_SMALL: Problem.WEAK_KEY,
    V_ERR_CA_KEY_TOO_SMALL: Problem.WEAK_KEY,
    V_ERR_CA_MD_TOO_WEAK: Problem.WEAK_SIGNATURE,
    V_ERR_INVALID_PURPOSE: Problem.UNSUITABLE_PURPOSE,
}


# --------------------------------------------------------------------------------------------------
# Checks


def is_issued_by(cert: Parsed, issuer: Parsed, *, verified: bool = False) -> bool:
    """Whether ``issuer`` signed ``cert`` (names and signature).

    ``verified``: OpenSSL verified the chain these two are on. It found each issuer by name and key
    identifier, as here, and checked its signature, so an issuer that names itself so is taken
    without checking the signature again (an ECDSA verification: a third of a new leaf's first probe).
    Without key identifiers, or when they differ, the signature decides as for any chain.
    """
    if not (cert.ok and issuer.ok) or cert.facts.issuer != issuer.facts.subject:
        return False
    key = (cert.der, issuer.der)
    known = SIGNATURES.get(key, 0.0)
    if known is None:
        known = (verified and key_ids_match(cert.authority_key_id, issuer.subject_key_id)) or _issued_by(
            cert.der, issuer.der
        )
        SIGNATURES.put(key, known, size=len(cert.der) + len(issuer.der) + 256, expires=math.inf)
    return known


#: Issuer links by the DER of both certificates (the bytes ``Parsed`` holds anyway), so the answer
#: outlives the objects: our signature check, or OpenSSL's for a chain it verified (``is_issued_by``),
#: which the revocation check then finds here. Every rotated leaf adds one: bounded by bytes (each
#: entry holds both DERs).
SIGNATURES: BoundedCache[tuple[bytes, bytes], bool] = BoundedCache(
    "signatures", max_entries=65536, max_bytes=16 << 20
)


def signature_cache_size() -> CacheSize:
    return SIGNATURES.size()


def _issued_by(cert_der: bytes, issuer_der: bytes) -> bool:
    cert, issuer = load_certificate(cert_der), load_certificate(issuer_der)
    if named_issuer(cert, cert_der)[0] != issuer.subject:
        return False
    return signed_by(cert, issuer)  # also SHA-1/MD5 signatures, which cryptography will not verify


def hostname_matches(facts: CertFacts, server_name: str) -> bool:
    """RFC 6125 matching as OpenSSL does it for Python clients (no partial wildcards, CN fallback)."""
    return certificate_covers(server_name, facts.dns_names, facts.ip_addresses, facts.common_name)


def names_covered(facts: CertFacts) -> tuple[str, ...]:
    return facts.dns_names + facts.ip_addresses or ((facts.common_name,) if facts.common_name else ())


@dataclass(frozen=True, slots=True)
class Path:
    """How far the chain leads: to an anchor (trusted path) or to a missing issuer."""

    certs: tuple[Parsed, ...]
    anchor: Parsed | None
    completed_with: tuple[Parsed, ...]
    #: the certificate whose issuer could not be found (when anchor is None)
    dead_end: Parsed | None


def build_path(
    presented: Sequence[Parsed], extra: Sequence[Parsed], store: TrustStore, *, verified: bool = False
) -> Path:
    """Follow issuers from the leaf through what the server sent, then ``extra``, to a store anchor.
    ``verified``: OpenSSL verified the chain (see ``is_issued_by``)."""
    leaf = presented[0]
    current = leaf
    path: list[Parsed] = [leaf]
    used: list[Parsed] = []
    fingerprints = store.fingerprints()
    for _ in range(MAX_CHAIN_DEPTH):
        if not current.ok:
            return Path(tuple(path), None, tuple(used), current)
        if current.facts.fingerprint_sha256 in fingerprints:
            return Path(tuple(path[:-1]), current, tuple(used), None)
        anchor = next(
            (a for a in store.issuers_of(current) if is_issued_by(current, a, verified=verified)), None
        )
        if anchor is not None:
            return Path(tuple(path), anchor, tuple(used), None)
        if current.facts.self_issued:
            return Path(tuple(path), None, tuple(used), current)
        seen = {p.facts.fingerprint_sha256 for p in path}
        issuer = _find_issuer(current, presented, seen, verified)
        if issuer is None:
            issuer = _find_issuer(current, extra, seen, verified)
            if issuer is not None:
                used.append(issuer)
        if issuer is None:
            return Path(tuple(path), None, tuple(used), current)
        path.append(issuer)
        current = issuer
    return Path(tuple(path), None, tuple(used), current)


def _find_issuer(cert: Parsed, pool: Sequence[Parsed], seen: set[str], verified: bool) -> Parsed | None:
    for candidate in pool:
        if candidate.facts.fingerprint_sha256 in seen:
            continue
        if is_issued_by(cert, candidate, verified=verified):
            return candidate
    return None


def missing_issuer_urls(
    presented: Sequence[Parsed], extra: Sequence[Parsed], store: TrustStore
) -> tuple[str, ...]:
    """AIA caIssuers URLs worth fetching: those of the certificate whose issuer is missing."""
    if not presented:
        return ()
    path = build_path(presented, extra, store)
    if path.anchor is not None or path.dead_end is None or path.dead_end.facts.self_issued:
        return ()
    return path.dead_end.facts.ca_issuers_urls


# --------------------------------------------------------------------------------------------------
# The verdict


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _label(position: int, facts: CertFacts) -> str:
    who = facts.common_name or facts.subject or facts.fingerprint_sha256[:16]
    return f"certificate {position} ({who})"


def classify(
    presented: Sequence[Parsed],
    *,
    verify_code: int | None,
    verify_message: str = "",
    server_name: str,
    now: float,
    store: TrustStore,
    extra_intermediates: Sequence[Parsed] = (),
) -> TrustVerdict:
    """Name every trust problem of a presented chain.

    ``verify_code`` is OpenSSL's verdict from the handshake: None when the chain verified. The
    verdict's ``trusted`` always follows OpenSSL; the problems list everything that applies.
    """
    if not presented:
        return TrustVerdict(trusted=False, problems=(Problem.INVALID,), details=("no certificate received",))
    path = build_path(presented, extra_intermediates, store, verified=verify_code is None)
    anchor_facts = path.anchor.facts if path.anchor else None
    completed = tuple(p.facts for p in path.completed_with)
    if verify_code is None:
        return TrustVerdict(trusted=True, anchor=anchor_facts, completed_with=completed)

    found: dict[Problem, list[str]] = {}

    def add(problem: Problem, detail: str) -> None:
        found.setdefault(problem, []).append(detail)

    # Dates: every certificate sent, plus what completes the chain (an expired root fails too).
    checked = list(enumerate(presented))
    checked += [(len(presented) + i, p) for i, p in enumerate(path.completed_with)]
    if path.anchor is not None and path.anchor not in presented:
        checked.append((-1, path.anchor))
    for position, parsed in checked:
        _check_certificate(position, parsed, now, add)

    _check_leaf(presented[0], server_name, add)

    # Only when OpenSSL could not build a path: otherwise it found an anchor (perhaps one our copy of
    # the store does not hold, e.g. from a CA directory) and the chain itself is fine.
    if verify_code in CHAIN_ERRORS:
        _diagnose_path(presented, path, store, add)

    direct = _DIRECT_PROBLEMS.get(verify_code)
    if direct is not None and direct not in found:
        add(direct, verify_message or f"OpenSSL verify error {verify_code}")
    if not found:
        add(Problem.INVALID, f"OpenSSL rejected the chain: {verify_message} (verify error {verify_code})")

    problems = tuple(p for p in Problem if p in found)
    return TrustVerdict(
        trusted=False,
        problems=problems,
        verify_code=verify_code,
        verify_message=verify_message,
        details=tuple("; ".join(found[p]) for p in problems),
        anchor=anchor_facts,
        completed_with=completed,
    )


def _check_certificate(
    position: int, parsed: Parsed, now: float, add: Callable[[Problem, str], None]
) -> None:
    """What is wrong with one certificate on its own: parse errors, dates, key size, signature hash."""
    facts = parsed.facts
    if not parsed.ok:
        add(Problem.INVALID, f"{_label(position, facts)}: {facts.parse_error}")
        return
    label = _label(position, facts) if position >= 0 else f"trust anchor ({facts.subject})"
    if facts.not_after < now:
        add(Problem.EXPIRED, f"{label} expired on {_when(facts.not_after)}")
    if facts.not_before > now:
        add(Problem.NOT_YET_VALID, f"{label} is not valid before {_when(facts.not_before)}")
    if facts.key_bits and weak_key(facts):
        add(Problem.WEAK_KEY, f"{label} has a {facts.key} key, too small for OpenSSL's default level")
    if facts.signature_hash in WEAK_HASHES and not facts.self_issued:
        add(Problem.WEAK_SIGNATURE, f"{label} is signed with {facts.signature_hash.upper()}")


def _check_leaf(leaf: Parsed, server_name: str, add: Callable[[Problem, str], None]) -> None:
    """What only the server's own certificate can get wrong: the name, the purpose."""
    if leaf.ok and not hostname_matches(leaf.facts, server_name):
        covered = ", ".join(names_covered(leaf.facts)) or "no names"
        add(Problem.HOSTNAME_MISMATCH, f"the certificate is for {covered}, not {server_name!r}")
    cert = leaf.cert
    unsuitable = unsuitable_for_tls_server(cert) if cert is not None else ""
    if unsuitable:
        add(Problem.UNSUITABLE_PURPOSE, unsuitable)


def weak_key(facts: CertFacts) -> bool:
    if facts.key.startswith(("RSA-", "DSA-")):
        return facts.key_bits < MIN_RSA_BITS
    if facts.key.startswith("EC-"):
        return facts.key_bits < MIN_EC_BITS
    return False


def _incomplete_detail(path: Path) -> str:
    missing = ", ".join(p.facts.subject for p in path.completed_with)
    return f"the server did not send the intermediate certificate {missing}"


def _diagnose_path(
    presented: Sequence[Parsed], path: Path, store: TrustStore, add: Callable[[Problem, str], None]
) -> None:
    if path.anchor is not None:
        if path.completed_with:
            add(Problem.INCOMPLETE_CHAIN, _incomplete_detail(path))
        return
    leaf = presented[0]
    if leaf.facts.self_issued and is_issued_by(leaf, leaf):
        add(
            Problem.SELF_SIGNED,
            f"the certificate ({leaf.facts.subject}) is self-signed and not in {store.description}",
        )
        return
    dead_end = path.dead_end or leaf
    if dead_end.facts.self_issued:
        add(
            Problem.UNKNOWN_CA,
            f"the chain ends at {dead_end.facts.subject}, a root that is not in {store.description}",
        )
    else:
        add(
            Problem.UNKNOWN_CA,
            f"issued by {dead_end.facts.issuer}, which is neither sent by the server nor in {store.description}",
        )


# --------------------------------------------------------------------------------------------------
# Verdicts of chains seen before


VerdictKey = tuple[object, ...]


class VerdictCache:
    """The verdict on a chain, by everything it depends on: the chain as sent, OpenSSL's verdict on it,
    the server name, the trust store and the configured intermediates. A broker serves the same chain
    for months; its verdict only changes when a date of a certificate involved passes (checked here),
    or after ``ttl`` (what an AIA download found may change).

    A broker that rotates its certificate on every connection adds a verdict per probe (issue 18.13):
    bounded by entries and by bytes, estimated as the DER in the key plus ``VERDICT_BYTES``.
    """

    def __init__(self, *, ttl: float = 3600.0, size: int = 65536, max_bytes: int = 64 << 20) -> None:
        self._ttl = ttl
        self._verdicts: BoundedCache[VerdictKey, TrustVerdict] = BoundedCache(
            "verdicts", max_entries=size, max_bytes=max_bytes
        )

    def get(self, key: VerdictKey, now: float) -> TrustVerdict | None:
        return self._verdicts.get(key, now)

    def put(
        self, key: VerdictKey, verdict: TrustVerdict, certificates: Iterable[CertFacts], now: float
    ) -> None:
        """Remember ``verdict`` until the first date after ``now`` of ``certificates`` (those it was
        judged on), at most ``ttl``."""
        until = first_date_after(now, certificates, limit=now + self._ttl)
        self._verdicts.put(key, verdict, size=_held_bytes(key) + VERDICT_BYTES, expires=until)

    def size(self) -> CacheSize:
        return self._verdicts.size()


def first_date_after(now: float, certificates: Iterable[CertFacts], *, limit: float) -> float:
    """The first notBefore or notAfter of ``certificates`` after ``now`` (when what OpenSSL says of them
    may change), at most ``limit``."""
    until = limit
    for facts in certificates:
        for date in (facts.not_before, facts.not_after):
            if now < date < until:
                until = date
    return until


#: A verdict's own objects (problems, messages; its certificates' facts are shared with the parsed cache).
VERDICT_BYTES = 1024


def _held_bytes(key: VerdictKey) -> int:
    """The bytes a key holds: the chain's DER (top level or in a tuple)."""
    parts = [part for item in key for part in (item if isinstance(item, tuple) else (item,))]
    return sum(len(part) for part in parts if isinstance(part, bytes))
