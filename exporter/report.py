"""What `check` and `demo` show for one probe: a text report, a JSON document and a status.

Pure: everything comes in as arguments (the ProbeResult, the BrokerConfig it probed, the warning
threshold, the current time, whether to colour), nothing is read or printed here.

Status and exit code, as monitoring plugins (Nagios/Icinga) use them:

* 0 ``ok``: trusted chain, CONNACK accepted, nothing below applies;
* 1 ``warning``: as ok, but
  - a certificate of the chain expires within ``warn_days``;
  - the broker serves an outdated certificate: ``tls.served_cert_file`` holds another certificate than
    the one served (renewed on disk, broker not reloaded). Only a warning: the served one still works
    until it expires, and when it has expired or is otherwise untrusted the trust failure already
    makes the check critical (the fix then says to reload the broker rather than to renew);
  - the trust anchor that verified the chain expires within ``warn_days``;
  - the exporter's own client certificate (``tls.cert_file``) expires within ``warn_days`` or has
    expired: the monitor would go blind once the broker rejects it;
* 2 ``critical``: any failure (unreachable, not TLS, untrusted, expired, CONNACK refused...), or a
  certificate of the chain revoked by its CA (CRL). A revoked certificate is critical here although the
  probe itself succeeds (``success`` stays true: revocation is a different question from reachability);
* 3 ``unknown``: the check could not be run (bad arguments or configuration; decided by the caller).

Shown as notes, never changing the status: a certificate file that cannot be read, a revocation status
that could not be established (``unknown``: no CRL, stale CRL...), whether TLS 1.0/1.1 is accepted.
Lints (issue 7: "never failing the probe") are listed in their own ``lints`` section, worded as
warnings, but never change the status or the exit code.

The JSON document (``Report.document()``), one per broker; keys are stable, new keys may be added
(``schema_version`` stays 1 as long as keys are only added):

``schema_version`` (1), ``broker``, ``address``, ``ip`` ("" if not resolved), ``server_name``,
``checked_at`` (ISO 8601 UTC), ``warn_days``, ``status`` (ok|warning|critical), ``exit_code`` (0|1|2),
``success`` (bool: the probe's own success, as ``mqtt_broker_probe_success``),
``failure``: null or {``stage``, ``reason``, ``detail``, ``fix``} (the values of the metrics' labels),
``unverified_failure``: null or the same shape: what failed on the extra connection that ignores the
certificate (only made when the chain is untrusted),
``tls``: null (no TLS session) or {``version``, ``cipher`` ("" when unknown), ``trusted`` (null when no
certificate was received), ``verify_code``, ``verify_message`` (OpenSSL's own verdict),
``problems``: [{``problem``, ``detail``, ``fix``}], ``anchor``: null or {``subject``,
``fingerprint_sha256``, ``not_after``, ``days_left``} (the trust-store certificate that verified the
chain),
``chain``: [{``position``, ``subject``, ``issuer``, ``serial``, ``fingerprint_sha256``, ``not_before``,
``not_after`` (ISO 8601 UTC), ``days_left`` (negative once expired), ``dns_names``, ``ip_addresses``,
``key``, ``signature_algorithm``}]},
``mqtt``: null (no CONNACK) or {``protocol``, ``connack_code``, ``accepted``, ``meaning``,
``unverified_connection``},
``warnings``: [{``warning``, ``position``, ``detail``, ``fix``}]: everything that makes the status
``warning``; ``warning`` is ``expires_soon`` (``position``: the chain position), ``served_cert_mismatch``,
``anchor_expires_soon`` or ``client_cert_expires_soon`` (``position``: null),
``durations_seconds``: {phase: seconds} for the phases that ran (resolve, connect, tls, mqtt, total),
``served_file``: null (no ``tls.served_cert_file``) or {``path``, ``resolved_path`` ("" when unresolved),
``read_success``, ``error`` (null when read), ``modified`` (ISO 8601 UTC or null), ``matches`` (true,
false, or null when either side is missing), ``served_fingerprint_sha256`` ("" when none was served),
``certificate``: null or a certificate (below), the file's first one; its ``not_before`` is the renewal date},
``client_certificate``: null (no ``tls.cert_file``) or {``path``, then a certificate (below)},
``revocation``: null (no certificate received) or {``fetch_success`` (null when no certificate of the
chain names a CRL distribution point), ``checks``: [{``position``, ``status`` (good|revoked|unknown),
``url``, ``detail``, ``revoked_at`` (ISO 8601 UTC or null), ``reason``, ``crl_next_update`` (ISO 8601 UTC
or null), ``fix`` (null unless revoked)}]},
``legacy_tls``: null (not checked) or {``accepted`` (true|false|null: could not tell), ``version``,
``checked_at`` (ISO 8601 UTC or null), ``detail``},
``lints``: [{``lint`` (the ``lint`` label of ``mqtt_broker_cert_lint``), ``detail``, ``positions``}],
(issue 13) ``transport`` (tls|wss, as in ``mqtt_broker_info``), ``address_label`` ("" unless
``addresses: all``), ``expiry_thresholds``: {``warning``, ``critical``} (as configured: ``28d``, ``33%``),
``websocket``: null (not wss, or no answer) or {``upgrade_status_code``, ``subprotocol``},
``roundtrip``: null (no ``mqtt.roundtrip``, or it did not run) or {``success``, ``duration_seconds``
(null unless it came back), ``unverified_connection``, ``failure``: null or {``stage``, ``reason``,
``detail``}}; ``tls.alpn_protocol`` ("" when none); ``mqtt.requested_protocol`` (the version of our
CONNECT; ``mqtt.protocol`` is the version the CONNACK code is in).

A certificate outside the chain (``served_file.certificate``, ``client_certificate``) is {``subject``,
``issuer``, ``serial``, ``fingerprint_sha256``, ``not_before``, ``not_after``, ``days_left``,
``parse_error`` (null when parsed)}.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from exporter.brokerfixes import tailor
from exporter.certs.interception import interception_product
from exporter.config import BrokerConfig
from exporter.probe.wire.mqtt import PROTOCOL_5, connack_meaning
from exporter.results import (
    CertFacts,
    Failure,
    LegacyTlsFacts,
    ProbeResult,
    Problem,
    RevocationCheck,
    RevocationStatus,
    ServedFileFacts,
    Stage,
)

SCHEMA_VERSION = 1
DEFAULT_WARN_DAYS = 30
SECONDS_PER_DAY = 86400.0
#: Longest subject/issuer shown in the chain table; the JSON document always has them whole.
MAX_NAME_WIDTH = 40


class Status(IntEnum):
    """The value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, default=Status.OK)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong, or about to be: its cause in plain words and the concrete fix."""

    #: a Problem value, "stage/reason", or "expires_soon"
    kind: str
    cause: str
    fix: str


# --------------------------------------------------------------------------------------------------
# Fixes. Wording is part of the product: tests look for these sentences.

RENEW_FIX = (
    "renew it with your CA, point the broker's certfile/keyfile at the new files, "
    "restart or reload the broker (Mosquitto: SIGHUP)"
)
FULL_CHAIN_FIX = (
    "serve the full chain (certfile = leaf followed by intermediates; "
    "with Let's Encrypt use fullchain.pem, not cert.pem)"
)
CAFILE_HOWTO = (
    "mosquitto_sub --cafile FILE, paho tls_set(ca_certs=FILE); for this exporter --ca-file / tls.ca_file"
)
CREDENTIALS_HOWTO = "--username and --password-file (config: mqtt.username and mqtt.password_file)"
RELOAD_FIX = "reload the broker (Mosquitto: SIGHUP; WebSocket listeners need a restart)"
REVOKED_FIX = "the CA revoked this certificate: issue a new one and deploy it"
WRONG_FILE_FIX = (
    "check that tls.served_cert_file names the certfile of this very listener (mosquitto.conf); if it "
    "does, the broker runs with another file: point it at this one and restart it"
)
ANCHOR_FIX = (
    "before then, move to the CA's successor root: add it to every client's trust store (cafile; for this "
    "exporter tls.ca_file / --ca-file) and serve a chain that leads to it (the CA's new intermediate or "
    "cross-signed chain)"
)
CLIENT_CERT_FIX = (
    "renew it with the CA the brokers trust for clients (their cafile) and point the exporter at the new "
    "files (config: tls.cert_file and tls.key_file; check: --cert-file and --key-file)"
)

_AUTH_CODES = {"3.1.1": frozenset({4, 5}), PROTOCOL_5: frozenset({0x86, 0x87, 0x8C})}
_PROTOCOL_CODES = {"3.1.1": frozenset({1}), PROTOCOL_5: frozenset({0x84})}
_CLIENT_ID_CODES = {"3.1.1": frozenset({2}), PROTOCOL_5: frozenset({0x85})}
_BUSY_CODES = {"3.1.1": frozenset({3}), PROTOCOL_5: frozenset({0x88, 0x89, 0x97, 0x9F})}
_MOVED_CODES = frozenset({0x9C, 0x9D})
_BANNED_CODE = 0x8A


def problem_fix(problem: Problem, result: ProbeResult, broker: BrokerConfig) -> str:
    """What to do about one trust problem of this broker's chain."""
    chain = result.tls.chain if result.tls else ()
    match problem:
        case Problem.EXPIRED:
            return RENEW_FIX
        case Problem.NOT_YET_VALID:
            return (
                "check the clocks of this machine and of the CA that issued it (NTP); if the start date is "
                "intended, wait for it, or reissue the certificate valid from now and reload the broker"
            )
        case Problem.SELF_SIGNED if interception_product(chain):
            return _interception_fix(interception_product(chain))
        case Problem.SELF_SIGNED:
            return (
                "replace it with a certificate issued by a CA your clients trust; if it is self-signed on "
                f"purpose, give clients this very certificate as their cafile ({CAFILE_HOWTO})"
            )
        case Problem.UNKNOWN_CA:
            return _unknown_ca_fix(chain)
        case Problem.INCOMPLETE_CHAIN:
            return FULL_CHAIN_FIX
        case Problem.HOSTNAME_MISMATCH if chain and chain[0].is_ca:
            return (
                "the server sends a CA certificate as its own: deploy the broker's server certificate (issued "
                f"for {broker.server_name}) with its key, and the CA certificate only as an intermediate"
            )
        case Problem.UNSUITABLE_PURPOSE:
            return (
                "deploy a certificate issued for a TLS server: keyUsage digitalSignature (and keyEncipherment "
                "for RSA), extendedKeyUsage serverAuth; if the broker serves a CA certificate as its own, put "
                "the server certificate first and the CA certificates after it"
            )
        case Problem.HOSTNAME_MISMATCH:
            covered = ", ".join(names_covered(chain[0])) if chain else ""
            return (
                f"connect with a name the certificate covers ({covered or 'none'}; for this exporter "
                f"--server-name / tls.server_name), or reissue the certificate with {broker.server_name} "
                "in its subjectAltName and reload the broker"
            )
        case Problem.WEAK_KEY:
            return (
                "reissue the certificate with a stronger key (RSA 2048 bits or more, or EC P-256): "
                "OpenSSL clients at their default security level refuse it"
            )
        case Problem.WEAK_SIGNATURE:
            return (
                "reissue it signed with SHA-256 or stronger: current clients refuse SHA-1 and MD5 signatures"
            )
        case Problem.INVALID:
            return (
                "inspect the chain with: openssl s_client -connect "
                f"{_host_port(broker)} -servername {broker.server_name} -showcerts"
            )
    return ""


