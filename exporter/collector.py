"""Results -> Prometheus metric families, at scrape time. The names and labels are the public contract
documented in docs/metrics.md; change them only deliberately.

A scrape never probes: it renders the latest immutable results, so values relative to now (seconds
until expiry) are computed here and a removed broker simply has no result to render.

``broker_samples`` is the one definition of the broker series: plain tuples of (``Family``, label names,
label values, value), cheap enough to build at every published result. exporter.exposition formats them
as text directly; ``broker_families`` turns them into prometheus_client families for a registry. A broker's
samples are its ``per_probe_samples`` (times, durations: new at every probe) and its ``lasting_samples``
(a function of ``lasting_key``), so the exposition formats the latter again only when their facts change.
"""

from __future__ import annotations

import enum
import functools
import operator
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mqtt_cert_exporter.buildinfo import build_info
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.families import (
    ADDRESSES_SAME_LEAF,
    ANCHOR_EXPIRES_IN,
    ANCHOR_NOT_AFTER,
    B_CIPHER,
    B_INFO,
    B_LINT,
    B_PHASE,
    B_POSITION,
    B_PROBLEM,
    B_PROTOCOL,
    B_STAGE_REASON,
    B_VERSION,
    BROKER_FAMILIES,
    BROKER_INFO,
    BROKERS,
    BUILD_INFO,
    CACHE_BYTES,
    CACHE_ENTRIES,
    CERT_EXPIRES_IN,
    CERT_INFO,
    CERT_INFO_LABELS,
    CERT_LINT,
    CERT_NOT_AFTER,
    CERT_NOT_BEFORE,
    CERT_REVOKED,
    CHAIN_AGE,
    CLIENT_CERT_EXPIRES_IN,
    CLIENT_CERT_NOT_AFTER,
    CONNACK_REASON_CODE,
    CONNECT_SUCCESS,
    COUNTER,
    CRL_FETCH_SUCCESS,
    EXPIRY_CRITICAL_THRESHOLD,
    EXPIRY_WARNING_THRESHOLD,
    EXPORTER_FAMILIES,
    FD_EXHAUSTION,
    HTTP_CONNECTIONS,
    HTTP_CONNECTIONS_CLOSED,
    PROBE_DURATION,
    PROBE_FAILURE,
    PROBE_FAILURES,
    PROBE_INTERVAL,
    PROBE_SUCCESS,
    PROBE_TIMESTAMP,
    PROBES_CONNECTING,
    PROBES_IN_FLIGHT,
    RELOAD_SUCCESSFUL,
    RELOAD_TIMESTAMP,
    RENDER_SECONDS,
    ROUNDTRIP_DURATION,
    ROUNDTRIP_SUCCESS,
    SCHEDULE_LAG,
    SERVED_CERT_FILE_NOT_AFTER,
    SERVED_CERT_FILE_NOT_BEFORE,
    SERVED_CERT_FILE_READ,
    SERVED_CERT_MATCHES_FILE,
    TASKS,
    TLS_ALPN,
    TLS_CIPHER,
    TLS_TRUST_PROBLEM,
    TLS_TRUSTED,
    TLS_VERSION,
    WEBSOCKET_UPGRADE_STATUS,
    B,
    Family,
    Sample,
)
from mqtt_cert_exporter.results import (
    CacheSize,
    CertFacts,
    Phase,
    ProbeResult,
    RevocationFacts,
    RevocationStatus,
    SeenChain,
    ServedFileFacts,
    chain_seen,
    leaf_lifetime,
    same_leaf,
)
from mqtt_cert_exporter.store import BrokerResults, FailureKey, ResultStore

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
    #: probes whose TCP connect is in progress, or connected and waiting for a slot
    probes_connecting: int = 0
    tasks: int = 0
    #: the largest delay between a probe's scheduled start and its actual start, since startup
    max_schedule_lag: float = 0.0
    #: how long the previous /metrics response took to render (the event loop is blocked meanwhile)
    metrics_render_seconds: float = 0.0
    #: the caches brokers can grow (CRLs, AIA intermediates)
    caches: tuple[CacheSize, ...] = ()
    #: probe connects refused by the exporter's own fd limit since start
    fd_exhaustion: int = 0
    #: HTTP connections open now, and closed by the exporter (evicted past the cap, header timeout)
    http_connections: int = 0
    http_evicted: int = 0
    http_header_timeouts: int = 0


Add = Callable[[Sample], None]


