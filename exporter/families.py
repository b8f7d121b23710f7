"""The metric families: names, types, help texts, label names, and whether a value moves with the
clock. This is the public contract documented in docs/metrics.md (a test checks every family has a
row); change it only deliberately. Pure data: the samples are built in ``exporter.collector``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from mqtt_cert_exporter.results import Lint

GAUGE: Final = "gauge"
COUNTER: Final = "counter"


@dataclass(frozen=True, slots=True, eq=False)
class Family:
    """A metric family without its samples: what the text format and a registry need besides them.

    Compared and hashed by identity: every family is one of the module constants below.
    """

    name: str
    type: Literal["gauge", "counter"]
    documentation: str
    labels: tuple[str, ...]
    #: how the value moves with the clock: 0 not at all; -1 ``timestamp - now`` (seconds until); +1
    #: ``now - timestamp`` (an age). The exposition builds such samples with now = 0 and adds
    #: ``now_slope * now`` at each scrape; every other family must not depend on ``now``.
    now_slope: Literal[-1, 0, 1] = 0

    @property
    def relative_to_now(self) -> bool:
        return self.now_slope != 0

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.type == COUNTER else self.name


#: (family, label names, label values, value): label names are ``family.labels``, or those of a
#: result of an ``addresses: all`` broker with ``address`` inserted after ``broker``.
Sample = tuple[Family, tuple[str, ...], tuple[str, ...], float]

B: Final = ("broker",)
B_INFO: Final = ("broker", "target", "server_name", "transport")
B_PHASE: Final = ("broker", "phase")
B_STAGE_REASON: Final = ("broker", "stage", "reason")
B_VERSION: Final = ("broker", "version")
B_CIPHER: Final = ("broker", "cipher")
B_PROTOCOL: Final = ("broker", "protocol")
B_PROBLEM: Final = ("broker", "problem")
B_POSITION: Final = ("broker", "position")
B_LINT: Final = ("broker", "lint")
CERT_INFO_LABELS: Final = (
    *B_POSITION,
    "subject",
    "issuer",
    "serial",
    "fingerprint_sha256",
    "dns_names",
    "ip_addresses",
    "key",
    "signature_algorithm",
)

PROBE_SUCCESS: Final = Family(
    "mqtt_broker_probe_success",
    GAUGE,
    "1 if TCP, TLS, trust and CONNACK all succeeded in the latest probe (and, where configured, the "
    "WebSocket upgrade and the round trip).",
    B,
)
PROBE_DURATION: Final = Family(
    "mqtt_broker_probe_duration_seconds",
    GAUGE,
    "Duration of each phase of the latest probe (resolve, connect, tls, websocket, mqtt, roundtrip, total).",
    B_PHASE,
)
PROBE_TIMESTAMP: Final = Family(
    "mqtt_broker_probe_timestamp_seconds", GAUGE, "Unix time the latest probe finished.", B
)
PROBE_INTERVAL: Final = Family(
    "mqtt_broker_probe_interval_seconds", GAUGE, "Configured probe interval of the broker.", B
)
BROKER_INFO: Final = Family(
    "mqtt_broker_info",
    GAUGE,
    "1 for every configured broker: the address it is probed at (target, as configured), the name checked "
    "and sent as SNI (server_name) and the transport (tls or wss).",
    B_INFO,
)
EXPIRY_WARNING_THRESHOLD: Final = Family(
    "mqtt_broker_cert_expiry_warning_threshold_seconds",
    GAUGE,
    "The broker's expiry_warning: a certificate expiring within this many seconds is a warning "
    "(a share of the leaf's lifetime is shown once a leaf is known).",
    B,
)
EXPIRY_CRITICAL_THRESHOLD: Final = Family(
    "mqtt_broker_cert_expiry_critical_threshold_seconds",
    GAUGE,
    "The broker's expiry_critical: a certificate expiring within this many seconds is critical "
    "(a share of the leaf's lifetime is shown once a leaf is known).",
    B,
)
CHAIN_AGE: Final = Family(
    "mqtt_broker_cert_chain_age_seconds",
    GAUGE,
    "Seconds since the probe that received the chain the certificate series describe: about 0 when the "
    "latest probe received it; larger while the broker is unreachable and the last chain seen is kept "
    "(for at most chain_retention).",
    B,
    now_slope=1,
)
PROBE_FAILURE: Final = Family(
    "mqtt_broker_probe_failure",
    GAUGE,
    "1 for the stage and reason the latest probe failed with; absent on success.",
    B_STAGE_REASON,
)
PROBE_FAILURES: Final = Family(
    "mqtt_broker_probe_failures",
    COUNTER,
    "Probe failures by stage and reason since the exporter started.",
    B_STAGE_REASON,
)
TLS_VERSION: Final = Family(
    "mqtt_broker_tls_version_info", GAUGE, "TLS version negotiated in the latest probe.", B_VERSION
)
TLS_CIPHER: Final = Family(
    "mqtt_broker_tls_cipher_info", GAUGE, "TLS cipher suite negotiated in the latest probe.", B_CIPHER
)
TLS_ALPN: Final = Family(
    "mqtt_broker_tls_alpn_protocol_info",
    GAUGE,
    "ALPN protocol negotiated in the latest probe (only when one was negotiated).",
    B_PROTOCOL,
)
TLS_TRUSTED: Final = Family(
    "mqtt_broker_tls_trusted",
    GAUGE,
    "1 if the presented chain verified against the trust store and hostname, 0 if not; "
    "absent when no certificate was received.",
    B,
)
TLS_TRUST_PROBLEM: Final = Family(
    "mqtt_broker_tls_trust_problem",
    GAUGE,
    "1 for each reason the chain is not trusted (expired, not_yet_valid, self_signed, unknown_ca, "
    "incomplete_chain, hostname_mismatch, weak_key, weak_signature, invalid).",
    B_PROBLEM,
)
CERT_NOT_AFTER: Final = Family(
    "mqtt_broker_cert_not_after_timestamp_seconds",
    GAUGE,
    "Unix time a presented certificate expires (position 0 = leaf, then in the order sent).",
    B_POSITION,
)
CERT_NOT_BEFORE: Final = Family(
    "mqtt_broker_cert_not_before_timestamp_seconds",
    GAUGE,
    "Unix time a presented certificate becomes valid.",
    B_POSITION,
)
CERT_EXPIRES_IN: Final = Family(
    "mqtt_broker_cert_expires_in_seconds",
    GAUGE,
    "Seconds until a presented certificate expires, as of the scrape; negative once expired.",
    B_POSITION,
    now_slope=-1,
)
CERT_INFO: Final = Family(
    "mqtt_broker_cert_info", GAUGE, "Identity of a presented certificate.", CERT_INFO_LABELS
)
CONNECT_SUCCESS: Final = Family(
    "mqtt_broker_connect_success",
    GAUGE,
    "1 if the CONNACK accepted the connection, 0 if it refused; absent when no CONNACK was received.",
    B,
)
CONNACK_REASON_CODE: Final = Family(
    "mqtt_broker_connack_reason_code",
    GAUGE,
    "CONNACK code as received (MQTT 3.1.1 return code or MQTT 5 reason code).",
    B,
)

# Around the chain (issue 7): the certificate file the broker should serve, the trust anchor, the
# exporter's own client certificate, revocation and lints. None of them is part of probe_success.
SERVED_CERT_MATCHES_FILE: Final = Family(
    "mqtt_broker_served_cert_matches_file",
    GAUGE,
    "1 if the broker serves the certificate in its tls.served_cert_file, 0 if it serves another one "
    "(renewed on disk but not reloaded); absent when the file or the served certificate is unknown.",
    B,
)
SERVED_CERT_FILE_READ: Final = Family(
    "mqtt_broker_served_cert_file_read_success",
    GAUGE,
    "1 if tls.served_cert_file could be read and holds a certificate, 0 if not (the error is logged).",
    B,
)
SERVED_CERT_FILE_NOT_AFTER: Final = Family(
    "mqtt_broker_served_cert_file_not_after_timestamp_seconds",
    GAUGE,
    "Unix time the certificate in tls.served_cert_file expires.",
    B,
)
SERVED_CERT_FILE_NOT_BEFORE: Final = Family(
    "mqtt_broker_served_cert_file_not_before_timestamp_seconds",
    GAUGE,
    "Unix time the certificate in tls.served_cert_file became valid (about when it was renewed).",
    B,
)
ANCHOR_NOT_AFTER: Final = Family(
    "mqtt_broker_cert_anchor_not_after_timestamp_seconds",
    GAUGE,
    "Unix time the trust anchor that completes the chain (from the trust store) expires.",
    B,
)
ANCHOR_EXPIRES_IN: Final = Family(
    "mqtt_broker_cert_anchor_expires_in_seconds",
    GAUGE,
    "Seconds until the trust anchor that completes the chain expires, as of the scrape.",
    B,
    now_slope=-1,
)
CLIENT_CERT_NOT_AFTER: Final = Family(
    "mqtt_cert_exporter_client_cert_not_after_timestamp_seconds",
    GAUGE,
    "Unix time the exporter's own client certificate (tls.cert_file) for this broker expires.",
    B,
)
CLIENT_CERT_EXPIRES_IN: Final = Family(
    "mqtt_cert_exporter_client_cert_expires_in_seconds",
    GAUGE,
    "Seconds until the exporter's own client certificate (tls.cert_file) expires, as of the scrape.",
    B,
    now_slope=-1,
)
CERT_REVOKED: Final = Family(
    "mqtt_broker_cert_revoked",
    GAUGE,
    "1 if the certificate at this position is revoked according to its CRL, 0 if not; absent when no "
    "CRL could be obtained for it.",
    B_POSITION,
)
CRL_FETCH_SUCCESS: Final = Family(
    "mqtt_broker_crl_fetch_success",
    GAUGE,
    "1 if a usable CRL was obtained for every certificate of the chain that names one, 0 if not; "
    "absent when none names a CRL distribution point.",
    B,
)
CERT_LINT: Final = Family(
    "mqtt_broker_cert_lint",
    GAUGE,
    "1 for each warning about the broker's TLS setup (never part of probe_success): "
    + ", ".join(item.value for item in Lint)
    + ".",
    B_LINT,
)

# How the broker was reached (issue 8): the WebSocket upgrade and the round trip.
WEBSOCKET_UPGRADE_STATUS: Final = Family(
    "mqtt_broker_websocket_upgrade_status_code",
    GAUGE,
    "wss:// brokers: HTTP status of the answer to the WebSocket upgrade (101 when accepted).",
    B,
)
ROUNDTRIP_SUCCESS: Final = Family(
    "mqtt_broker_roundtrip_success",
    GAUGE,
    "mqtt.roundtrip brokers: 1 if our own message came back through the broker, 0 if not.",
    B,
)
ROUNDTRIP_DURATION: Final = Family(
    "mqtt_broker_roundtrip_duration_seconds",
    GAUGE,
    "mqtt.roundtrip brokers: seconds from our PUBLISH to receiving the message back.",
    B,
)

ADDRESSES_SAME_LEAF: Final = Family(
    "mqtt_broker_addresses_same_leaf",
    GAUGE,
    "addresses: all brokers: 1 when every address that presented a certificate presented the same leaf, "
    "0 when they differ.",
    B,
)

#: Every broker family, in the order they are exposed.
BROKER_FAMILIES: Final = (
    BROKER_INFO,
    EXPIRY_WARNING_THRESHOLD,
    EXPIRY_CRITICAL_THRESHOLD,
    PROBE_SUCCESS,
    PROBE_DURATION,
    PROBE_TIMESTAMP,
    PROBE_INTERVAL,
    PROBE_FAILURE,
    PROBE_FAILURES,
    TLS_VERSION,
    TLS_CIPHER,
    TLS_ALPN,
    TLS_TRUSTED,
    TLS_TRUST_PROBLEM,
    CERT_NOT_AFTER,
    CERT_NOT_BEFORE,
    CERT_EXPIRES_IN,
    CERT_INFO,
    CHAIN_AGE,
    CONNECT_SUCCESS,
    CONNACK_REASON_CODE,
    SERVED_CERT_MATCHES_FILE,
    SERVED_CERT_FILE_READ,
    SERVED_CERT_FILE_NOT_AFTER,
    SERVED_CERT_FILE_NOT_BEFORE,
    ANCHOR_NOT_AFTER,
    ANCHOR_EXPIRES_IN,
    CLIENT_CERT_NOT_AFTER,
    CLIENT_CERT_EXPIRES_IN,
    CERT_REVOKED,
    CRL_FETCH_SUCCESS,
    CERT_LINT,
    WEBSOCKET_UPGRADE_STATUS,
    ROUNDTRIP_SUCCESS,
    ROUNDTRIP_DURATION,
    ADDRESSES_SAME_LEAF,
)


# --------------------------------------------------------------------------------------------------
# The exporter itself

BUILD_INFO: Final = Family(
    "mqtt_cert_exporter_build_info",
    GAUGE,
    "Version and git revision of the exporter, and the Python and OpenSSL running it.",
    ("version", "revision", "branch", "python_version", "openssl_version"),
)
BROKERS: Final = Family("mqtt_cert_exporter_brokers", GAUGE, "Brokers configured.", ())
RELOAD_SUCCESSFUL: Final = Family(
    "mqtt_cert_exporter_config_last_reload_successful",
    GAUGE,
    "1 if the last configuration (re)load succeeded, 0 if it was rejected.",
    (),
)
RELOAD_TIMESTAMP: Final = Family(
    "mqtt_cert_exporter_config_last_reload_success_timestamp_seconds",
    GAUGE,
    "Unix time of the last successful configuration (re)load.",
    (),
)
PROBES_IN_FLIGHT: Final = Family(
    "mqtt_cert_exporter_probes_in_flight", GAUGE, "Probes running right now.", ()
)
PROBES_CONNECTING: Final = Family(
    "mqtt_cert_exporter_probes_connecting",
    GAUGE,
    "Probes whose TCP connect is in progress, or connected and waiting for a --probe.concurrency slot.",
    (),
)
TASKS: Final = Family(
    "mqtt_cert_exporter_asyncio_tasks", GAUGE, "asyncio tasks alive in the exporter (leak detector).", ()
)
SCHEDULE_LAG: Final = Family(
    "mqtt_cert_exporter_schedule_lag_max_seconds",
    GAUGE,
    "Largest delay between a probe's scheduled start and its actual start since the exporter started "
    "(grows when --probe.concurrency is too small for the fleet).",
    (),
)
RENDER_SECONDS: Final = Family(
    "mqtt_cert_exporter_metrics_render_seconds",
    GAUGE,
    "Time the previous /metrics response took to render, during which no probe step runs.",
    (),
)
CACHE_ENTRIES: Final = Family(
    "mqtt_cert_exporter_cache_entries",
    GAUGE,
    "Entries held by a cache that brokers can grow (crl, aia, certificates, signatures, verdicts), bounded (docs/reliability.md).",
    ("cache",),
)
CACHE_BYTES: Final = Family(
    "mqtt_cert_exporter_cache_bytes",
    GAUGE,
    "Estimated memory held by a cache that brokers can grow (crl, aia, certificates, signatures, verdicts), bounded (docs/reliability.md).",
    ("cache",),
)
#: The exporter's own families, in the order they are exposed.
FD_EXHAUSTION: Final = Family(
    "mqtt_cert_exporter_fd_exhaustion",
    COUNTER,
    "Probe connects that failed because the exporter ran out of file descriptors (EMFILE/ENFILE); "
    "such a probe is skipped and the broker keeps its previous result.",
    (),
)
HTTP_CONNECTIONS: Final = Family(
    "mqtt_cert_exporter_http_connections",
    GAUGE,
    "HTTP connections open to the exporter (at most --web.max-connections).",
    (),
)
HTTP_CONNECTIONS_CLOSED: Final = Family(
    "mqtt_cert_exporter_http_connections_closed",
    COUNTER,
    "HTTP connections the exporter closed: evicted (longest idle, to stay under --web.max-connections) "
    "or header_timeout (no complete request head within 10 s).",
    ("reason",),
)
EXPORTER_FAMILIES: Final = (
    BUILD_INFO,
    BROKERS,
    RELOAD_SUCCESSFUL,
    RELOAD_TIMESTAMP,
    PROBES_IN_FLIGHT,
    PROBES_CONNECTING,
    TASKS,
    SCHEDULE_LAG,
    RENDER_SECONDS,
    CACHE_ENTRIES,
    CACHE_BYTES,
    FD_EXHAUSTION,
    HTTP_CONNECTIONS,
    HTTP_CONNECTIONS_CLOSED,
)
