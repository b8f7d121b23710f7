"""Results -> Prometheus metric families, at scrape time. The names and labels are the public contract
documented in docs/metrics.md; change them only deliberately.

A scrape never probes: it renders the latest immutable results, so values relative to now (seconds
until expiry) are computed here and a removed broker simply has no result to render.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.results import Lint, ProbeResult, Reason, RevocationStatus, Stage, same_leaf
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


def broker_families(
    results: Iterable[ProbeResult],
    failure_counts: Mapping[FailureKey, int],
    intervals: Mapping[str, float],
    now: float,
) -> list[Metric]:
    """Pure: the broker metric families for these results as of ``now``.

    Results of ``addresses: all`` brokers (``address_label`` set) are rendered one at a time and their
    series get an ``address`` label right after ``broker``; every other series is exactly as if the
    feature did not exist (the contract for default brokers does not change).
    """
    results = list(results)
    counts = {key: count for key, count in failure_counts.items() if len(key) == 3}
    families = _broker_families([r for r in results if not r.address_label], counts, intervals, now)
    by_name = {family.name: family for family in families}
    groups: dict[str, list[ProbeResult]] = {}
    for result in results:
        if result.address_label:
            groups.setdefault(result.broker, []).append(result)
            for family in _broker_families([result], {}, {}, now):
                _add_address(by_name[family.name], family, result.address_label)
    failures = by_name["mqtt_broker_probe_failures"]
    for key, count in failure_counts.items():
        if len(key) == 4:
            name, stage, reason, address = key
            labels = {"broker": name, "address": address, "stage": stage.value, "reason": reason.value}
            failures.add_sample("mqtt_broker_probe_failures_total", labels, count)
    same = GaugeMetricFamily(
        "mqtt_broker_addresses_same_leaf",
        "addresses: all brokers: 1 when every address that presented a certificate presented the same leaf, "
        "0 when they differ.",
        labels=["broker"],
    )
    for name, group in groups.items():
        verdict = same_leaf(group)
        if verdict is not None:
            same.add_metric([name], 1.0 if verdict else 0.0)
    return [*families, same]


def _add_address(into: Metric, family: Metric, address: str) -> None:
    """Copy ``family``'s samples into ``into`` with ``address`` inserted after ``broker``."""
    for sample in family.samples:
        labels = {"broker": sample.labels["broker"], "address": address}
        labels.update((key, value) for key, value in sample.labels.items() if key != "broker")
        into.samples.append(sample._replace(labels=labels))


def transport_families(results: Iterable[ProbeResult]) -> list[Metric]:
    """Pure: how the broker was reached (issue 8): the WebSocket upgrade and the round trip."""
    b = ["broker"]
    upgrade = GaugeMetricFamily(
        "mqtt_broker_websocket_upgrade_status_code",
        "wss:// brokers: HTTP status of the answer to the WebSocket upgrade (101 when accepted).",
        labels=b,
    )
    roundtrip = GaugeMetricFamily(
        "mqtt_broker_roundtrip_success",
        "mqtt.roundtrip brokers: 1 if our own message came back through the broker, 0 if not.",
        labels=b,
    )
    latency = GaugeMetricFamily(
        "mqtt_broker_roundtrip_duration_seconds",
        "mqtt.roundtrip brokers: seconds from our PUBLISH to receiving the message back.",
        labels=b,
    )
    for result in results:
        name = result.broker
        if result.websocket is not None:
            upgrade.add_metric([name], float(result.websocket.status_code))
        if result.roundtrip is not None:
            roundtrip.add_metric([name], 1.0 if result.roundtrip.success else 0.0)
            if result.roundtrip.latency is not None:
                latency.add_metric([name], result.roundtrip.latency)
    return [upgrade, roundtrip, latency]