class ChainDetail(enum.StrEnum):
    """Which certificates of a chain get the per-certificate series (``--metrics.chain``)."""

    #: every certificate the broker presents
    ALL = "all"
    #: the leaf, and beyond it only the certificates an alert can fire on first: the earliest-expiring
    #: one, one starting after the leaf (it may be not yet valid), any revoked one; usually 1 beyond the
    #: leaf, with its expiry as ``*_expires_in_seconds`` only (``dated_positions``)
    LEAF_EARLIEST = "leaf+earliest"


def shown_positions(
    chain: tuple[CertFacts, ...], revoked: Iterable[int], detail: ChainDetail
) -> frozenset[int]:
    """Pure: the positions of ``chain`` whose series are rendered. Independent of the time, so a broker's
    text can be formatted once per result: the earliest-expiring certificate beyond the leaf is the first
    of them to expire whenever the scrape is, and the latest-starting one the last to become valid (kept
    when it starts after the leaf; before that, the leaf is not valid yet either and shows it)."""
    if detail is ChainDetail.ALL:
        return frozenset(range(len(chain)))
    dated = [
        (cert.not_after, cert.not_before, position)
        for position, cert in enumerate(chain)
        if position and not cert.parse_error
    ]
    shown = {0, *revoked}
    shown.update(position for position, cert in enumerate(chain) if position and cert.parse_error)
    if dated:
        shown.add(min(dated)[2])
        _not_after, not_before, latest = max(dated, key=lambda entry: (entry[1], -entry[2]))
        if chain[0].parse_error or not_before > chain[0].not_before:
            shown.add(latest)  # a CA starting after its leaf: the one that can be not yet valid alone
    return frozenset(position for position in shown if position < len(chain))


def dated_positions(
    chain: tuple[CertFacts, ...], shown: frozenset[int], detail: ChainDetail
) -> frozenset[int]:
    """Pure: which of the ``shown`` positions also get their dates as timestamps (``*_not_after_*``,
    ``*_not_before_*``). Beyond the leaf, by default, ``*_expires_in_seconds`` carries the expiry, and a
    CA certificate starting no later than its leaf cannot be the one not yet valid: only one that starts
    after the leaf keeps them."""
    if detail is ChainDetail.ALL or not chain or chain[0].parse_error:
        return shown
    leaf_start = chain[0].not_before
    return frozenset(
        p for p in shown if p == 0 or (not chain[p].parse_error and chain[p].not_before > leaf_start)
    )


def configured_samples(brokers: Iterable[BrokerConfig]) -> list[Sample]:
    """Pure: what the configuration alone says of each broker (present before its first probe)."""
    samples: list[Sample] = []
    for broker in brokers:
        target = broker.target
        transport = "wss" if target.scheme == "wss" else "tls"
        samples.append((BROKER_INFO, B_INFO, (broker.name, str(target), broker.server_name, transport), 1.0))
        _threshold_samples(samples.append, broker, None)
    return samples


def _threshold_samples(add: Add, broker: BrokerConfig, lifetime: float | None) -> None:
    """Thresholds of a fixed duration without a lifetime; those that are a share of it with one."""
    name = (broker.name,)
    for family, threshold in (
        (EXPIRY_WARNING_THRESHOLD, broker.expiry_warning),
        (EXPIRY_CRITICAL_THRESHOLD, broker.expiry_critical),
    ):
        if (threshold.share is None) == (lifetime is None):
            seconds = threshold.for_lifetime(lifetime)
            if seconds is not None:
                add((family, B, name, seconds))


def _leaf_lifetime(results: Iterable[ProbeResult]) -> float | None:
    """The shortest lifetime of the leaves these results show (one per address of a broker)."""
    lifetimes = [leaf_lifetime(seen.tls.chain) for seen in map(chain_seen, results) if seen is not None]
    return min((lifetime for lifetime in lifetimes if lifetime is not None), default=None)