def _interception_fix(product: str) -> str:
    return (
        f"the certificate comes from {product}, which inspects TLS between this machine and the broker, not "
        "from the broker: exempt the broker's host and port from TLS inspection (MQTT clients that verify "
        "certificates fail the same way); trust the inspection CA only if clients are meant to go through it"
    )


def _unknown_ca_fix(chain: Sequence[CertFacts]) -> str:
    if not chain:
        return f"give clients the certificate of the CA that issued it as their cafile ({CAFILE_HOWTO})"
    product = interception_product(chain)
    if product:
        return _interception_fix(product)
    top = chain[-1]
    if top.self_issued:
        root = display_name(top.subject)
        return (
            f"the chain ends at the root {root}: if clients should trust it, give them its certificate as "
            f"cafile ({CAFILE_HOWTO}); otherwise use a certificate from a CA they already trust"
        )
    issuer = display_name(top.issuer)
    return (
        f"{issuer} issued it: if {issuer} is an intermediate CA, {FULL_CHAIN_FIX}; if it is your own root CA, "
        f"give clients its certificate as cafile ({CAFILE_HOWTO})"
    )


#: Fix per "stage/reason" (the metric label values); ``{host}`` and ``{port}`` are the broker's.
FAILURE_FIXES: Mapping[str, str] = {
    "resolve/dns_error": "check the host name for typos and that this machine's DNS resolves it (getent hosts {host})",
    "connect/refused": (
        "nothing accepts connections on port {port}: is the broker running, and does it have a listener on "
        "this port (mosquitto.conf: listener {port})? MQTT over TLS is usually on 8883"
    ),
    "connect/timeout": (
        "no answer at all: a firewall or security group probably drops packets to port {port}; check the "
        "address and that the port is open from this machine"
    ),
    "connect/unreachable": "no route to the broker: check the address, the network (VPN, routes) and firewalls",
    "connect/reset": (
        "the connection was reset as soon as it opened: a firewall, a load balancer or a connection limit "
        "(Mosquitto: max_connections) rejects it"
    ),
    "connect/proxy_error": (
        "the proxy did not open the tunnel to the broker: check the proxy's address and credentials, and "
        "that it allows connections to port {port}"
    ),
    "tls/timeout": (
        "TCP connected but the TLS handshake never finished: a plaintext MQTT listener waits silently, so use "
        "the TLS port (e.g. 8883); otherwise the broker or a proxy in between is stuck"
    ),
    "tls/protocol_error": (
        "the server does not speak TLS on this port: probably a plaintext listener (usually 1883); use the TLS "
        "port (e.g. 8883), or enable TLS on this listener (certfile/keyfile)"
    ),
    "tls/handshake_failure": (
        "the server aborted the handshake: probably no TLS version or cipher in common (Mosquitto: "
        "tls_version/ciphers of the listener; this exporter: tls.min_version/max_version)"
    ),
    "tls/certificate_too_large": (
        "the certificate chain the server sends is over the 100 KiB that OpenSSL-based clients (mosquitto_sub, "
        "paho, Python) accept: reissue the certificate with fewer subjectAltNames (one per host, or a "
        "wildcard) and serve only the intermediates clients need"
    ),
    "trust/untrusted": "see the problems listed for the certificate chain",
    "websocket/upgrade_rejected": (
        "the server refused the WebSocket upgrade: check the path of the wss:// address (often /mqtt) and "
        "that the listener speaks WebSockets (Mosquitto: protocol websockets)"
    ),
    "websocket/timeout": (
        "no answer to the WebSocket upgrade: is this a WebSockets listener (Mosquitto: protocol websockets)? "
        "For a plain MQTT-over-TLS port use mqtts://{host}:{port}"
    ),
    "websocket/closed": (
        "the server closed the connection during the WebSocket upgrade: is this a WebSockets listener "
        "(Mosquitto: protocol websockets)? For a plain MQTT-over-TLS port use mqtts://{host}:{port}"
    ),
    "websocket/protocol_error": (
        "the reply is not a WebSocket upgrade: is this a WebSockets listener (Mosquitto: protocol websockets)? "
        "For a plain MQTT-over-TLS port use mqtts://{host}:{port}"
    ),
    "mqtt/timeout": (
        "TLS works but no CONNACK came back: is this an MQTT listener? (a WebSockets listener needs "
        "wss://{host}:{port}/mqtt); otherwise the broker is overloaded or a proxy holds the connection"
    ),
    "mqtt/protocol_error": (
        "the reply is not an MQTT CONNACK: is this port an MQTT listener? If the broker only speaks MQTT 3.1.1, "
        "use --protocol auto or 3.1.1 (config: mqtt.protocol)"
    ),
    "mqtt/websocket_closed": (
        "the broker closed the WebSocket with the status and reason shown instead of a CONNACK: its log says "
        "why (a connection limit, a rejected client id, or authentication)"
    ),
    "mqtt/unsupported_protocol": (
        "the broker does not speak this MQTT version (RabbitMQ before 3.13 and amqtt speak 3.1.1 only): set "
        "mqtt.protocol: auto (the default; --protocol auto), which learns the version without sending "
        "credentials, or the version the broker speaks"
    ),
    "mqtt/closed": (
        "the broker closed the connection before answering CONNECT: check its log; usual causes are an "
        "unsupported protocol version (try --protocol auto), a rejected client id or a connection limit"
    ),
    "roundtrip/timeout": (
        "the test message did not come back: check that the broker's ACL lets the exporter's user publish and "
        "subscribe to the round-trip topic, and the broker's load"
    ),
    "roundtrip/denied": "the broker denied the round-trip topic: allow the exporter's user to use it in the ACL",
    "roundtrip/error": "the round trip failed: see the detail and the broker's log",
}


