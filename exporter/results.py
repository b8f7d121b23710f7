"""Immutable facts one probe found. They flow one way: probe -> results -> metrics / report.

Every value here is part of the public contract: the enums' string values are the label values
documented in docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    TRUST = "trust"
    #: the HTTP upgrade and WebSocket framing of wss:// brokers
    WEBSOCKET = "websocket"
    MQTT = "mqtt"
    #: the optional publish/receive round trip (``mqtt.roundtrip``)
    ROUNDTRIP = "roundtrip"


class Reason(StrEnum):
    DNS_ERROR = "dns_error"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    RESET = "reset"
    PROTOCOL_ERROR = "protocol_error"
    HANDSHAKE_FAILURE = "handshake_failure"
    CLIENT_CERTIFICATE_REQUIRED = "client_certificate_required"
    UNTRUSTED = "untrusted"
    CLOSED = "closed"
    PROXY_ERROR = "proxy_error"
    UPGRADE_REJECTED = "upgrade_rejected"
    DENIED = "denied"
    ERROR = "error"
    #: the server's certificate message is over OpenSSL's 100 KiB limit ("excessive message size")
    CERTIFICATE_TOO_LARGE = "certificate_too_large"
    #: the broker does not speak the MQTT version we sent (``mqtt.protocol: auto`` learns it)
    UNSUPPORTED_PROTOCOL = "unsupported_protocol"
    #: wss: the broker answered CONNECT with a WebSocket close frame, no CONNACK (RabbitMQ's Web-MQTT
    #: closes with 1002 "unauthenticated" on bad credentials)
    WEBSOCKET_CLOSED = "websocket_closed"


#: Which reasons each stage can report (the documented contract; tests check against it).
REASONS_BY_STAGE: dict[Stage, tuple[Reason, ...]] = {
    Stage.RESOLVE: (Reason.DNS_ERROR,),
    Stage.CONNECT: (Reason.REFUSED, Reason.TIMEOUT, Reason.UNREACHABLE, Reason.RESET, Reason.PROXY_ERROR),
    Stage.TLS: (
        Reason.TIMEOUT,
        Reason.PROTOCOL_ERROR,
        Reason.HANDSHAKE_FAILURE,
        Reason.CLIENT_CERTIFICATE_REQUIRED,
        Reason.CERTIFICATE_TOO_LARGE,
    ),
    Stage.TRUST: (Reason.UNTRUSTED,),
    Stage.WEBSOCKET: (Reason.TIMEOUT, Reason.CLOSED, Reason.PROTOCOL_ERROR, Reason.UPGRADE_REJECTED),
    Stage.MQTT: (
        Reason.TIMEOUT,
        Reason.PROTOCOL_ERROR,
        Reason.CLOSED,
        Reason.REFUSED,
        Reason.UNSUPPORTED_PROTOCOL,
        Reason.WEBSOCKET_CLOSED,
    ),
    Stage.ROUNDTRIP: (Reason.TIMEOUT, Reason.DENIED, Reason.ERROR),
}


class Problem(StrEnum):
    """Why a chain is not trusted. Declaration order is the order they are reported in."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    SELF_SIGNED = "self_signed"
    UNKNOWN_CA = "unknown_ca"
    INCOMPLETE_CHAIN = "incomplete_chain"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    #: not fit to be a TLS server's certificate: keyUsage or extendedKeyUsage (a CA certificate as leaf)
    UNSUITABLE_PURPOSE = "unsuitable_purpose"
    WEAK_KEY = "weak_key"
    WEAK_SIGNATURE = "weak_signature"
    INVALID = "invalid"


class Phase(StrEnum):
    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    WEBSOCKET = "websocket"
    MQTT = "mqtt"
    ROUNDTRIP = "roundtrip"
    TOTAL = "total"


