"""Results -> Prometheus metric families, at scrape time. The names and labels are the public contract
documented in docs/metrics.md; change them only deliberately.

A scrape never probes: it renders the latest immutable results, so values relative to now (seconds
until expiry) are computed here and a removed broker simply has no result to render.

``broker_samples`` is the one definition of the broker series: plain tuples of (``Family``, label names,
label values, value), cheap enough to build at every published result. exporter.exposition formats them
as text directly; ``broker_families`` turns them into prometheus_client families for a registry.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.buildinfo import build_info
from exporter.results import Lint, ProbeResult, RevocationStatus, same_leaf
from exporter.store import FailureKey, ResultStore

#: Certificate fields come from whoever runs the broker: bound what we put in a label value.
MAX_LABEL_LENGTH = 256


def bounded(value: str) -> str:
    if len(value) <= MAX_LABEL_LENGTH:
        return value
    return value[: MAX_LABEL_LENGTH - 1] + "…"


@dataclass(frozen=True)
class ExporterFacts:
    """Facts about the exporter itself, rendered with every scrape."""

    brokers: int
    last_reload_successful: bool = True
    last_reload_success_timestamp: float = 0.0
    probes_in_flight: int = 0
    tasks: int = 0
    #: the largest delay between a probe's scheduled start and its actual start, since startup
    max_schedule_lag: float = 0.0
    #: how long the previous /metrics response took to render (the event loop is blocked meanwhile)
    metrics_render_seconds: float = 0.0


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

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.type == COUNTER else self.name


#: (family, label names, label values, value): label names are ``family.labels``, or those of a
#: result of an ``addresses: all`` broker with ``address`` inserted after ``broker``.
Sample = tuple[Family, tuple[str, ...], tuple[str, ...], float]

B: Final = ("broker",)
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

LIFECYCLE_FAMILIES: Final = (
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
)
TRANSPORT_FAMILIES: Final = (WEBSOCKET_UPGRADE_STATUS, ROUNDTRIP_SUCCESS, ROUNDTRIP_DURATION)
#: Every broker family, in the order they are exposed.
BROKER_FAMILIES: Final = (
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
    CONNECT_SUCCESS,
    CONNACK_REASON_CODE,
    *LIFECYCLE_FAMILIES,
    *TRANSPORT_FAMILIES,
    ADDRESSES_SAME_LEAF,
)

Add = Callable[[Sample], None]


def broker_samples(
    results: Iterable[ProbeResult],
    failure_counts: Mapping[FailureKey, int],
    intervals: Mapping[str, float],
    now: float,
) -> list[Sample]:
    """Pure: the samples of the broker families (``BROKER_FAMILIES``) for these results as of ``now``,
    in exposition order within each family.

    Results of ``addresses: all`` brokers (``address_label`` set) get an ``address`` label right after
    ``broker``; every other series is exactly as if the feature did not exist (the contract for default
    brokers does not change).
    """
    results = list(results)
    samples: list[Sample] = []
    add = samples.append
    for name, seconds in intervals.items():
        add((PROBE_INTERVAL, B, (name,), seconds))
    for key, count in failure_counts.items():
        if len(key) == 3:
            add((PROBE_FAILURES, B_STAGE_REASON, (key[0], key[1].value, key[2].value), count))
    for result in results:
        if not result.address_label:
            _result_samples(add, result, now)
    groups: dict[str, list[ProbeResult]] = {}
    for result in results:
        if result.address_label:
            groups.setdefault(result.broker, []).append(result)
            start = len(samples)
            _result_samples(add, result, now)
            samples[start:] = _with_address(samples[start:], result.address_label)
    for key, count in failure_counts.items():
        if len(key) == 4:
            name, stage, reason, address = key
            add(
                (
                    PROBE_FAILURES,
                    _address_labels(B_STAGE_REASON),
                    (name, address, stage.value, reason.value),
                    count,
                )
            )
    for name, group in groups.items():
        verdict = same_leaf(group)
        if verdict is not None:
            add((ADDRESSES_SAME_LEAF, B, (name,), 1.0 if verdict else 0.0))
    return samples


@functools.cache
def _address_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    return (labels[0], "address", *labels[1:])


def _with_address(samples: Iterable[Sample], address: str) -> list[Sample]:
    return [
        (family, _address_labels(labels), (values[0], address, *values[1:]), value)
        for family, labels, values, value in samples
    ]


def _result_samples(add: Add, result: ProbeResult, now: float) -> None:
    _probe_samples(add, result, now)
    _lifecycle_samples(add, result, now)
    _transport_samples(add, result)


def _probe_samples(add: Add, result: ProbeResult, now: float) -> None:
    name = result.broker
    broker = (name,)
    add((PROBE_SUCCESS, B, broker, 1.0 if result.success else 0.0))
    add((PROBE_TIMESTAMP, B, broker, result.finished))
    for phase, seconds in result.durations:
        add((PROBE_DURATION, B_PHASE, (name, phase.value), seconds))
    if result.failure is not None:
        add(
            (
                PROBE_FAILURE,
                B_STAGE_REASON,
                (name, result.failure.stage.value, result.failure.reason.value),
                1.0,
            )
        )
    tls = result.tls
    if tls is not None:
        if tls.version:
            add((TLS_VERSION, B_VERSION, (name, tls.version), 1.0))
        if tls.cipher:
            add((TLS_CIPHER, B_CIPHER, (name, tls.cipher), 1.0))
        if tls.alpn_protocol:
            add((TLS_ALPN, B_PROTOCOL, (name, tls.alpn_protocol), 1.0))
        if tls.chain:
            add((TLS_TRUSTED, B, broker, 1.0 if tls.verdict.trusted else 0.0))
        for item in tls.verdict.problems:
            add((TLS_TRUST_PROBLEM, B_PROBLEM, (name, item.value), 1.0))
        for position, cert in enumerate(tls.chain):
            labels = (name, str(position))
            if not cert.parse_error:
                add((CERT_NOT_AFTER, B_POSITION, labels, cert.not_after))
                add((CERT_NOT_BEFORE, B_POSITION, labels, cert.not_before))
                add((CERT_EXPIRES_IN, B_POSITION, labels, cert.not_after - now))
            identity = (
                *labels,
                bounded(cert.subject),
                bounded(cert.issuer),
                bounded(cert.serial),
                cert.fingerprint_sha256,
                bounded(",".join(cert.dns_names)),
                bounded(",".join(cert.ip_addresses)),
                cert.key,
                cert.signature_algorithm,
            )
            add((CERT_INFO, CERT_INFO_LABELS, identity, 1.0))
    mqtt = result.mqtt
    if mqtt is not None and mqtt.connack_code is not None:
        add((CONNECT_SUCCESS, B, broker, 1.0 if mqtt.connack_code == 0 else 0.0))
        add((CONNACK_REASON_CODE, B, broker, float(mqtt.connack_code)))


def _lifecycle_samples(add: Add, result: ProbeResult, now: float) -> None:
    name = result.broker
    broker = (name,)
    served = result.served_file
    if served is not None:
        add((SERVED_CERT_FILE_READ, B, broker, 0.0 if served.leaf is None else 1.0))
        if served.matches is not None:
            add((SERVED_CERT_MATCHES_FILE, B, broker, 1.0 if served.matches else 0.0))
        if served.leaf is not None and not served.leaf.parse_error:
            add((SERVED_CERT_FILE_NOT_AFTER, B, broker, served.leaf.not_after))
            add((SERVED_CERT_FILE_NOT_BEFORE, B, broker, served.leaf.not_before))
    anchor = result.tls.verdict.anchor if result.tls is not None else None
    if anchor is not None and not anchor.parse_error:
        add((ANCHOR_NOT_AFTER, B, broker, anchor.not_after))
        add((ANCHOR_EXPIRES_IN, B, broker, anchor.not_after - now))
    client = result.client_cert
    if client is not None and not client.parse_error:
        add((CLIENT_CERT_NOT_AFTER, B, broker, client.not_after))
        add((CLIENT_CERT_EXPIRES_IN, B, broker, client.not_after - now))
    if result.revocation is not None:
        for check in result.revocation.checks:
            if check.status is not RevocationStatus.UNKNOWN:
                value = 1.0 if check.status is RevocationStatus.REVOKED else 0.0
                add((CERT_REVOKED, B_POSITION, (name, str(check.position)), value))
        if result.revocation.fetch_success is not None:
            add((CRL_FETCH_SUCCESS, B, broker, 1.0 if result.revocation.fetch_success else 0.0))
    for finding in result.lints:
        add((CERT_LINT, B_LINT, (name, finding.lint.value), 1.0))


def _transport_samples(add: Add, result: ProbeResult) -> None:
    broker = (result.broker,)
    if result.websocket is not None:
        add((WEBSOCKET_UPGRADE_STATUS, B, broker, float(result.websocket.status_code)))
    if result.roundtrip is not None:
        add((ROUNDTRIP_SUCCESS, B, broker, 1.0 if result.roundtrip.success else 0.0))
        if result.roundtrip.latency is not None:
            add((ROUNDTRIP_DURATION, B, broker, result.roundtrip.latency))


# --------------------------------------------------------------------------------------------------
# The same as prometheus_client metric families, for a registry (multi-target /probe, tests)


def metric_families(families: Iterable[Family], samples: Iterable[Sample]) -> list[Metric]:
    """prometheus_client families holding ``samples``, one per family in that order (empty ones too)."""
    metrics: dict[Family, Metric] = {family: _metric(family) for family in families}
    for family, labels, values, value in samples:
        metrics[family].add_sample(family.sample_name, dict(zip(labels, values, strict=True)), value)
    return list(metrics.values())


def _metric(family: Family) -> Metric:
    kind = CounterMetricFamily if family.type == COUNTER else GaugeMetricFamily
    return kind(family.name, family.documentation, labels=list(family.labels))


def broker_families(
    results: Iterable[ProbeResult],
    failure_counts: Mapping[FailureKey, int],
    intervals: Mapping[str, float],
    now: float,
) -> list[Metric]:
    """Pure: ``broker_samples`` as prometheus_client metric families (``BROKER_FAMILIES``)."""
    return metric_families(BROKER_FAMILIES, broker_samples(results, failure_counts, intervals, now))


def lifecycle_families(results: Iterable[ProbeResult], now: float) -> list[Metric]:
    """Pure: the families around the chain (``LIFECYCLE_FAMILIES``), labelled by ``broker`` alone."""
    samples: list[Sample] = []
    for result in results:
        _lifecycle_samples(samples.append, result, now)
    return metric_families(LIFECYCLE_FAMILIES, samples)


def transport_families(results: Iterable[ProbeResult]) -> list[Metric]:
    """Pure: how the broker was reached (``TRANSPORT_FAMILIES``), labelled by ``broker`` alone."""
    samples: list[Sample] = []
    for result in results:
        _transport_samples(samples.append, result)
    return metric_families(TRANSPORT_FAMILIES, samples)


def exporter_families(facts: ExporterFacts) -> list[Metric]:
    info = build_info()
    build = GaugeMetricFamily(
        "mqtt_cert_exporter_build_info",
        "Version and git revision of the exporter, and the Python and OpenSSL running it.",
        labels=["version", "revision", "branch", "python_version", "openssl_version"],
    )
    build.add_metric(
        [info.version, info.revision, info.branch, info.python_version, info.openssl_version], 1.0
    )
    brokers = GaugeMetricFamily("mqtt_cert_exporter_brokers", "Brokers configured.", value=facts.brokers)
    reload_ok = GaugeMetricFamily(
        "mqtt_cert_exporter_config_last_reload_successful",
        "1 if the last configuration (re)load succeeded, 0 if it was rejected.",
        value=1.0 if facts.last_reload_successful else 0.0,
    )
    reload_time = GaugeMetricFamily(
        "mqtt_cert_exporter_config_last_reload_success_timestamp_seconds",
        "Unix time of the last successful configuration (re)load.",
        value=facts.last_reload_success_timestamp,
    )
    in_flight = GaugeMetricFamily(
        "mqtt_cert_exporter_probes_in_flight", "Probes running right now.", value=facts.probes_in_flight
    )
    tasks = GaugeMetricFamily(
        "mqtt_cert_exporter_asyncio_tasks",
        "asyncio tasks alive in the exporter (leak detector).",
        value=facts.tasks,
    )
    lag = GaugeMetricFamily(
        "mqtt_cert_exporter_schedule_lag_max_seconds",
        "Largest delay between a probe's scheduled start and its actual start since the exporter started "
        "(grows when --probe.concurrency is too small for the fleet).",
        value=facts.max_schedule_lag,
    )
    render = GaugeMetricFamily(
        "mqtt_cert_exporter_metrics_render_seconds",
        "Time the previous /metrics response took to render, during which no probe step runs.",
        value=facts.metrics_render_seconds,
    )
    return [build, brokers, reload_ok, reload_time, in_flight, tasks, lag, render]


class ExporterCollector(Collector):
    """Renders the store at scrape time."""

    def __init__(
        self,
        store: ResultStore,
        facts: Callable[[], ExporterFacts],
        clock: Callable[[], float] = time.time,
        *,
        brokers: bool = True,
    ) -> None:
        self._store = store
        self._facts = facts
        self._clock = clock
        self._brokers = brokers

    def collect(self) -> Iterator[Metric]:
        yield from exporter_families(self._facts())
        if not self._brokers:
            return  # the daemon renders them through exporter.exposition (cached per result)
        yield from broker_families(
            self._store.latest(),
            dict(self._store.failure_counts),
            dict(self._store.intervals),
            self._clock(),
        )