_SMALL_KEY_FIX = (
    "reissue the broker's certificate with an RSA key of 2048 bits or more, or EC P-256, and reload the "
    "broker: no TLS version or cipher setting makes this key usable for current clients"
)
_WEBSOCKET_AUTH_FIX = (
    "the broker did not accept the credentials (RabbitMQ's Web-MQTT says 'unauthenticated' for a wrong "
    "username or password, an unknown user, or a user without access to the vhost): check {howto}, and "
    "on the broker the user and its vhost permissions (rabbitmqctl list_permissions)"
)


def failure_finding(failure: Failure, result: ProbeResult, broker: BrokerConfig) -> Finding:
    """The cause and fix of one failure (for trust, the problems carry the specifics)."""
    kind = f"{failure.stage.value}/{failure.reason.value}"
    if kind == "tls/client_certificate_required":
        return _client_certificate_finding(kind, broker)
    if kind == "mqtt/refused":
        return _refused_finding(kind, failure, result, broker)
    if (
        kind == "tls/handshake_failure"
        and result.tls is not None
        and Problem.WEAK_KEY in result.tls.verdict.problems
    ):
        return Finding(kind, failure.detail, _SMALL_KEY_FIX)
    if kind == "mqtt/websocket_closed" and "auth" in failure.detail.lower():
        return Finding(kind, failure.detail, _WEBSOCKET_AUTH_FIX.format(howto=CREDENTIALS_HOWTO))
    fix = FAILURE_FIXES.get(kind, "see the broker's log")
    return Finding(kind, failure.detail or kind, fix.format(host=broker.target.host, port=broker.target.port))


def _client_certificate_finding(kind: str, broker: BrokerConfig) -> Finding:
    if broker.tls.cert_file:
        return Finding(
            kind,
            f"the broker rejected the client certificate we sent ({broker.tls.cert_file})",
            "the client certificate must be issued by a CA in the listener's cafile (Mosquitto: "
            "require_certificate true + cafile), be within its validity dates and allow client "
            "authentication (extendedKeyUsage clientAuth)",
        )
    return Finding(
        kind,
        "the broker requires a client certificate (Mosquitto: require_certificate true means every client "
        "must present a certificate issued by a CA in the listener's cafile, or the handshake is aborted)",
        "give the exporter a client certificate issued by that CA: --cert-file and --key-file (config: "
        "tls.cert_file and tls.key_file); or set require_certificate false if clients need not have one",
    )