def broker_samples(
    results: Iterable[BrokerResults],
    failure_counts: Mapping[FailureKey, int],
    intervals: Mapping[str, float],
    now: float,
    brokers: Mapping[str, BrokerConfig] | None = None,
    chain: ChainDetail = ChainDetail.ALL,
) -> list[Sample]:
    """Pure: the samples of the broker families (``BROKER_FAMILIES``) for these brokers' results (each
    broker's as one value) as of ``now``, in exposition order within each family. ``brokers`` (the
    configuration of these brokers) gives the thresholds that are a share of the leaf's lifetime;
    ``chain``, which certificates of each chain have series.

    A result labelled with its address (``addresses: all``) gets an ``address`` label right after
    ``broker``, and so do its failure counts; every other series is exactly as if the feature did not
    exist (the contract for default brokers does not change).

    A broker's samples are its ``per_probe_samples`` and its ``lasting_samples``: no family has both.
    """
    brokers = brokers or {}
    samples: list[Sample] = []
    add = samples.append
    for name, seconds in intervals.items():
        add((PROBE_INTERVAL, B, (name,), seconds))
    for (name, address, stage, reason), count in failure_counts.items():
        add(_labelled((PROBE_FAILURES, B_STAGE_REASON, (name, stage.value, reason.value), count), address))
    for broker_results in results:
        if broker_results:
            samples += per_probe_samples(broker_results, now)
            samples += lasting_samples(broker_results, brokers.get(broker_results[0].broker), now, chain)
    return samples


#: The families whose values move with every probe: its time, its durations, the age of the chain shown,
#: the round trip. Every other broker family is ``lasting_samples``' (the outcome, the session, the
#: chain, what is around it, the thresholds: mostly the same from one probe to the next).
PER_PROBE_FAMILIES: Final = frozenset(
    {PROBE_TIMESTAMP, PROBE_DURATION, CHAIN_AGE, ROUNDTRIP_SUCCESS, ROUNDTRIP_DURATION}
)


#: ``phase.value`` without going through Enum's slow descriptor (Python 3.11): every probe has 3-6 phases
_PHASES: Final = {phase: phase.value for phase in Phase}


def per_probe_samples(results: BrokerResults, now: float) -> list[Sample]:
    """Pure: one broker's samples of the ``PER_PROBE_FAMILIES`` as of ``now``."""
    samples: list[Sample] = []
    for result in results:
        start = len(samples)
        _probe_samples(samples.append, result, now)
        _address_labelled(samples, start, result)
    return samples


def lasting_samples(
    results: BrokerResults, broker: BrokerConfig | None, now: float, chain: ChainDetail
) -> list[Sample]:
    """Pure: one broker's samples of the families not in ``PER_PROBE_FAMILIES`` as of ``now``. A function
    of ``lasting_key`` (and ``now``, for the families relative to it), so they can be kept from one probe
    to the next."""
    samples: list[Sample] = []
    add = samples.append
    for result in results:
        start = len(samples)
        _lasting_result_samples(add, result, now, chain)
        _address_labelled(samples, start, result)
    name = results[0].broker
    verdict = same_leaf(result for result in results if result.address_label)
    if verdict is not None:
        add((ADDRESSES_SAME_LEAF, B, (name,), 1.0 if verdict else 0.0))
    # only a share of the lifetime needs a leaf; fixed thresholds come from the configuration
    if broker is not None and None in (broker.expiry_warning.seconds, broker.expiry_critical.seconds):
        lifetime = _leaf_lifetime(results)
        if lifetime is not None:
            _threshold_samples(add, broker, lifetime)
    return samples


def lasting_key(results: BrokerResults, broker: BrokerConfig | None, chain: ChainDetail) -> object:
    """Everything ``lasting_samples`` reads: equal keys give equal samples (for the same ``now``). Mostly
    the same objects from one probe to the next (parsed certificates, verdicts: the probe's caches), so
    comparing two keys is cheap."""
    return (broker, chain, tuple(map(_LASTING_FIELDS, results)))


#: the fields of a result that ``lasting_samples`` reads (one C call per result)
_LASTING_FIELDS: Final = operator.attrgetter(
    "broker",
    "address_label",
    "failure",
    "mqtt",
    "websocket",
    "tls",
    "retained",
    "revocation",
    "lints",
    "served_file",
    "client_cert",
)


@functools.cache
def _address_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    return (labels[0], "address", *labels[1:])


def _labelled(sample: Sample, address: str) -> Sample:
    """The sample with the ``address`` label after ``broker``; unchanged when there is no address."""
    if not address:
        return sample
    family, labels, values, value = sample
    return (family, _address_labels(labels), (values[0], address, *values[1:]), value)


def _address_labelled(samples: list[Sample], start: int, result: ProbeResult) -> None:
    """The samples from ``start`` on (``result``'s) labelled with its address, if it has one."""
    if result.address_label:
        samples[start:] = [_labelled(sample, result.address_label) for sample in samples[start:]]