def _broker_families(
    results: Iterable[ProbeResult],
    failure_counts: Mapping[tuple[str, Stage, Reason], int],
    intervals: Mapping[str, float],
    now: float,
) -> list[Metric]:
    """The broker metric families, every series labelled by ``broker`` alone."""
    results = list(results)  # iterated twice (see lifecycle_families)
    b = ["broker"]
    success = GaugeMetricFamily(
        "mqtt_broker_probe_success",
        "1 if TCP, TLS, trust and CONNACK all succeeded in the latest probe (and, where configured, the "
        "WebSocket upgrade and the round trip).",
        labels=b,
    )
    duration = GaugeMetricFamily(
        "mqtt_broker_probe_duration_seconds",
        "Duration of each phase of the latest probe (resolve, connect, tls, websocket, mqtt, roundtrip, total).",
        labels=[*b, "phase"],
    )
    timestamp = GaugeMetricFamily(
        "mqtt_broker_probe_timestamp_seconds", "Unix time the latest probe finished.", labels=b
    )
    interval = GaugeMetricFamily(
        "mqtt_broker_probe_interval_seconds", "Configured probe interval of the broker.", labels=b
    )
    failure = GaugeMetricFamily(
        "mqtt_broker_probe_failure",
        "1 for the stage and reason the latest probe failed with; absent on success.",
        labels=[*b, "stage", "reason"],
    )
    failures = CounterMetricFamily(
        "mqtt_broker_probe_failures",
        "Probe failures by stage and reason since the exporter started.",
        labels=[*b, "stage", "reason"],
    )
    version = GaugeMetricFamily(
        "mqtt_broker_tls_version_info", "TLS version negotiated in the latest probe.", labels=[*b, "version"]
    )
    cipher = GaugeMetricFamily(
        "mqtt_broker_tls_cipher_info",
        "TLS cipher suite negotiated in the latest probe.",
        labels=[*b, "cipher"],
    )
    alpn = GaugeMetricFamily(
        "mqtt_broker_tls_alpn_protocol_info",
        "ALPN protocol negotiated in the latest probe (only when one was negotiated).",
        labels=[*b, "protocol"],
    )
    trusted = GaugeMetricFamily(
        "mqtt_broker_tls_trusted",
        "1 if the presented chain verified against the trust store and hostname, 0 if not; "
        "absent when no certificate was received.",
        labels=b,
    )
    problem = GaugeMetricFamily(
        "mqtt_broker_tls_trust_problem",
        "1 for each reason the chain is not trusted (expired, not_yet_valid, self_signed, unknown_ca, "
        "incomplete_chain, hostname_mismatch, weak_key, weak_signature, invalid).",
        labels=[*b, "problem"],
    )
    cert_labels = [*b, "position"]
    not_after = GaugeMetricFamily(
        "mqtt_broker_cert_not_after_timestamp_seconds",
        "Unix time a presented certificate expires (position 0 = leaf, then in the order sent).",
        labels=cert_labels,
    )
    not_before = GaugeMetricFamily(
        "mqtt_broker_cert_not_before_timestamp_seconds",
        "Unix time a presented certificate becomes valid.",
        labels=cert_labels,
    )
    expires_in = GaugeMetricFamily(
        "mqtt_broker_cert_expires_in_seconds",
        "Seconds until a presented certificate expires, as of the scrape; negative once expired.",
        labels=cert_labels,
    )
    info = GaugeMetricFamily(
        "mqtt_broker_cert_info",
        "Identity of a presented certificate.",
        labels=[
            *cert_labels,
            "subject",
            "issuer",
            "serial",
            "fingerprint_sha256",
            "dns_names",
            "ip_addresses",
            "key",
            "signature_algorithm",
        ],
    )
    connect = GaugeMetricFamily(
        "mqtt_broker_connect_success",
        "1 if the CONNACK accepted the connection, 0 if it refused; absent when no CONNACK was received.",
        labels=b,
    )
    connack = GaugeMetricFamily(
        "mqtt_broker_connack_reason_code",
        "CONNACK code as received (MQTT 3.1.1 return code or MQTT 5 reason code).",
        labels=b,
    )

    for name, seconds in intervals.items():
        interval.add_metric([name], seconds)
    for (name, stage, reason), count in failure_counts.items():
        failures.add_metric([name, stage.value, reason.value], count)

    for result in results:
        name = result.broker
        success.add_metric([name], 1.0 if result.success else 0.0)
        timestamp.add_metric([name], result.finished)
        for phase, seconds in result.durations:
            duration.add_metric([name, phase.value], seconds)
        if result.failure is not None:
            failure.add_metric([name, result.failure.stage.value, result.failure.reason.value], 1.0)
        tls = result.tls
        if tls is not None:
            if tls.version:
                version.add_metric([name, tls.version], 1.0)
            if tls.cipher:
                cipher.add_metric([name, tls.cipher], 1.0)
            if tls.alpn_protocol:
                alpn.add_metric([name, tls.alpn_protocol], 1.0)
            if tls.chain:
                trusted.add_metric([name], 1.0 if tls.verdict.trusted else 0.0)
            for item in tls.verdict.problems:
                problem.add_metric([name, item.value], 1.0)
            for position, cert in enumerate(tls.chain):
                labels = [name, str(position)]
                if not cert.parse_error:
                    not_after.add_metric(labels, cert.not_after)
                    not_before.add_metric(labels, cert.not_before)
                    expires_in.add_metric(labels, cert.not_after - now)
                info.add_metric(
                    [
                        *labels,
                        bounded(cert.subject),
                        bounded(cert.issuer),
                        bounded(cert.serial),
                        cert.fingerprint_sha256,
                        bounded(",".join(cert.dns_names)),
                        bounded(",".join(cert.ip_addresses)),
                        cert.key,
                        cert.signature_algorithm,
                    ],
                    1.0,
                )
        mqtt = result.mqtt
        if mqtt is not None and mqtt.connack_code is not None:
            connect.add_metric([name], 1.0 if mqtt.connack_code == 0 else 0.0)
            connack.add_metric([name], float(mqtt.connack_code))

    return [
        success,
        duration,
        timestamp,
        interval,
        failure,
        failures,
        version,
        cipher,
        alpn,
        trusted,
        problem,
        not_after,
        not_before,
        expires_in,
        info,
        connect,
        connack,
        *lifecycle_families(results, now),
        *transport_families(results),
    ]