def _refused_finding(kind: str, failure: Failure, result: ProbeResult, broker: BrokerConfig) -> Finding:
    mqtt = result.mqtt
    if mqtt is None or mqtt.connack_code is None:
        return Finding(kind, failure.detail, "see the broker's log for why it refused the connection")
    protocol, code = mqtt.protocol, mqtt.connack_code
    cause = f"the broker refused the connection: CONNACK code {code} ({connack_meaning(protocol, code)})"
    if code in _AUTH_CODES.get(protocol, ()):
        if broker.mqtt.username is None:
            fix = (
                "the broker does not let anonymous clients in (Mosquitto: allow_anonymous false): give the "
                f"exporter credentials with {CREDENTIALS_HOWTO}"
            )
        else:
            fix = (
                f"bad credentials or not allowed: check the username and password ({CREDENTIALS_HOWTO}); on "
                "the broker, that user's entry in its password_file (mosquitto_passwd) and its ACL "
                "(Mosquitto answers 'not authorized' to a wrong password too)"
            )
    elif code in _PROTOCOL_CODES.get(protocol, ()):
        other = "3.1.1" if protocol == PROTOCOL_5 else "5"
        fix = f"the broker does not accept MQTT {protocol}: use --protocol {other} (config: mqtt.protocol)"
    elif code in _CLIENT_ID_CODES.get(protocol, ()):
        fix = "the broker rejected the client id: set one it accepts (config: mqtt.client_id) or let one be generated"
    elif code in _BUSY_CODES.get(protocol, ()):
        fix = "the broker is overloaded, shutting down or limiting connection rates: check its log and load"
    elif protocol == PROTOCOL_5 and code == _BANNED_CODE:
        fix = "the broker banned this client: check its ban list or authentication plugin"
    elif protocol == PROTOCOL_5 and code in _MOVED_CODES:
        fix = "the broker sends clients to another server: probe that one instead"
    else:
        fix = "see the broker's log for why it refused the connection"
    return Finding(kind, cause, fix)


# --------------------------------------------------------------------------------------------------
# Assessment


@dataclass(frozen=True, slots=True)
class Expiring:
    position: int
    cert: CertFacts
    days_left: float


def days_left(cert: CertFacts, now: float) -> float:
    return (cert.not_after - now) / SECONDS_PER_DAY


def expiring_soon(chain: Sequence[CertFacts], now: float, warn_days: float) -> tuple[Expiring, ...]:
    """Certificates still valid that expire within ``warn_days`` (expired ones are a trust problem)."""
    found = []
    for position, cert in enumerate(chain):
        if cert.parse_error:
            continue
        left = days_left(cert, now)
        if 0 <= left <= warn_days:
            found.append(Expiring(position, cert, left))
    return tuple(found)


def renewed_on_disk(result: ProbeResult, now: float) -> ServedFileFacts | None:
    """The served-file facts when the file holds a renewed, still valid certificate the broker does not
    serve yet (reloading the broker is then the whole fix)."""
    served = result.served_file
    if served is None or served.matches is not False or served.leaf is None or served.leaf.parse_error:
        return None
    if served.leaf.not_after <= now or _file_is_older(result, served):
        return None
    return served


def _file_is_older(result: ProbeResult, served: ServedFileFacts) -> bool:
    """The file's certificate was issued before the served one: not a renewal, probably the wrong file."""
    chain = result.tls.chain if result.tls else ()
    if not chain or chain[0].parse_error or served.leaf is None or served.leaf.parse_error:
        return False
    return served.leaf.not_before < chain[0].not_before


def _file_name(served: ServedFileFacts) -> str:
    if served.resolved_path and served.resolved_path != served.path:
        return f"{served.path} (-> {served.resolved_path})"
    return served.path


def served_file_finding(result: ProbeResult) -> Finding | None:
    """``served_cert_mismatch``: the broker serves another certificate than its certificate file."""
    served = result.served_file
    if served is None or served.matches is not False or served.leaf is None:
        return None
    chain = result.tls.chain if result.tls else ()
    old = chain[0] if chain and not chain[0].parse_error else None
    new = served.leaf
    if _file_is_older(result, served) and old is not None:
        cause = (
            f"the broker serves another certificate than the file {_file_name(served)}: the file's was issued "
            f"on {_date(new.not_before)} (expires {_date(new.not_after)}), before the one served (issued "
            f"{_date(old.not_before)}, expires {_date(old.not_after)})"
        )
        return Finding("served_cert_mismatch", cause, WRONG_FILE_FIX)
    old_expiry = f" (expires {_date(old.not_after)})" if old is not None else ""
    cause = (
        f"the broker serves an outdated certificate: the file {_file_name(served)} was renewed on "
        f"{_date(new.not_before)} (expires {_date(new.not_after)}) but the broker still serves the old "
        f"one{old_expiry}"
    )
    return Finding("served_cert_mismatch", cause, RELOAD_FIX)


def _reload_fix(served: ServedFileFacts) -> str:
    assert served.leaf is not None
    return (
        f"the file {_file_name(served)} already holds a renewed certificate (expires "
        f"{_date(served.leaf.not_after)}): {RELOAD_FIX}"
    )


def anchor_finding(
    result: ProbeResult, broker: BrokerConfig, *, warn_days: float, now: float
) -> Finding | None:
    """``anchor_expires_soon``: the trust anchor that verified the chain expires within ``warn_days``."""
    anchor = result.tls.verdict.anchor if result.tls else None
    if anchor is None or anchor.parse_error:
        return None
    left = days_left(anchor, now)
    if left > warn_days:
        return None
    verb = "expires on" if left >= 0 else "expired on"
    cause = (
        f"the trust anchor {display_name(anchor.subject)} (from {_store(broker)}) that verifies this chain "
        f"{verb} {_date_time(anchor.not_after)}, {_relative_days(left)} (warning threshold: {warn_days:g} "
        "days): every client that trusts the chain through it will then refuse it"
    )
    return Finding("anchor_expires_soon", cause, ANCHOR_FIX)


def client_cert_finding(
    result: ProbeResult, broker: BrokerConfig, *, warn_days: float, now: float
) -> Finding | None:
    """``client_cert_expires_soon``: the exporter's own client certificate lapses within ``warn_days``."""
    cert = result.client_cert
    if cert is None or cert.parse_error:
        return None
    left = days_left(cert, now)
    if left > warn_days:
        return None
    verb = "expires on" if left >= 0 else "expired on"
    where = f" ({broker.tls.cert_file})" if broker.tls.cert_file else ""
    cause = (
        f"the exporter's own client certificate {_subject_name(cert)}{where} {verb} "
        f"{_date_time(cert.not_after)}, {_relative_days(left)} (warning threshold: {warn_days:g} days): "
        "brokers that require a client certificate then reject the exporter, and the monitor goes blind"
    )
    return Finding("client_cert_expires_soon", cause, CLIENT_CERT_FIX)


