"""Immutable facts one probe found. They flow one way: probe -> results -> metrics / report.

Every value here is part of the public contract: the enums' string values are the label values
documented in docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    TRUST = "trust"
    MQTT = "mqtt"


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


#: Which reasons each stage can report (the documented contract; tests check against it).
REASONS_BY_STAGE: dict[Stage, tuple[Reason, ...]] = {
    Stage.RESOLVE: (Reason.DNS_ERROR,),
    Stage.CONNECT: (Reason.REFUSED, Reason.TIMEOUT, Reason.UNREACHABLE, Reason.RESET),
    Stage.TLS: (
        Reason.TIMEOUT,
        Reason.PROTOCOL_ERROR,
        Reason.HANDSHAKE_FAILURE,
        Reason.CLIENT_CERTIFICATE_REQUIRED,
    ),
    Stage.TRUST: (Reason.UNTRUSTED,),
    Stage.MQTT: (Reason.TIMEOUT, Reason.PROTOCOL_ERROR, Reason.CLOSED, Reason.REFUSED),
}


class Problem(StrEnum):
    """Why a chain is not trusted. Declaration order is the order they are reported in."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    SELF_SIGNED = "self_signed"
    UNKNOWN_CA = "unknown_ca"
    INCOMPLETE_CHAIN = "incomplete_chain"
    HOSTNAME_MISMATCH = "hostname_mismatch"
    WEAK_KEY = "weak_key"
    WEAK_SIGNATURE = "weak_signature"
    INVALID = "invalid"


class Phase(StrEnum):
    RESOLVE = "resolve"
    CONNECT = "connect"
    TLS = "tls"
    MQTT = "mqtt"
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
    """What we know about one certificate, parsed once per distinct DER (see probe.chain)."""

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

    protocol: str
    #: The CONNACK code as received (3.1.1 return code or 5 reason code); None if no CONNACK.
    connack_code: int | None
    #: True when the CONNACK was received over the second, non-verifying connection
    #: (the chain was untrusted, we still wanted to know whether the broker answers MQTT).
    unverified_connection: bool = False

    @property
    def accepted(self) -> bool | None:
        return None if self.connack_code is None else self.connack_code == 0


@dataclass(frozen=True, slots=True)
class ProbeResult:
    broker: str
    address: str
    #: The IP address actually probed ("" when resolution failed).
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

    @property
    def success(self) -> bool:
        return self.failure is None

    def duration(self, phase: Phase) -> float | None:
        for name, seconds in self.durations:
            if name is phase:
                return seconds
        return None