def lifecycle_families(results: Iterable[ProbeResult], now: float) -> list[Metric]:
    """Pure: the series around the chain (issue 7): the certificate file the broker should serve, the
    trust anchor, the exporter's own client certificate, revocation and lints. None of them is part of
    ``mqtt_broker_probe_success``."""
    b = ["broker"]
    matches = GaugeMetricFamily(
        "mqtt_broker_served_cert_matches_file",
        "1 if the broker serves the certificate in its tls.served_cert_file, 0 if it serves another one "
        "(renewed on disk but not reloaded); absent when the file or the served certificate is unknown.",
        labels=b,
    )
    file_read = GaugeMetricFamily(
        "mqtt_broker_served_cert_file_read_success",
        "1 if tls.served_cert_file could be read and holds a certificate, 0 if not (the error is logged).",
        labels=b,
    )
    file_not_after = GaugeMetricFamily(
        "mqtt_broker_served_cert_file_not_after_timestamp_seconds",
        "Unix time the certificate in tls.served_cert_file expires.",
        labels=b,
    )
    file_not_before = GaugeMetricFamily(
        "mqtt_broker_served_cert_file_not_before_timestamp_seconds",
        "Unix time the certificate in tls.served_cert_file became valid (about when it was renewed).",
        labels=b,
    )
    anchor_not_after = GaugeMetricFamily(
        "mqtt_broker_cert_anchor_not_after_timestamp_seconds",
        "Unix time the trust anchor that completes the chain (from the trust store) expires.",
        labels=b,
    )
    anchor_expires_in = GaugeMetricFamily(
        "mqtt_broker_cert_anchor_expires_in_seconds",
        "Seconds until the trust anchor that completes the chain expires, as of the scrape.",
        labels=b,
    )
    client_not_after = GaugeMetricFamily(
        "mqtt_cert_exporter_client_cert_not_after_timestamp_seconds",
        "Unix time the exporter's own client certificate (tls.cert_file) for this broker expires.",
        labels=b,
    )
    client_expires_in = GaugeMetricFamily(
        "mqtt_cert_exporter_client_cert_expires_in_seconds",
        "Seconds until the exporter's own client certificate (tls.cert_file) expires, as of the scrape.",
        labels=b,
    )
    revoked = GaugeMetricFamily(
        "mqtt_broker_cert_revoked",
        "1 if the certificate at this position is revoked according to its CRL, 0 if not; absent when no "
        "CRL could be obtained for it.",
        labels=[*b, "position"],
    )
    crl_success = GaugeMetricFamily(
        "mqtt_broker_crl_fetch_success",
        "1 if a usable CRL was obtained for every certificate of the chain that names one, 0 if not; "
        "absent when none names a CRL distribution point.",
        labels=b,
    )
    lint = GaugeMetricFamily(
        "mqtt_broker_cert_lint",
        "1 for each warning about the broker's TLS setup (never part of probe_success): "
        + ", ".join(item.value for item in Lint)
        + ".",
        labels=[*b, "lint"],
    )
    for result in results:
        name = result.broker
        served = result.served_file
        if served is not None:
            file_read.add_metric([name], 0.0 if served.leaf is None else 1.0)
            if served.matches is not None:
                matches.add_metric([name], 1.0 if served.matches else 0.0)
            if served.leaf is not None and not served.leaf.parse_error:
                file_not_after.add_metric([name], served.leaf.not_after)
                file_not_before.add_metric([name], served.leaf.not_before)
        anchor = result.tls.verdict.anchor if result.tls is not None else None
        if anchor is not None and not anchor.parse_error:
            anchor_not_after.add_metric([name], anchor.not_after)
            anchor_expires_in.add_metric([name], anchor.not_after - now)
        client = result.client_cert
        if client is not None and not client.parse_error:
            client_not_after.add_metric([name], client.not_after)
            client_expires_in.add_metric([name], client.not_after - now)
        if result.revocation is not None:
            for check in result.revocation.checks:
                if check.status is not RevocationStatus.UNKNOWN:
                    value = 1.0 if check.status is RevocationStatus.REVOKED else 0.0
                    revoked.add_metric([name, str(check.position)], value)
            if result.revocation.fetch_success is not None:
                crl_success.add_metric([name], 1.0 if result.revocation.fetch_success else 0.0)
        for finding in result.lints:
            lint.add_metric([name, finding.lint.value], 1.0)
    return [
        matches,
        file_read,
        file_not_after,
        file_not_before,
        anchor_not_after,
        anchor_expires_in,
        client_not_after,
        client_expires_in,
        revoked,
        crl_success,
        lint,
    ]


def exporter_families(facts: ExporterFacts) -> list[Metric]:
    build = GaugeMetricFamily(
        "mqtt_cert_exporter_build_info",
        "Version of the exporter and of the Python running it.",
        labels=["version", "python_version"],
    )
    build.add_metric([__version__, platform.python_version()], 1.0)
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
    return [build, brokers, reload_ok, reload_time, in_flight, tasks, lag]


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