def revoked_findings(result: ProbeResult) -> tuple[tuple[RevocationCheck, Finding], ...]:
    """One ``revoked`` finding per certificate of the chain its CA revoked."""
    if result.revocation is None:
        return ()
    found = []
    for check in result.revocation.checks:
        if check.status is not RevocationStatus.REVOKED:
            continue
        cause = f"{_chain_label(result, check.position)} was revoked"
        if check.revoked_at is not None:
            cause += f" on {_date_time(check.revoked_at)}"
        if check.reason:
            cause += f" ({check.reason})"
        if check.url:
            cause += f" according to the CRL at {check.url}"
        found.append((check, Finding("revoked", cause, REVOKED_FIX)))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Report:
    result: ProbeResult
    broker: BrokerConfig
    warn_days: float
    now: float
    #: the failure, unless it is "untrusted" (then ``problems`` say why)
    failure: Finding | None
    problems: tuple[tuple[Problem, Finding], ...]
    #: what failed on the extra connection made when the chain is untrusted
    unverified_failure: Finding | None
    #: certificates of the chain that expire within ``warn_days``
    warnings: tuple[tuple[Expiring, Finding], ...]
    #: certificates of the chain revoked by their CA (critical, although the probe succeeds)
    revoked: tuple[tuple[RevocationCheck, Finding], ...] = ()
    #: warnings about certificates around the chain, each with its one-line headline: the served
    #: certificate file, the trust anchor, the exporter's own client certificate
    lifecycle_warnings: tuple[tuple[str, Finding], ...] = ()

    @property
    def status(self) -> Status:
        """Lints and notes never count here (see the module docstring)."""
        if self.result.failure is not None or self.revoked:
            return Status.CRITICAL
        if self.warnings or self.lifecycle_warnings:
            return Status.WARNING
        return Status.OK

    @property
    def exit_code(self) -> int:
        return int(self.status)

    def text(self, *, colour: bool = False) -> str:
        return _render_text(self, _Style(colour))

    def document(self) -> dict[str, Any]:
        return _document(self)


def _expiry_headline(subject: str, cert: CertFacts, warn_days: float, now: float) -> str:
    left = days_left(cert, now)
    if left < 0:
        return f"{subject} expired {_relative_days(left)}"
    return f"{subject} expires {_relative_days(left)}, within the {warn_days:g}-day warning threshold"


def build_report(result: ProbeResult, broker: BrokerConfig, *, warn_days: float, now: float) -> Report:
    tls = result.tls
    renewed = renewed_on_disk(result, now)
    problems: list[tuple[Problem, Finding]] = []
    if tls is not None:
        verdict = tls.verdict
        for index, problem in enumerate(verdict.problems):
            detail = verdict.details[index] if index < len(verdict.details) else ""
            fix = problem_fix(problem, result, broker)
            if problem is Problem.EXPIRED and renewed is not None:
                fix = _reload_fix(renewed)
            problems.append((problem, Finding(problem.value, detail or problem.value, fix)))
    failure = None
    if result.failure is not None and not (result.failure.stage is Stage.TRUST and problems):
        failure = failure_finding(result.failure, result, broker)
    unverified = None
    if result.secondary_failure is not None:
        unverified = failure_finding(result.secondary_failure, result, broker)
    warnings = []
    for item in expiring_soon(tls.chain if tls else (), now, warn_days):
        cause = (
            f"{_cert_label(item.position, item.cert)} expires on {_date_time(item.cert.not_after)}, "
            f"in {item.days_left:.1f} days (warning threshold: {warn_days:g} days)"
        )
        fix = (
            _reload_fix(renewed)
            if item.position == 0 and renewed is not None
            else "before then, " + RENEW_FIX
        )
        warnings.append((item, Finding("expires_soon", cause, fix)))
    lifecycle: list[tuple[str, Finding]] = []
    served = served_file_finding(result)
    if served is not None:
        headline = (
            "the broker serves an outdated certificate: the file was renewed, reload the broker"
            if served.fix == RELOAD_FIX
            else "the broker serves another certificate than its certificate file (tls.served_cert_file)"
        )
        lifecycle.append((headline, served))
    anchor = anchor_finding(result, broker, warn_days=warn_days, now=now)
    if anchor is not None and tls is not None and tls.verdict.anchor is not None:
        name = display_name(tls.verdict.anchor.subject)
        lifecycle.append(
            (_expiry_headline(f"the trust anchor {name}", tls.verdict.anchor, warn_days, now), anchor)
        )
    client = client_cert_finding(result, broker, warn_days=warn_days, now=now)
    if client is not None and result.client_cert is not None:
        subject = "the exporter's own client certificate"
        lifecycle.append((_expiry_headline(subject, result.client_cert, warn_days, now), client))
    return _tailored(
        Report(
            result=result,
            broker=broker,
            warn_days=warn_days,
            now=now,
            failure=failure,
            problems=tuple(problems),
            unverified_failure=unverified,
            warnings=tuple(warnings),
            revoked=revoked_findings(result),
            lifecycle_warnings=tuple(lifecycle),
        )
    )


def _tailored(report: Report) -> Report:
    """Every fix as it applies to the broker's kind (``broker_kind``; see exporter.brokerfixes)."""
    kind = report.broker.broker_kind

    def fix(finding: Finding) -> Finding:
        return replace(finding, fix=tailor(finding.fix, kind))

    return replace(
        report,
        failure=fix(report.failure) if report.failure else None,
        problems=tuple((problem, fix(finding)) for problem, finding in report.problems),
        unverified_failure=fix(report.unverified_failure) if report.unverified_failure else None,
        warnings=tuple((item, fix(finding)) for item, finding in report.warnings),
        revoked=tuple((check, fix(finding)) for check, finding in report.revoked),
        lifecycle_warnings=tuple((headline, fix(finding)) for headline, finding in report.lifecycle_warnings),
    )


# --------------------------------------------------------------------------------------------------
# Small pure helpers


_RDN_SEPARATOR = re.compile(r"(?<!\\),")


def display_name(rfc4514: str) -> str:
    """The CN of an RFC 4514 name ("CN=Lab Root CA,O=Lab" -> "Lab Root CA"), else the whole name."""
    for part in _RDN_SEPARATOR.split(rfc4514):
        attribute, _, value = part.partition("=")
        if attribute.strip().upper() == "CN" and value:
            return re.sub(r"\\(.)", r"\1", value)
    return rfc4514


def names_covered(cert: CertFacts) -> tuple[str, ...]:
    return cert.dns_names + cert.ip_addresses or ((cert.common_name,) if cert.common_name else ())


def _subject_name(cert: CertFacts) -> str:
    return cert.common_name or cert.subject or cert.fingerprint_sha256[:16]


def _cert_label(position: int, cert: CertFacts) -> str:
    return f"certificate {position} ({_subject_name(cert)})"


def _chain_label(result: ProbeResult, position: int) -> str:
    chain = result.tls.chain if result.tls else ()
    return _cert_label(position, chain[position]) if 0 <= position < len(chain) else f"certificate {position}"


def _store(broker: BrokerConfig) -> str:
    return f"the CA file {broker.tls.ca_file}" if broker.tls.ca_file else "the system trust store"


def _date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


