"""The cached fleet exposition says exactly what collector.broker_families says, at any scrape time."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from mqtt_cert_exporter import exposition
from mqtt_cert_exporter.collector import broker_families, broker_samples, configured_samples
from mqtt_cert_exporter.config import DEFAULT_CHAIN_RETENTION, ExpiryThreshold
from mqtt_cert_exporter.exposition import BrokerExposition, number
from mqtt_cert_exporter.families import BROKER_FAMILIES
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import (
    Failure,
    Lint,
    LintFinding,
    MqttFacts,
    Phase,
    ProbeResult,
    Problem,
    Reason,
    RevocationCheck,
    RevocationFacts,
    RevocationStatus,
    RoundtripFacts,
    ServedFileFacts,
    Stage,
    TlsFacts,
    TrustVerdict,
    WebSocketFacts,
)
from mqtt_cert_exporter.store import ResultStore
from mqtt_cert_exporter.web import openmetrics
from tests.conftest import Lab, cert_facts, configured

Sample = tuple[str, tuple[tuple[str, str], ...], float]
RELATIVE_TO_NOW_NAMES = {family.name for family in BROKER_FAMILIES if family.relative_to_now}


def samples(text: str) -> list[Sample]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 6))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def reference(store: ResultStore, now: float) -> str:
    class Reference:
        def collect(self) -> list[Metric]:
            return broker_families(
                store.results.values(), store.failure_counts, store.intervals, now, store.brokers
            )

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reference())
    return generate_latest(registry).decode()


async def probed_store(lab: Lab, *scenarios: str) -> ResultStore:
    store = ResultStore()
    store.configure(configured({name: 60.0 for name in scenarios}))
    prober = Prober()
    for name in scenarios:
        store.publish([await prober.probe(lab.broker(name))])
    return store


async def test_same_series_as_the_collector_at_any_time(lab: Lab) -> None:
    store = await probed_store(lab, "good", "expired", "expired_wrong_host", "closed", "password_wrong")
    clock = [1_000_000.0]
    exposition = BrokerExposition(store, clock=lambda: clock[0])
    for now in (1_000_000.0, 2_000_000_000.0):  # the second scrape reuses the cached text
        clock[0] = now
        assert samples(exposition.render()) == samples(reference(store, now))


async def test_new_results_counters_and_removals_show_up(lab: Lab) -> None:
    store = await probed_store(lab, "good", "closed")
    exposition = BrokerExposition(store, clock=lambda: 5.0)
    first = exposition.render()
    assert 'mqtt_broker_probe_failures_total{broker="closed",stage="connect",reason="refused"} 1.0' in first
    replaced: ProbeResult = await Prober().probe(lab.broker("closed"))
    store.publish([replaced])
    second = exposition.render()
    assert 'mqtt_broker_probe_failures_total{broker="closed",stage="connect",reason="refused"} 2.0' in second
    timestamp = ("mqtt_broker_probe_timestamp_seconds", (("broker", "closed"),), round(replaced.finished, 6))
    assert timestamp in samples(second)
    store.configure(configured({"good": 60.0}))
    third = exposition.render()
    assert 'broker="closed"' not in third and 'broker="good"' in third
    assert samples(third) == samples(reference(store, 5.0))
    assert (Stage.CONNECT, Reason.REFUSED) not in {key[2:4] for key in store.failure_counts}


# --------------------------------------------------------------------------------------------------
# Pure: the text is formatted from collector.broker_samples, byte for byte as through prometheus_client

HOSTILE = 'quote " backslash \\ newline \n percent %s unicode ✓'


def full_result(broker: str, finished: float = 1_700_000_000.25, **changes: Any) -> ProbeResult:
    leaf = cert_facts(subject=f"CN={HOSTILE}", dns_names=("a", "b"), not_after=1_800_000_000.0)
    long = cert_facts(issuer="CN=" + "x" * 400, fingerprint_sha256="cd" * 32, parse_error="truncated")
    result = ProbeResult(
        broker=broker,
        address=f"{broker}:8883",
        ip="10.0.0.1",
        started=finished - 0.05,
        finished=finished,
        durations=((Phase.CONNECT, 0.003), (Phase.TLS, 1e-7), (Phase.TOTAL, 0.05)),
        failure=Failure(Stage.TRUST, Reason.UNTRUSTED, "untrusted"),
        tls=TlsFacts(
            "TLSv1.3",
            HOSTILE,
            (leaf, long),
            TrustVerdict(
                False, (Problem.EXPIRED, Problem.UNKNOWN_CA), anchor=cert_facts(not_after=2e9 + 0.5)
            ),
            alpn_protocol="mqtt",
        ),
        mqtt=MqttFacts("5", 135),
        websocket=WebSocketFacts(101, "mqtt"),
        roundtrip=RoundtripFacts(True, latency=0.0125),
        served_file=ServedFileFacts("/etc/cert.pem", leaf=leaf, matches=False),
        client_cert=cert_facts(not_after=1_650_000_000.0),
        revocation=RevocationFacts(
            (RevocationCheck(0, RevocationStatus.REVOKED), RevocationCheck(1, RevocationStatus.UNKNOWN)),
            False,
        ),
        lints=(LintFinding(Lint.ROOT_INCLUDED, "root"), LintFinding(Lint.LEGACY_TLS_ACCEPTED, "TLSv1")),
    )
    return dataclasses.replace(result, **changes)


def refused(broker: str, **changes: Any) -> ProbeResult:
    failure = Failure(Stage.CONNECT, Reason.REFUSED, "refused")
    return ProbeResult(broker, f"{broker}:8883", "", 1.0, 2.0, ((Phase.TOTAL, 1.0),), failure, **changes)


def fleet() -> ResultStore:
    store = ResultStore()
    store.configure(configured({"full": 60.0, HOSTILE: 30.0, "refused": 15.0, "group": 60.0}))
    store.publish([full_result("full")])
    store.publish([full_result(HOSTILE, finished=float("nan"))])
    store.publish([refused("refused")])
    store.publish([refused("refused")])
    store.publish([full_result("group", address_label="10.0.0.1"), refused("group", address_label="::1")])
    return store


def lines_of(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("#"))


def exact(text: str) -> list[tuple[str, tuple[tuple[str, str], ...], str]]:
    """Samples with their values as exact text of the float (NaN compares equal to itself)."""
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), repr(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def test_exactly_the_collector_at_any_time_without_network() -> None:
    store = fleet()
    clock = [1_700_000_000.0]
    exposition = BrokerExposition(store, clock=lambda: clock[0])
    for now in (1_700_000_000.0, 1_700_000_000.0 + 1e-3, 2_100_000_000.5):
        clock[0] = now
        # "seconds from now" counts from the scrape's whole second (docs/metrics.md)
        text, expected = exposition.render(), reference(store, float(int(now)))
        assert exact(text) == exact(expected)
        assert lines_of(text) == lines_of(expected)  # HELP and TYPE
        assert text.index("# HELP mqtt_broker_addresses_same_leaf") > text.index(
            "# HELP mqtt_broker_probe_success"
        )


def old_style(metrics: list[Metric]) -> dict[str, str]:
    """How the exposition formatted prometheus_client samples before (label order as defined)."""

    def escape(value: str) -> str:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

    return {
        metric.name: "".join(
            s.name
            + "{"
            + ",".join(f'{key}="{escape(value)}"' for key, value in s.labels.items())
            + "} "
            + floatToGoString(s.value)  # type: ignore[no-untyped-call]
            + "\n"
            for s in metric.samples
        )
        for metric in metrics
        if metric.samples and metric.name not in RELATIVE_TO_NOW_NAMES
    }


@pytest.mark.parametrize("name", ["full", HOSTILE, "refused", "group"])
def test_broker_text_is_byte_for_byte_what_prometheus_client_samples_give(name: str) -> None:
    store = fleet()
    results = store.results[name]
    lines, relative = exposition._format(broker_samples([results], {}, {}, now=0.0))  # noqa: SLF001 - the formatting step on its own
    assert {family.name: "".join(texts) for family, texts in lines.items()} == old_style(
        broker_families([results], {}, {}, now=0.0)
    )
    assert all(family.relative_to_now for family in relative)


def test_samples_carry_the_labels_of_their_family() -> None:
    store = fleet()
    for family, labels, values, _ in broker_samples(
        store.results.values(), store.failure_counts, store.intervals, 0
    ):
        assert family in BROKER_FAMILIES
        assert labels in (family.labels, (family.labels[0], "address", *family.labels[1:]))
        assert len(labels) == len(values)


def test_a_broker_losing_families_loses_their_text() -> None:
    store = fleet()
    exposition = BrokerExposition(store, clock=lambda: 1e9)
    exposition.render()
    past_retention = 1_700_000_000.25 + DEFAULT_CHAIN_RETENTION + 1
    store.publish([dataclasses.replace(refused("full"), finished=past_retention)])
    exposition.prepare("full")
    store.publish([refused("group", address_label="::1")])
    exposition.prepare("group")
    text = exposition.render()
    assert 'mqtt_broker_cert_info{broker="full"' not in text
    assert 'mqtt_broker_cert_expires_in_seconds{broker="full"' not in text
    assert exact(text) == exact(reference(store, 1e9))


def test_a_broker_gone_down_keeps_its_last_chain_for_the_retention_with_its_age() -> None:
    store = fleet()
    exposition = BrokerExposition(store, clock=lambda: 1_700_000_600.0)
    exposition.render()
    store.publish([dataclasses.replace(refused("full"), started=1_700_000_299.0, finished=1_700_000_300.0)])
    exposition.prepare("full")
    text = exposition.render()
    found = samples(text)
    assert ("mqtt_broker_cert_chain_age_seconds", (("broker", "full"),), 599.75) in found
    assert ("mqtt_broker_tls_trust_problem", (("broker", "full"), ("problem", "expired")), 1.0) in found
    expires = ("mqtt_broker_cert_expires_in_seconds", (("broker", "full"), ("position", "0")), 99_999_400.0)
    assert expires in found
    # what the latest probe says is its own: it failed, and negotiated no TLS
    assert ("mqtt_broker_probe_success", (("broker", "full"),), 0.0) in found
    assert 'mqtt_broker_tls_version_info{broker="full"' not in text
    assert exact(text) == exact(reference(store, 1_700_000_600.0))


@given(st.one_of(st.floats(), st.integers(min_value=-(10**17), max_value=10**17)))
def test_numbers_are_formatted_as_prometheus_client_does(value: float) -> None:
    assert number(value) == floatToGoString(value)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1.0, 1, 1e6, 999_999.0, 1.5e6, 1e15, 1e16, 1.7e9, 1.7e9 + 0.5, math.inf, -math.inf, math.nan],
)
def test_numbers_edge_cases(value: float) -> None:
    assert number(value) == floatToGoString(value)  # type: ignore[no-untyped-call]
    assert number(value) == floatToGoString(value)  # type: ignore[no-untyped-call]  # cached ones too


def test_families_know_whether_they_are_relative_to_now() -> None:
    """The exposition shifts exactly the families that say so: any other family whose value moved with
    ``now`` would be frozen at its first scrape."""
    store = fleet()
    brokers = list(store.results.values())
    early = broker_samples(brokers, store.failure_counts, store.intervals, now=0.0)
    later = broker_samples(brokers, store.failure_counts, store.intervals, now=1000.0)
    moved = {a[0] for a, b in zip(early, later, strict=True) if a[3] != b[3] and a[3] == a[3]}  # NaN aside
    assert moved == {family for family in BROKER_FAMILIES if family.relative_to_now}


def test_a_share_of_the_lifetime_is_a_threshold_once_a_leaf_is_known() -> None:
    """7-day certificates, expiry_warning 40%: 2.8 days once the leaf is seen; a fixed 1-day critical
    threshold is there from the configuration on."""
    day = 86400.0
    broker = dataclasses.replace(
        configured({"short": 60.0})["short"],
        expiry_warning=ExpiryThreshold(share=0.4),
        expiry_critical=ExpiryThreshold(seconds=day),
    )
    store = ResultStore()
    store.configure({"short": broker})
    exposition = BrokerExposition(store, clock=lambda: 1_700_000_100.0)
    before = samples(exposition.render())
    warning = "mqtt_broker_cert_expiry_warning_threshold_seconds"
    critical = ("mqtt_broker_cert_expiry_critical_threshold_seconds", (("broker", "short"),), day)
    assert critical in before and not [s for s in before if s[0] == warning]
    leaf = cert_facts(not_before=1_700_000_000.0 - 4 * day, not_after=1_700_000_000.0 + 3 * day)
    store.publish([full_result("short", tls=TlsFacts("TLSv1.3", "c", (leaf,), TrustVerdict(True)))])
    exposition.prepare("short")
    after = samples(exposition.render())
    assert (warning, (("broker", "short"),), round(0.4 * 7 * day, 6)) in after
    assert critical in after


def test_the_openmetrics_body_is_the_text_format_body_converted_whole() -> None:
    """The body is built encoded, with each family's headers rewritten on their own: byte for byte what
    converting the whole 0.0.4 text gives (a counter of the head with its ``_created``, the fleet's counter
    of failures, a hostile broker's label values)."""
    registry = CollectorRegistry(auto_describe=False)
    Counter("exporter_things", "Things.", registry=registry).inc()
    head = generate_latest(registry).decode()
    exposition = BrokerExposition(fleet(), clock=lambda: 1_700_000_000.0)
    text = exposition.render(head)
    assert "mqtt_broker_probe_failures_total{" in text and "exporter_things_created" in text
    assert exposition.body(head) == text.encode()
    rewritten = exposition.body(
        openmetrics.rewrite_headers(head), openmetrics.rewrite_headers, openmetrics.EOF
    )
    assert rewritten == openmetrics.from_text_format(text).encode()
    assert exposition.body(head) == text.encode()  # the 0.0.4 headers again after OpenMetrics


@pytest.mark.parametrize("now", [1_700_000_000.0, 2_100_000_000.5])
def test_samples_body_is_what_prometheus_client_renders_of_the_same_samples(now: float) -> None:
    """Multi-target /probe renders its one result with ``samples_body``: every sample, value and HELP/TYPE
    line as the registry it replaced rendered them (hostile label values included), and as OpenMetrics the
    0.0.4 text converted whole."""
    store = fleet()
    results = [store.results[name] for name in ("full", HOSTILE, "group")]
    made = configured_samples(store.brokers.values()) + broker_samples(results, {}, {}, now, store.brokers)
    body = exposition.samples_body(made)
    registry = CollectorRegistry(auto_describe=False)

    class Reference:
        def collect(self) -> list[Metric]:
            return broker_families(results, {}, {}, now, store.brokers)

    registry.register(Reference())
    expected = generate_latest(registry).decode()
    assert exact(body.decode()) == exact(expected)
    assert lines_of(body.decode()) == lines_of(expected)
    converted = exposition.samples_body(made, openmetrics.rewrite_headers, openmetrics.EOF)
    assert converted == openmetrics.from_text_format(body.decode()).encode()