def _probe_samples(add: Add, result: ProbeResult, now: float) -> None:
    name = result.broker
    broker = (name,)
    add((PROBE_TIMESTAMP, B, broker, result.finished))
    for phase, seconds in result.durations:
        add((PROBE_DURATION, B_PHASE, (name, _PHASES[phase]), seconds))
    seen = chain_seen(result)
    if seen is not None:
        add((CHAIN_AGE, B, broker, now - seen.seen))
    if result.roundtrip is not None:
        add((ROUNDTRIP_SUCCESS, B, broker, 1.0 if result.roundtrip.success else 0.0))
        if result.roundtrip.latency is not None:
            add((ROUNDTRIP_DURATION, B, broker, result.roundtrip.latency))


def _outcome_samples(add: Add, result: ProbeResult) -> None:
    """Whether the probe succeeded, how it failed, what the broker answered."""
    name = result.broker
    broker = (name,)
    add((PROBE_SUCCESS, B, broker, 1.0 if result.success else 0.0))
    failure = result.failure
    if failure is not None:
        add((PROBE_FAILURE, B_STAGE_REASON, (name, failure.stage.value, failure.reason.value), 1.0))
    mqtt = result.mqtt
    if mqtt is not None and mqtt.connack_code is not None:
        add((CONNECT_SUCCESS, B, broker, 1.0 if mqtt.connack_code == 0 else 0.0))
        add((CONNACK_REASON_CODE, B, broker, float(mqtt.connack_code)))
    if result.websocket is not None:
        add((WEBSOCKET_UPGRADE_STATUS, B, broker, float(result.websocket.status_code)))


def _lasting_result_samples(add: Add, result: ProbeResult, now: float, chain: ChainDetail) -> None:
    seen = chain_seen(result)
    shown: tuple[frozenset[int], frozenset[int]] = (frozenset(), frozenset())
    if seen is not None:
        revocation = seen.revocation
        revoked = [
            check.position
            for check in (revocation.checks if revocation is not None else ())
            if check.status is RevocationStatus.REVOKED
        ]
        positions = shown_positions(seen.tls.chain, revoked, chain)
        shown = (positions, dated_positions(seen.tls.chain, positions, chain))
    _outcome_samples(add, result)
    if result.tls is not None:
        _session_samples(add, result)
    if seen is not None:
        _chain_samples(add, result.broker, seen, now, shown)
    _lifecycle_samples(add, result, seen, now, shown)


def _session_samples(add: Add, result: ProbeResult) -> None:
    """What this probe's TLS session negotiated (a chain has series of its own: ``_chain_samples``)."""
    name, tls = result.broker, result.tls
    assert tls is not None
    if tls.version:
        add((TLS_VERSION, B_VERSION, (name, tls.version), 1.0))
    if tls.cipher:
        add((TLS_CIPHER, B_CIPHER, (name, tls.cipher), 1.0))
    if tls.alpn_protocol:
        add((TLS_ALPN, B_PROTOCOL, (name, tls.alpn_protocol), 1.0))
    if not tls.chain and result.retained is None:
        for item in tls.verdict.problems:
            add((TLS_TRUST_PROBLEM, B_PROBLEM, (name, item.value), 1.0))


def _chain_samples(
    add: Add, name: str, seen: SeenChain, now: float, shown: tuple[frozenset[int], frozenset[int]]
) -> None:
    """The series of the chain a result shows: received by this probe, or retained from an earlier one;
    per-certificate series for the ``shown`` positions (those with series, those with dates too). Its age
    is a per-probe series (``_probe_samples``)."""
    tls = seen.tls
    broker = (name,)
    add((TLS_TRUSTED, B, broker, 1.0 if tls.verdict.trusted else 0.0))
    for item in tls.verdict.problems:
        add((TLS_TRUST_PROBLEM, B_PROBLEM, (name, item.value), 1.0))
    with_series, with_dates = shown
    for position, cert in enumerate(tls.chain):
        if position not in with_series:
            continue
        labels = (name, str(position))
        if not cert.parse_error:
            if position in with_dates:
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


def _lifecycle_samples(
    add: Add,
    result: ProbeResult,
    seen: SeenChain | None,
    now: float,
    shown: tuple[frozenset[int], frozenset[int]],
) -> None:
    name = result.broker
    broker = (name,)
    served = result.served_file
    if served is not None:
        _served_file_samples(add, broker, served)
    client = result.client_cert
    if client is not None and not client.parse_error:
        add((CLIENT_CERT_NOT_AFTER, B, broker, client.not_after))
        add((CLIENT_CERT_EXPIRES_IN, B, broker, client.not_after - now))
    lints = result.lints if seen is None else seen.lints
    if seen is not None:
        anchor = seen.tls.verdict.anchor
        if anchor is not None and not anchor.parse_error:
            add((ANCHOR_NOT_AFTER, B, broker, anchor.not_after))
            add((ANCHOR_EXPIRES_IN, B, broker, anchor.not_after - now))
        if seen.revocation is not None:
            _revocation_samples(add, name, seen.revocation, shown[0])
    for finding in lints:
        add((CERT_LINT, B_LINT, (name, finding.lint.value), 1.0))