def _date_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso8601(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _host_port(broker: BrokerConfig) -> str:
    host = broker.target.host
    return f"[{host}]:{broker.target.port}" if ":" in host else f"{host}:{broker.target.port}"


def _relative_days(left: float) -> str:
    return f"in {left:.1f} days" if left >= 0 else f"{-left:.1f} days ago"


def _clip(text: str, width: int = MAX_NAME_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Text


_ANSI_CODES: Mapping[str, str] = {"bold": "1", "red": "31", "green": "32", "yellow": "33"}


class _Style:
    """ANSI styling that is a no-op unless colour was asked for."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def __call__(self, text: str, *styles: str) -> str:
        if not self.colour or not styles or not text:
            return text
        codes = ";".join(_ANSI_CODES[style] for style in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def status(self, status: Status) -> str:
        colours = {
            Status.OK: "green",
            Status.WARNING: "yellow",
            Status.CRITICAL: "red",
            Status.UNKNOWN: "red",
        }
        return self(status.name, "bold", colours[status])


_LABEL_WIDTH = 9


def _line(label: str, text: str, style: _Style) -> str:
    return f"  {style(label.ljust(_LABEL_WIDTH), 'bold')}{text}"


def _render_text(report: Report, style: _Style) -> str:
    result, broker = report.result, report.broker
    lines = [
        style(f"{result.broker}", "bold")
        + (f" ({result.address})" if result.broker != result.address else "")
    ]
    probed = result.ip or "not resolved"
    lines.append(
        _line("address", f"{result.address}, probed {probed}, server name {broker.server_name}", style)
    )
    lines.append(_line("TLS", _tls_summary(result), style))
    if result.legacy_tls is not None:
        lines.append(_line("legacy", _legacy_summary(result.legacy_tls, style), style))
    if result.durations:
        timings = ", ".join(f"{phase.value} {seconds * 1000:.1f} ms" for phase, seconds in result.durations)
        lines.append(_line("timings", timings, style))
    lines += _chain_lines(report, style)
    lines += _trust_lines(report, style)
    lines += _served_file_lines(report, style)
    lines += _client_cert_lines(report, style)
    lines += _revocation_lines(report, style)
    lines.append(_line("MQTT", _mqtt_summary(report), style))
    lines.append(_line("verdict", f"{style.status(report.status)}: {_headline(report)}", style))
    for problem, finding in report.problems:
        lines += _finding_lines(style(problem.value, "red"), finding, style)
    if report.failure is not None:
        lines += _finding_lines(style(report.failure.kind, "red"), report.failure, style)
    if report.unverified_failure is not None:
        finding = report.unverified_failure
        label = style(finding.kind, "red") + " (even ignoring the certificate)"
        lines += _finding_lines(label, finding, style)
    for _, finding in report.revoked:
        lines += _finding_lines(style(finding.kind, "red"), finding, style)
    served = [finding for _, finding in report.lifecycle_warnings if finding.kind == "served_cert_mismatch"]
    others = [finding for _, finding in report.lifecycle_warnings if finding.kind != "served_cert_mismatch"]
    for finding in [*served, *(finding for _, finding in report.warnings), *others]:
        lines += _finding_lines(style(finding.kind, "yellow"), finding, style)
    lines += _lint_lines(report, style)
    return "\n".join(lines) + "\n"


def _finding_lines(label: str, finding: Finding, style: _Style) -> list[str]:
    indent = " " * (2 + _LABEL_WIDTH)
    return [f"{indent}- {label}: {finding.cause}", f"{indent}  {style('fix:', 'bold')} {finding.fix}"]


def _tls_summary(result: ProbeResult) -> str:
    tls = result.tls
    if tls is None:
        stage = result.failure.stage.value if result.failure else "?"
        return f"no TLS session (the probe stopped at {stage})"
    parts = [tls.version or "version unknown", tls.cipher or "cipher unknown"]
    if tls.alpn_protocol:
        parts.append(f"ALPN {tls.alpn_protocol}")
    return ", ".join(parts)


def _chain_lines(report: Report, style: _Style) -> list[str]:
    tls = report.result.tls
    if tls is None:
        return []
    if not tls.chain:
        return [_line("chain", "no certificate received", style)]
    header = ("#", "subject", "issuer", "not after", "key", "signature")
    #: the chain as sent, then the trust anchor that verified it (from the store, usually not sent)
    certs: list[tuple[str, CertFacts]] = [(str(position), cert) for position, cert in enumerate(tls.chain)]
    if tls.verdict.anchor is not None:
        certs.append(("anchor", tls.verdict.anchor))
    rows: list[tuple[str, ...]] = []
    for position_label, cert in certs:
        if cert.parse_error:
            rows.append((position_label, "(unparseable)", "", cert.parse_error, "", ""))
            continue
        left = days_left(cert, report.now)
        rows.append(
            (
                position_label,
                _clip(_subject_name(cert)),
                _clip(display_name(cert.issuer)),
                f"{_date(cert.not_after)} ({_relative_days(left)})",
                cert.key,
                cert.signature_algorithm,
            )
        )
    widths = [max(len(row[column]) for row in (header, *rows)) for column in range(len(header))]

    def layout(row: Sequence[str], colour_of: dict[int, str]) -> str:
        cells = []
        for column, cell in enumerate(row):
            padded = cell.ljust(widths[column]) if column < len(row) - 1 else cell
            cells.append(style(padded, colour_of[column]) if column in colour_of else padded)
        return "  ".join(cells).rstrip()

    lines = [_line("chain", layout(header, {}), style)]
    indent = " " * (2 + _LABEL_WIDTH)
    for row, (_, cert) in zip(rows, certs, strict=True):
        colours: dict[int, str] = {}
        if not cert.parse_error:
            left = days_left(cert, report.now)
            if left < 0:
                colours[3] = "red"
            elif left <= report.warn_days:
                colours[3] = "yellow"
        lines.append(indent + layout(row, colours))
    return lines


def _trust_lines(report: Report, style: _Style) -> list[str]:
    tls = report.result.tls
    if tls is None or not tls.chain:
        return []
    verdict = tls.verdict
    store = _store(report.broker)
    if verdict.trusted:
        anchor = f", anchored at {display_name(verdict.anchor.subject)}" if verdict.anchor else ""
        completed = ""
        if verdict.completed_with:
            names = ", ".join(display_name(cert.subject) for cert in verdict.completed_with)
            completed = f", completed with {names}"
        return [_line("trust", f"{style('trusted', 'green')} by {store}{anchor}{completed}", style)]
    problems = ", ".join(problem.value for problem in verdict.problems) or "untrusted"
    text = f"{style('NOT trusted', 'red', 'bold')} by {store}: {problems}"
    if verdict.verify_message:
        text += f" (OpenSSL: {verdict.verify_message})"
    return [_line("trust", text, style)]


def _legacy_summary(legacy: LegacyTlsFacts, style: _Style) -> str:
    checked = f" (checked {_date_time(legacy.checked_at)})" if legacy.checked_at else ""
    if legacy.accepted:
        version = legacy.version or "TLS 1.0/1.1"
        return style(f"still accepts {version}", "yellow") + f", deprecated by RFC 8996{checked}"
    if legacy.accepted is False:
        return f"TLS 1.0/1.1 refused{checked}"
    detail = f": {legacy.detail}" if legacy.detail else ""
    return f"note: could not tell whether TLS 1.0/1.1 is accepted{detail}{checked}"


def _served_file_lines(report: Report, style: _Style) -> list[str]:
    """``tls.served_cert_file`` against the served leaf; a file that cannot be read is only a note."""
    served = report.result.served_file
    if served is None:
        return []
    leaf = served.leaf
    if leaf is None:
        why = served.error or f"{served.path}: no certificate in it"
        return [_line("file", f"note: {why}; not compared with the served certificate", style)]
    facts = (
        f"issued {_date(leaf.not_before)}, expires {_date(leaf.not_after)} "
        f"({_relative_days(days_left(leaf, report.now))})"
        if not leaf.parse_error
        else f"unparseable ({leaf.parse_error})"
    )
    name = _file_name(served)
    if served.matches is True:
        text = f"{name}: {style('served', 'green')}; {facts}"
    elif served.matches is False:
        text = f"{name}: {style('NOT the certificate served', 'yellow', 'bold')}; the file's: {facts}"
    else:
        text = f"{name}: not compared (no certificate was received); {facts}"
    if served.error:
        text += f"; note: {served.error}"
    return [_line("file", text, style)]


def _client_cert_lines(report: Report, style: _Style) -> list[str]:
    """The exporter's own client certificate (mTLS)."""
    cert = report.result.client_cert
    if cert is None:
        return []
    if cert.parse_error:
        return [_line("client", f"our client certificate: unparseable ({cert.parse_error})", style)]
    left = days_left(cert, report.now)
    when = f"{_date(cert.not_after)} ({_relative_days(left)})"
    if left < 0 or left <= report.warn_days:
        when = style(when, "red" if left < 0 else "yellow")
    where = f" ({report.broker.tls.cert_file})" if report.broker.tls.cert_file else ""
    verb = "expired" if left < 0 else "expires"
    return [_line("client", f"our client certificate {_subject_name(cert)}{where} {verb} {when}", style)]


def _revocation_lines(report: Report, style: _Style) -> list[str]:
    """CRL status per certificate; ``unknown`` is only a note."""
    revocation = report.result.revocation
    if revocation is None:
        return []
    if not revocation.checks:
        return [_line("CRL", "not checked (no CRL distribution point in the chain)", style)]
    lines = []
    indent = " " * (2 + _LABEL_WIDTH)
    for index, check in enumerate(revocation.checks):
        who = _chain_label(report.result, check.position)
        if check.status is RevocationStatus.REVOKED:
            text = f"{who}: {style('REVOKED', 'red', 'bold')}"
        elif check.status is RevocationStatus.GOOD:
            text = f"{who}: {style('not revoked', 'green')}"
        else:
            text = f"{who}: unknown (note: revocation could not be checked)"
        if check.detail:
            text += f" - {check.detail}"
        lines.append(_line("CRL", text, style) if index == 0 else indent + text)
    return lines


def _lint_lines(report: Report, style: _Style) -> list[str]:
    """Lints: worded as warnings, never counted in the status or the exit code."""
    lints = report.result.lints
    if not lints:
        return []
    indent = " " * (2 + _LABEL_WIDTH)
    lines = [_line("lints", "warnings that do not change the status or the exit code:", style)]
    for finding in lints:
        detail = tailor(finding.detail, report.broker.broker_kind)
        lines.append(f"{indent}- {style(finding.lint.value, 'yellow')}: {detail}")
    return lines


def _mqtt_summary(report: Report) -> str:
    mqtt = report.result.mqtt
    if mqtt is None or mqtt.connack_code is None:
        return "no CONNACK"
    text = f"MQTT {mqtt.protocol}, CONNACK {mqtt.connack_code} ({connack_meaning(mqtt.protocol, mqtt.connack_code)})"
    if mqtt.unverified_connection:
        text += " over a connection that ignored the certificate"
        if mqtt.accepted:
            text += ": the broker is up, only the certificate needs fixing"
    return text


def _headline(report: Report) -> str:
    result = report.result
    failure = result.failure
    if failure is not None:
        if failure.stage is Stage.TRUST and result.tls is not None:
            problems = ", ".join(problem.value for problem in result.tls.verdict.problems)
            return f"the certificate chain is not trusted ({problems})"
        return f"{failure.stage.value} failed ({failure.reason.value})"
    if report.revoked:
        check = report.revoked[0][0]
        return f"{_chain_label(result, check.position)} was revoked by its CA"
    for headline, finding in report.lifecycle_warnings:
        if finding.kind == "served_cert_mismatch":
            return headline
    if report.warnings:
        first = min(report.warnings, key=lambda item: item[0].days_left)[0]
        return (
            f"{_cert_label(first.position, first.cert)} expires {_relative_days(first.days_left)}, "
            f"within the {report.warn_days:g}-day warning threshold"
        )
    if report.lifecycle_warnings:
        return report.lifecycle_warnings[0][0]
    text = "trusted chain, MQTT connection accepted"
    chain = [cert for cert in (result.tls.chain if result.tls else ()) if not cert.parse_error]
    if chain:
        position, soonest = min(enumerate(chain), key=lambda item: item[1].not_after)
        left = days_left(soonest, report.now)
        text += f"; earliest expiry: {_cert_label(position, soonest)}, {_relative_days(left)}"
    return text


def summary_line(reports: Sequence[Report], *, colour: bool = False) -> str:
    """One line over several brokers: "3 brokers: 1 OK, 1 WARNING, 1 CRITICAL"."""
    style = _Style(colour)
    counts = {status: sum(1 for report in reports if report.status is status) for status in Status}
    parts = [f"{count} {style.status(status)}" for status, count in counts.items() if count]
    noun = "broker" if len(reports) == 1 else "brokers"
    return f"{len(reports)} {noun}: {', '.join(parts)}"


# --------------------------------------------------------------------------------------------------
# JSON


def _finding_document(failure: Failure, finding: Finding) -> dict[str, Any]:
    return {
        "stage": failure.stage.value,
        "reason": failure.reason.value,
        "detail": failure.detail,
        "fix": finding.fix,
    }


def _cert_document(position: int, cert: CertFacts, now: float) -> dict[str, Any]:
    """A certificate of the chain: the facts of any certificate plus what only the chain table shows."""
    document: dict[str, Any] = {"position": position, **_other_cert_document(cert, now)}
    parse_error = document.pop("parse_error")  # stays the last key
    document.update(
        dns_names=list(cert.dns_names),
        ip_addresses=list(cert.ip_addresses),
        key=cert.key,
        signature_algorithm=cert.signature_algorithm,
        parse_error=parse_error,
    )
    return document


def _optional_iso8601(timestamp: float | None) -> str | None:
    return iso8601(timestamp) if timestamp else None


def _anchor_document(anchor: CertFacts, now: float) -> dict[str, Any]:
    parsed = not anchor.parse_error
    return {
        "subject": anchor.subject,
        "fingerprint_sha256": anchor.fingerprint_sha256,
        "not_after": iso8601(anchor.not_after) if parsed else None,
        "days_left": round(days_left(anchor, now), 3) if parsed else None,
    }


def _other_cert_document(cert: CertFacts, now: float) -> dict[str, Any]:
    """A certificate outside the chain: the served file's, the exporter's own client certificate."""
    parsed = not cert.parse_error
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "not_before": iso8601(cert.not_before) if parsed else None,
        "not_after": iso8601(cert.not_after) if parsed else None,
        "days_left": round(days_left(cert, now), 3) if parsed else None,
        "parse_error": cert.parse_error or None,
    }


def _served_file_document(served: ServedFileFacts | None, now: float) -> dict[str, Any] | None:
    if served is None:
        return None
    return {
        "path": served.path,
        "resolved_path": served.resolved_path,
        "read_success": served.leaf is not None,
        "error": served.error or None,
        "modified": _optional_iso8601(served.modified),
        "matches": served.matches,
        "served_fingerprint_sha256": served.served_fingerprint,
        "certificate": _other_cert_document(served.leaf, now) if served.leaf is not None else None,
    }


def _revocation_document(report: Report) -> dict[str, Any] | None:
    revocation = report.result.revocation
    if revocation is None:
        return None
    return {
        "fetch_success": revocation.fetch_success,
        "checks": [
            {
                "position": check.position,
                "status": check.status.value,
                "url": check.url,
                "detail": check.detail,
                "revoked_at": _optional_iso8601(check.revoked_at),
                "reason": check.reason,
                "crl_next_update": _optional_iso8601(check.crl_next_update),
                "fix": REVOKED_FIX if check.status is RevocationStatus.REVOKED else None,
            }
            for check in revocation.checks
        ],
    }


def _legacy_document(legacy: LegacyTlsFacts | None) -> dict[str, Any] | None:
    if legacy is None:
        return None
    return {
        "accepted": legacy.accepted,
        "version": legacy.version,
        "checked_at": _optional_iso8601(legacy.checked_at),
        "detail": legacy.detail,
    }


def _beyond_mqtt_document(report: Report) -> dict[str, Any]:
    """What /metrics has besides the chain and the CONNACK: transport, WebSocket upgrade, round trip,
    the expiry thresholds, the address label of ``addresses: all``."""
    result, broker = report.result, report.broker
    websocket = result.websocket
    roundtrip = result.roundtrip
    failure = roundtrip.failure if roundtrip is not None else None
    return {
        "transport": "wss" if broker.target.scheme == "wss" else "tls",
        "address_label": result.address_label,
        "expiry_thresholds": {"warning": str(broker.expiry_warning), "critical": str(broker.expiry_critical)},
        "websocket": (
            {"upgrade_status_code": websocket.status_code, "subprotocol": websocket.subprotocol}
            if websocket is not None
            else None
        ),
        "roundtrip": (
            {
                "success": roundtrip.success,
                "duration_seconds": round(roundtrip.latency, 6) if roundtrip.latency is not None else None,
                "unverified_connection": roundtrip.unverified_connection,
                "failure": (
                    {"stage": failure.stage.value, "reason": failure.reason.value, "detail": failure.detail}
                    if failure is not None
                    else None
                ),
            }
            if roundtrip is not None
            else None
        ),
    }


def _document(report: Report) -> dict[str, Any]:
    result, broker = report.result, report.broker
    failure: dict[str, Any] | None = None
    if result.failure is not None:
        finding = report.failure or failure_finding(result.failure, result, broker)
        failure = _finding_document(result.failure, finding)
    unverified: dict[str, Any] | None = None
    if result.secondary_failure is not None and report.unverified_failure is not None:
        unverified = _finding_document(result.secondary_failure, report.unverified_failure)
    tls: dict[str, Any] | None = None
    if result.tls is not None:
        verdict = result.tls.verdict
        tls = {
            "version": result.tls.version,
            "cipher": result.tls.cipher,
            "alpn_protocol": result.tls.alpn_protocol,
            "trusted": verdict.trusted if result.tls.chain else None,
            "verify_code": verdict.verify_code,
            "verify_message": verdict.verify_message,
            "problems": [
                {"problem": problem.value, "detail": finding.cause, "fix": finding.fix}
                for problem, finding in report.problems
            ],
            "anchor": _anchor_document(verdict.anchor, report.now) if verdict.anchor else None,
            "chain": [
                _cert_document(position, cert, report.now) for position, cert in enumerate(result.tls.chain)
            ],
        }
    mqtt: dict[str, Any] | None = None
    if result.mqtt is not None and result.mqtt.connack_code is not None:
        code = result.mqtt.connack_code
        mqtt = {
            "protocol": result.mqtt.protocol,
            "connack_code": code,
            "accepted": result.mqtt.accepted,
            "meaning": connack_meaning(result.mqtt.protocol, code),
            "unverified_connection": result.mqtt.unverified_connection,
            "requested_protocol": result.mqtt.requested,
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "broker": result.broker,
        "address": result.address,
        "ip": result.ip,
        "server_name": broker.server_name,
        "checked_at": iso8601(result.finished),
        "warn_days": report.warn_days,
        "status": report.status.label,
        "exit_code": report.exit_code,
        "success": result.success,
        "failure": failure,
        "unverified_failure": unverified,
        "tls": tls,
        "mqtt": mqtt,
        "warnings": [
            {"warning": finding.kind, "position": item.position, "detail": finding.cause, "fix": finding.fix}
            for item, finding in report.warnings
        ]
        + [
            {"warning": finding.kind, "position": None, "detail": finding.cause, "fix": finding.fix}
            for _, finding in report.lifecycle_warnings
        ],
        "durations_seconds": {phase.value: round(seconds, 6) for phase, seconds in result.durations},
        **_beyond_mqtt_document(report),
        "served_file": _served_file_document(result.served_file, report.now),
        "client_certificate": (
            {"path": broker.tls.cert_file or "", **_other_cert_document(result.client_cert, report.now)}
            if result.client_cert is not None
            else None
        ),
        "revocation": _revocation_document(report),
        "legacy_tls": _legacy_document(result.legacy_tls),
        "lints": [
            {
                "lint": finding.lint.value,
                "detail": tailor(finding.detail, broker.broker_kind),
                "positions": list(finding.positions),
            }
            for finding in result.lints
        ],
    }