@dataclass(frozen=True, slots=True)
class Failure:
    """The one failure that ended a probe (or, for trust, that made it unsuccessful)."""

    stage: Stage
    reason: Reason
    #: Human explanation for logs and the CLI. Never contains secrets.
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What we know about one certificate, parsed once per distinct DER (see certs.chain)."""

    fingerprint_sha256: str
    subject: str
    issuer: str
    serial: str
    not_before: float
    not_after: float
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    common_name: str
    #: e.g. ``EC-P256``, ``RSA-2048``, ``Ed25519``
    key: str
    key_bits: int
    #: e.g. ``sha256WithRSAEncryption``, ``ecdsa-with-SHA256``
    signature_algorithm: str
    #: hash of the signature, lowercase (``sha256``, ``sha1``, ``md5``); "" when none (Ed25519)
    signature_hash: str
    is_ca: bool
    #: subject == issuer (a root or a self-signed leaf)
    self_issued: bool
    ca_issuers_urls: tuple[str, ...] = ()
    #: Set when the DER could not be fully parsed; the other fields are then best effort.
    parse_error: str = ""
    #: HTTP(S) URLs of the certificate's CRL distribution points (full names only).
    crl_urls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TrustVerdict:
    trusted: bool
    problems: tuple[Problem, ...] = ()
    #: OpenSSL's own verdict (X509_V_ERR code and message); 0/"" when verified.
    verify_code: int = 0
    verify_message: str = ""
    #: Plain-words detail per problem, for logs and the CLI (same order as ``problems``).
    details: tuple[str, ...] = ()
    #: The anchor from the trust store that completed the chain, when one was found.
    anchor: CertFacts | None = None
    #: Certificates that were missing and were found via AIA or ``tls.intermediates_file``.
    completed_with: tuple[CertFacts, ...] = ()


@dataclass(frozen=True, slots=True)
class TlsFacts:
    version: str
    cipher: str
    #: The chain exactly as the server sent it; position 0 is the leaf.
    chain: tuple[CertFacts, ...]
    verdict: TrustVerdict
    alpn_protocol: str = ""


@dataclass(frozen=True, slots=True)
class MqttFacts:
    """What the broker answered to our CONNECT."""

    #: The MQTT version whose table ``connack_code`` belongs to (a 3.1.1-only broker answers a v5
    #: CONNECT with a 3.1.1 return code)
    protocol: str
    #: The CONNACK code as received (3.1.1 return code or 5 reason code); None if no CONNACK.
    connack_code: int | None
    #: True when the CONNACK was received over the second, non-verifying connection
    #: (the chain was untrusted, we still wanted to know whether the broker answers MQTT).
    unverified_connection: bool = False
    #: The version of the CONNECT we sent (after ``auto`` was resolved); "" when unknown
    requested: str = ""

    @property
    def accepted(self) -> bool | None:
        return None if self.connack_code is None else self.connack_code == 0


@dataclass(frozen=True, slots=True)
class WebSocketFacts:
    """What a wss:// broker answered to the HTTP upgrade."""

    #: the HTTP status of the upgrade response (101 when the upgrade was accepted)
    status_code: int
    #: the subprotocol the server selected ("mqtt"; "" when it named none)
    subprotocol: str = ""


@dataclass(frozen=True, slots=True)
class RoundtripFacts:
    """The optional round trip: publish a message and receive it back (``mqtt.roundtrip``)."""

    success: bool
    #: seconds from PUBLISH to receiving our own message; None when it did not come back
    latency: float | None = None
    #: why it failed (stage ``roundtrip``); None on success
    failure: Failure | None = None
    #: True when it ran over a non-verifying connection (the chain was untrusted)
    unverified_connection: bool = False


@dataclass(frozen=True, slots=True)
class ProbeResult:
    broker: str
    address: str
    #: The IP address actually probed ("" when resolution failed, or when a proxy resolved the name).
    ip: str
    started: float
    finished: float
    #: seconds per phase; only the phases that ran
    durations: tuple[tuple[Phase, float], ...]
    failure: Failure | None
    tls: TlsFacts | None = None
    mqtt: MqttFacts | None = None
    #: Failures of the extra, non-verifying connection (when the chain was untrusted).
    secondary_failure: Failure | None = None
    #: The ``address`` label: the IP probed, for brokers with ``addresses: all``; "" otherwise (no label).
    address_label: str = ""
    websocket: WebSocketFacts | None = None
    roundtrip: RoundtripFacts | None = None
    #: The broker's certificate file (``tls.served_cert_file``) compared with what it serves.
    served_file: ServedFileFacts | None = None
    #: The exporter's own client certificate (``tls.cert_file``), read when the probe ran.
    client_cert: CertFacts | None = None
    #: CRL revocation status of the presented chain; None when no chain was received.
    revocation: RevocationFacts | None = None
    #: The latest TLS 1.0/1.1 check of this broker (cached: it runs at a slower cadence).
    legacy_tls: LegacyTlsFacts | None = None
    #: Warnings that never fail the probe (see ``Lint``), in ``Lint`` declaration order.
    lints: tuple[LintFinding, ...] = ()
    #: The last chain an earlier probe received, kept by the store while this probe received none (the
    #: broker is down) for at most ``chain_retention``: a certificate problem stays visible.
    retained: SeenChain | None = None

    @property
    def success(self) -> bool:
        return self.failure is None

    def duration(self, phase: Phase) -> float | None:
        for name, seconds in self.durations:
            if name is phase:
                return seconds
        return None


@dataclass(frozen=True, slots=True)
class SeenChain:
    """The chain-derived facts of one probe that received a certificate, and when it received it."""

    #: Unix time the probe that received the chain finished
    seen: float
    tls: TlsFacts
    revocation: RevocationFacts | None = None
    lints: tuple[LintFinding, ...] = ()


def leaf_lifetime(chain: Sequence[CertFacts]) -> float | None:
    """Seconds from the leaf's not-before to its not-after; None without a parsed leaf."""
    if not chain or chain[0].parse_error:
        return None
    return chain[0].not_after - chain[0].not_before