def _served_file_samples(add: Add, broker: tuple[str], served: ServedFileFacts) -> None:
    add((SERVED_CERT_FILE_READ, B, broker, 0.0 if served.leaf is None else 1.0))
    if served.matches is not None:
        add((SERVED_CERT_MATCHES_FILE, B, broker, 1.0 if served.matches else 0.0))
    if served.leaf is not None and not served.leaf.parse_error:
        add((SERVED_CERT_FILE_NOT_AFTER, B, broker, served.leaf.not_after))
        add((SERVED_CERT_FILE_NOT_BEFORE, B, broker, served.leaf.not_before))


def _revocation_samples(add: Add, name: str, revocation: RevocationFacts, shown: frozenset[int]) -> None:
    for check in revocation.checks:
        if check.status is not RevocationStatus.UNKNOWN and check.position in shown:
            value = 1.0 if check.status is RevocationStatus.REVOKED else 0.0
            add((CERT_REVOKED, B_POSITION, (name, str(check.position)), value))
    if revocation.fetch_success is not None:
        add((CRL_FETCH_SUCCESS, B, (name,), 1.0 if revocation.fetch_success else 0.0))


# --------------------------------------------------------------------------------------------------
# The same as prometheus_client metric families, for a registry (the exporter's own metrics, tests)


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
    results: Iterable[BrokerResults],
    failure_counts: Mapping[FailureKey, int],
    intervals: Mapping[str, float],
    now: float,
    brokers: Mapping[str, BrokerConfig] | None = None,
) -> list[Metric]:
    """Pure: ``configured_samples`` of ``brokers`` and ``broker_samples`` as prometheus_client metric
    families (``BROKER_FAMILIES``)."""
    brokers = brokers or {}
    samples = configured_samples(brokers.values())
    samples += broker_samples(results, failure_counts, intervals, now, brokers)
    return metric_families(BROKER_FAMILIES, samples)


# --------------------------------------------------------------------------------------------------
# The exporter itself


def _build_labels() -> tuple[str, ...]:
    info = build_info()
    return (info.version, info.revision, info.branch, info.python_version, info.openssl_version)


def exporter_samples(facts: ExporterFacts) -> list[Sample]:
    """Pure: the samples of the exporter's own families (``EXPORTER_FAMILIES``)."""
    samples: list[Sample] = [
        (BUILD_INFO, BUILD_INFO.labels, _build_labels(), 1.0),
        (BROKERS, (), (), facts.brokers),
        (RELOAD_SUCCESSFUL, (), (), 1.0 if facts.last_reload_successful else 0.0),
        (RELOAD_TIMESTAMP, (), (), facts.last_reload_success_timestamp),
        (PROBES_IN_FLIGHT, (), (), facts.probes_in_flight),
        (PROBES_CONNECTING, (), (), facts.probes_connecting),
        (TASKS, (), (), facts.tasks),
        (SCHEDULE_LAG, (), (), facts.max_schedule_lag),
        (RENDER_SECONDS, (), (), facts.metrics_render_seconds),
    ]
    samples.extend((CACHE_ENTRIES, ("cache",), (cache.name,), cache.entries) for cache in facts.caches)
    samples.extend((CACHE_BYTES, ("cache",), (cache.name,), cache.bytes) for cache in facts.caches)
    samples += [
        (FD_EXHAUSTION, (), (), facts.fd_exhaustion),
        (HTTP_CONNECTIONS, (), (), facts.http_connections),
        (HTTP_CONNECTIONS_CLOSED, ("reason",), ("evicted",), facts.http_evicted),
        (HTTP_CONNECTIONS_CLOSED, ("reason",), ("header_timeout",), facts.http_header_timeouts),
    ]
    return samples


def exporter_families(facts: ExporterFacts) -> list[Metric]:
    return metric_families(EXPORTER_FAMILIES, exporter_samples(facts))


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
            self._store.results.values(),
            dict(self._store.failure_counts),
            dict(self._store.intervals),
            self._clock(),
            dict(self._store.brokers),
        )