def chain_seen(result: ProbeResult) -> SeenChain | None:
    """The chain a result shows: its own when it received one, else the one retained from before."""
    if result.tls is not None and result.tls.chain:
        return SeenChain(result.finished, result.tls, result.revocation, result.lints)
    return result.retained


# --------------------------------------------------------------------------------------------------
# Around the chain: the certificate file on disk, revocation, legacy TLS and lints (issue 7).


@dataclass(frozen=True, slots=True)
class ServedFileFacts:
    """The broker's own certificate file compared with the leaf it serves."""

    #: ``tls.served_cert_file`` as configured (may be a symlink, e.g. certbot's live/ directory)
    path: str
    #: where the symlinks lead (e.g. ``.../archive/example.com/cert3.pem``); "" when unresolved
    resolved_path: str = ""
    #: the file's first certificate; None when the file could not be read or holds no certificate
    leaf: CertFacts | None = None
    #: Unix time the resolved file was last modified (0 when unknown)
    modified: float = 0.0
    #: True/False: the served leaf is/is not the file's leaf; None when either side is missing
    matches: bool | None = None
    #: SHA-256 fingerprint of the served leaf ("" when no certificate was received)
    served_fingerprint: str = ""
    #: Why the file could not be used ("" when it was): for logs and ``check``
    error: str = ""


class RevocationStatus(StrEnum):
    GOOD = "good"
    REVOKED = "revoked"
    #: no CRL could be obtained or used for this certificate (see ``RevocationCheck.detail``)
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class RevocationCheck:
    """The CRL verdict on one certificate of the presented chain."""

    #: position in the chain as sent (0 = leaf)
    position: int
    status: RevocationStatus
    #: the CRL distribution point that answered (or the last one tried)
    url: str = ""
    #: plain words: why unknown, or when and why revoked
    detail: str = ""
    #: Unix time of revocation (REVOKED only)
    revoked_at: float | None = None
    #: RFC 5280 reason, e.g. ``keyCompromise`` (REVOKED only; "" when the CRL gives none)
    reason: str = ""
    #: nextUpdate of the CRL used (None when unknown or absent)
    crl_next_update: float | None = None


@dataclass(frozen=True, slots=True)
class RevocationFacts:
    #: one per certificate of the chain that names a CRL distribution point (self-issued ones aside)
    checks: tuple[RevocationCheck, ...] = ()
    #: True when every CRL needed was obtained and usable, False when one was not, None when no
    #: certificate of the chain names a CRL distribution point
    fetch_success: bool | None = None


@dataclass(frozen=True, slots=True)
class LegacyTlsFacts:
    """A handshake capped at TLS 1.1: does the broker still accept TLS 1.0/1.1?"""

    #: True: accepted; False: refused; None: could not tell (connection failed, timeout)
    accepted: bool | None
    #: the legacy version negotiated (``TLSv1``/``TLSv1.1``); "" when refused or unknown
    version: str = ""
    #: Unix time the check ran (it is repeated at most once per ``legacy_tls_interval``)
    checked_at: float = 0.0
    detail: str = ""


class Lint(StrEnum):
    """Warnings a careful operator wants to know before a client library does. They never fail a probe.

    The values are the ``lint`` label of ``mqtt_broker_cert_lint`` (documented in docs/metrics.md).
    """

    NO_SUBJECT_ALT_NAME = "no_subject_alt_name"
    SHA1_OR_MD5_SIGNATURE = "sha1_or_md5_signature"
    RSA_KEY_UNDER_2048 = "rsa_key_under_2048"
    LEAF_VALIDITY_OVER_398_DAYS = "leaf_validity_over_398_days"
    CHAIN_OUT_OF_ORDER = "chain_out_of_order"
    ROOT_INCLUDED = "root_included"
    LEGACY_TLS_ACCEPTED = "legacy_tls_accepted"
    RENEWAL_OVERDUE = "renewal_overdue"


@dataclass(frozen=True, slots=True)
class LintFinding:
    lint: Lint
    #: plain words, for logs and ``check``
    detail: str
    #: the chain positions concerned (empty for legacy_tls_accepted)
    positions: tuple[int, ...] = ()


def same_leaf(results: Iterable[ProbeResult]) -> bool | None:
    """Whether every address that presented a certificate presented the same leaf.

    None when no address presented one (nothing to compare). Addresses that failed before TLS are not
    counted: they are visible in their own ``probe_success``.
    """
    leaves = {result.tls.chain[0].fingerprint_sha256 for result in results if result.tls and result.tls.chain}
    return None if not leaves else len(leaves) == 1


@dataclass(frozen=True, slots=True)
class CacheSize:
    """What a cache that brokers can grow holds right now (the exporter's own metrics)."""

    name: str
    entries: int
    bytes: int
