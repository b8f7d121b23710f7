"""Every address behind a name (issue 8). First the pure parts: which addresses, the store's groups, the
`address` label. Then real probes (slow): the transport lab's Mosquitto listeners on 127.0.0.1,
127.0.0.2 and ::1 serving different certificates, reached through a name that an injected resolver
answers (no DNS in tests), probed once and by the scheduler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_cert_exporter.collector import broker_families
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire.addresses import select_addresses
from mqtt_cert_exporter.results import (
    CertFacts,
    Failure,
    Phase,
    ProbeResult,
    Reason,
    RoundtripFacts,
    Stage,
    TlsFacts,
    TrustVerdict,
    WebSocketFacts,
    same_leaf,
)
from mqtt_cert_exporter.scheduler import Scheduler
from mqtt_cert_exporter.store import FailureKey, ResultStore
from tests.conftest import Lab, cert_facts, configured, promtool_check
from tests.lab.scrape import label_sets, samples, value
from tests.lab.transport import (
    PARTIAL,
    SAME,
    Transport,
    exposition,
    failure_of,
    render,
    resolver,
)


@pytest.mark.parametrize(
    ("ip_protocol", "expected"),
    [
        ("any", ["10.0.0.1", "10.0.0.2", "2001:db8::1", "::1"]),
        ("ip4", ["10.0.0.1", "10.0.0.2"]),
        ("ip6", ["2001:db8::1", "::1"]),
    ],
)
def test_select_addresses(ip_protocol: str, expected: list[str]) -> None:
    candidates = ["2001:db8::1", "10.0.0.1", "2001:DB8:0::1", "::1", "10.0.0.2", "10.0.0.1", "not-an-ip"]
    assert select_addresses(candidates, ip_protocol) == expected


def test_select_addresses_edge_cases() -> None:
    assert select_addresses([], "any") == []
    assert select_addresses(["::1"], "ip4") == []
    assert select_addresses(["fe80::1%lo"], "any") == ["fe80::1%lo"]  # link-local keeps its zone
    with pytest.raises(ValueError):
        select_addresses(["::1"], "ipv6")


@given(st.lists(st.ip_addresses().map(str), max_size=12))
def test_select_addresses_properties(candidates: list[str]) -> None:
    chosen = select_addresses(candidates, "any")
    assert len(chosen) == len(set(chosen))  # each once
    assert set(chosen) == {str(ipaddress.ip_address(c)) for c in candidates}
    v6_started = False
    for address in chosen:  # every IPv4 address before any IPv6 one
        v6_started = v6_started or ":" in address
        assert not (v6_started and ":" not in address)


def cert(fingerprint: str) -> CertFacts:
    return cert_facts(
        fingerprint_sha256=fingerprint,
        subject="CN=node",
        issuer="CN=ca",
        serial="01",
        dns_names=("mqtt.example.com",),
        common_name="node",
    )


def result(
    broker: str = "b", address: str = "", *, leaf: str | None = "aa", failure: Failure | None = None
) -> ProbeResult:
    tls = TlsFacts("TLSv1.3", "TLS_AES_256_GCM_SHA384", (cert(leaf),), TrustVerdict(True)) if leaf else None
    return ProbeResult(
        broker=broker,
        address="mqtt.example.com:8883",
        ip=address or "10.0.0.1",
        started=1.0,
        finished=2.0,
        durations=((Phase.TOTAL, 0.5),),
        failure=failure,
        tls=tls,
        address_label=address,
    )


REFUSED = Failure(Stage.CONNECT, Reason.REFUSED, "refused")


def test_same_leaf() -> None:
    assert same_leaf([result(leaf="aa"), result(leaf="aa"), result(leaf=None, failure=REFUSED)]) is True
    assert same_leaf([result(leaf="aa"), result(leaf="bb")]) is False
    assert same_leaf([result(leaf=None, failure=REFUSED)]) is None
    assert same_leaf([]) is None


def test_a_brokers_results_replace_whole_and_count_per_address() -> None:
    store = ResultStore()
    first = store.publish([result(address="10.0.0.1"), result(address="10.0.0.2", failure=REFUSED)])
    assert [(r.address_label, previous) for r, previous in first] == [("10.0.0.1", None), ("10.0.0.2", None)]
    assert store.failure_counts == {("b", "10.0.0.2", Stage.CONNECT, Reason.REFUSED): 1}
    again = store.publish([result(address="10.0.0.2", failure=REFUSED), result(address="10.0.0.3")])
    assert [(r.address_label, p.address_label if p else None) for r, p in again] == [
        ("10.0.0.2", "10.0.0.2"),
        ("10.0.0.3", None),
    ]
    assert [r.address_label for r in store.results["b"]] == ["10.0.0.2", "10.0.0.3"]  # 10.0.0.1 left the name
    assert store.failure_counts == {("b", "10.0.0.2", Stage.CONNECT, Reason.REFUSED): 2}
    # DNS fails: one unlabelled result; the per-address counters go with the addresses.
    store.publish([result(leaf=None, failure=Failure(Stage.RESOLVE, Reason.DNS_ERROR))])
    assert store.failure_counts == {("b", "", Stage.RESOLVE, Reason.DNS_ERROR): 1}
    store.publish([result("plain")])
    assert set(store.results) == {"b", "plain"}
    store.configure(configured({"plain": 60.0}))
    assert list(store.results) == ["plain"] and not store.failure_counts


def test_a_broker_replaced_by_one_without_addresses_all_drops_the_per_address_counters() -> None:
    store = ResultStore()
    store.publish([result(address="10.0.0.1", failure=REFUSED), result(address="10.0.0.2")])
    store.publish([result(failure=REFUSED)])  # unlabelled: the counters of 10.0.0.1 go
    assert store.failure_counts == {("b", "", Stage.CONNECT, Reason.REFUSED): 1}
    store.publish([result(address="10.0.0.1", failure=REFUSED)])
    store.forget(["b"])  # the scheduler forgets a broker whose configuration changed (addresses: first)
    store.publish([result(failure=REFUSED)])
    assert store.failure_counts == {("b", "", Stage.CONNECT, Reason.REFUSED): 2}
    store.publish([result(failure=REFUSED)])  # unlabelled after unlabelled: counts on
    assert store.failure_counts == {("b", "", Stage.CONNECT, Reason.REFUSED): 3}


def rendered(
    results: list[ProbeResult], counts: Mapping[FailureKey, int] | None = None
) -> list[tuple[str, dict[str, str], float]]:
    return [
        (sample.name, sample.labels, sample.value)
        for family in broker_families([tuple(results)], counts or {}, {"b": 60.0}, now=100.0)
        for sample in family.samples
    ]


def test_default_brokers_never_get_an_address_label() -> None:
    plain = dataclasses.replace(
        result(), websocket=WebSocketFacts(101, "mqtt"), roundtrip=RoundtripFacts(True, latency=0.01)
    )
    samples = rendered([plain], {("b", "", Stage.CONNECT, Reason.REFUSED): 3})
    assert samples and all("address" not in labels for _, labels, _ in samples)
    assert all(next(iter(labels)) == "broker" for _, labels, _ in samples)
    names = {name for name, _, _ in samples}
    assert {
        "mqtt_broker_websocket_upgrade_status_code",
        "mqtt_broker_roundtrip_success",
        "mqtt_broker_roundtrip_duration_seconds",
        "mqtt_broker_probe_failures_total",
    } <= names
    assert "mqtt_broker_addresses_same_leaf" not in names


def test_grouped_results_get_the_address_label_after_broker() -> None:
    group = [result(address="10.0.0.1", leaf="aa"), result(address="2001:db8::1", leaf="bb")]
    counts: dict[FailureKey, int] = {("b", "2001:db8::1", Stage.CONNECT, Reason.REFUSED): 2}
    samples = rendered(group, counts)
    per_probe = [
        (name, labels) for name, labels, _ in samples if name != "mqtt_broker_probe_interval_seconds"
    ]
    for name, labels in per_probe:
        if name == "mqtt_broker_addresses_same_leaf":
            assert labels == {"broker": "b"}
        else:
            assert list(labels)[:2] == ["broker", "address"], (name, labels)
    success = {labels["address"]: v for name, labels, v in samples if name == "mqtt_broker_probe_success"}
    assert success == {"10.0.0.1": 1.0, "2001:db8::1": 1.0}
    assert ("mqtt_broker_addresses_same_leaf", {"broker": "b"}, 0.0) in samples
    labels = {"broker": "b", "address": "2001:db8::1", "stage": "connect", "reason": "refused"}
    assert ("mqtt_broker_probe_failures_total", labels, 2) in samples
    assert ("mqtt_broker_probe_interval_seconds", {"broker": "b"}, 60.0) in samples


def test_each_address_keeps_its_own_last_chain() -> None:
    """Chain retention follows the address: an address that went down shows the leaf it last served,
    not another address's."""
    store = ResultStore()
    store.configure(configured({"b": 60.0}))
    store.publish([result(address="10.0.0.1", leaf="aa"), result(address="10.0.0.2", leaf="bb")])
    down = result(address="10.0.0.2", leaf=None, failure=REFUSED)
    store.publish([result(address="10.0.0.1", leaf="aa"), down])
    first, second = store.results["b"]
    assert first.retained is None  # it received its own chain
    assert second.retained is not None and second.retained.tls.chain[0].fingerprint_sha256 == "bb"
    shown = {
        labels["address"]: labels["fingerprint_sha256"]
        for name, labels, _ in rendered(list(store.results["b"]))
        if name == "mqtt_broker_cert_info"
    }
    assert shown == {"10.0.0.1": "aa", "10.0.0.2": "bb"}


# --------------------------------------------------------------------------------------------------
# Real probes: every address behind a name, each with its own certificate


@pytest.mark.slow
async def test_every_address_is_probed_with_its_own_certificate(transport: Transport) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster())
    assert [r.address_label for r in results] == ["127.0.0.1", "127.0.0.2", "::1"]  # IPv4 first, deduplicated
    assert [r.ip for r in results] == ["127.0.0.1", "127.0.0.2", "::1"]
    for result in results:
        assert result.failure is None, (result.address_label, result.failure)
        assert result.tls is not None and result.tls.verdict.trusted  # the name, not the IP, is checked
        assert (
            result.duration(result.durations[0][0]) is not None and result.durations[0][0].value == "resolve"
        )
    leaves = [r.tls.chain[0].common_name for r in results if r.tls]
    assert leaves == ["t8-node-a", "t8-node-b", "t8-node-c"]

    text = exposition(results, grouped=True)
    found = samples(text)
    for address in ("127.0.0.1", "127.0.0.2", "::1"):
        assert value(found, "mqtt_broker_probe_success", broker="mqtt", address=address) == 1
        assert value(
            found, "mqtt_broker_cert_expires_in_seconds", broker="mqtt", address=address, position="0"
        )
    assert value(found, "mqtt_broker_addresses_same_leaf", broker="mqtt") == 0
    assert value(found, "mqtt_broker_probe_interval_seconds", broker="mqtt") == 60  # per broker, no address
    infos = label_sets(found, "mqtt_broker_cert_info")
    subjects = {i["address"]: i["subject"] for i in infos if i["position"] == "0"}
    assert subjects.keys() == {"127.0.0.1", "127.0.0.2", "::1"}
    nodes = {"127.0.0.1": "a", "127.0.0.2": "b", "::1": "c"}
    assert all(f"CN=t8-node-{node}" in subjects[address] for address, node in nodes.items())
    promtool_check(text)


@pytest.mark.slow
async def test_same_leaf_on_every_address(transport: Transport) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster(SAME))
    assert [r.address_label for r in results] == ["127.0.0.2", "127.0.0.1"]
    assert all(r.success for r in results)
    assert (
        value(samples(exposition(results, grouped=True)), "mqtt_broker_addresses_same_leaf", broker="same")
        == 1
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ip_protocol", "addresses"), [("ip4", ["127.0.0.1", "127.0.0.2"]), ("ip6", ["::1"])]
)
async def test_ip_protocol_restricts_the_addresses(
    transport: Transport, ip_protocol: str, addresses: list[str]
) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster(ip_protocol=ip_protocol))
    assert [r.address_label for r in results] == addresses
    assert all(r.success for r in results)


@pytest.mark.slow
@pytest.mark.parametrize(("ip_protocol", "ip"), [("any", "127.0.0.2"), ("ip4", "127.0.0.2"), ("ip6", "::1")])
async def test_first_address_prefers_ipv4_and_keeps_the_default_series(
    transport: Transport, ip_protocol: str, ip: str
) -> None:
    broker = transport.cluster("v6-first.cluster.test", addresses="first", ip_protocol=ip_protocol)
    (result,) = await Prober(resolver=resolver).probe_group(broker)
    assert result.success and result.ip == ip and result.address_label == ""
    found = samples(exposition([result]))
    assert label_sets(found, "mqtt_broker_probe_success") == [{"broker": "v6-first"}]  # no address label
    assert not label_sets(found, "mqtt_broker_addresses_same_leaf")


@pytest.mark.slow
async def test_a_name_that_does_not_resolve_gives_one_unlabelled_result(transport: Transport) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster("nowhere.cluster.test"))
    assert len(results) == 1 and failure_of(results[0]) == ("resolve", "dns_error")
    assert results[0].address_label == ""
    found = samples(exposition(results, grouped=True))
    assert label_sets(found, "mqtt_broker_probe_success") == [{"broker": "nowhere"}]
    assert not label_sets(found, "mqtt_broker_addresses_same_leaf")


@pytest.mark.slow
async def test_no_address_of_the_wanted_family_is_a_dns_error(transport: Transport) -> None:
    broker = transport.cluster("v4-only.cluster.test", ip_protocol="ip6")
    (result,) = await Prober(resolver=resolver).probe_group(broker)
    assert failure_of(result) == ("resolve", "dns_error")
    assert result.failure is not None and "has no IPv6 address" in result.failure.detail


@pytest.mark.slow
async def test_scheduler_publishes_every_address_and_counts_failures_per_address(
    transport: Transport, lab: Lab
) -> None:
    store = ResultStore()
    seen: list[tuple[str, str | None]] = []
    all_published = asyncio.Event()

    def on_result(result: ProbeResult, previous: ProbeResult | None) -> None:
        seen.append((result.address_label, previous.address_label if previous else None))
        if len(seen) == 3:  # two addresses of one broker, one plain broker
            all_published.set()

    scheduler = Scheduler(Prober(resolver=resolver), store, on_result=on_result)
    partial = transport.cluster(PARTIAL, interval=60.0)
    plain = dataclasses.replace(lab.broker("good"), name="plain")
    scheduler.apply([partial, plain])
    try:
        await asyncio.wait_for(all_published.wait(), 15)
    finally:
        await scheduler.stop()
    ok, dead = store.results["partial"]
    assert (ok.address_label, ok.success) == ("127.0.0.1", True)
    assert (dead.address_label, failure_of(dead)) == ("127.0.0.3", ("connect", "refused"))
    assert sorted(seen) == [("", None), ("127.0.0.1", None), ("127.0.0.3", None)]

    text = render(store)
    found = samples(text)
    assert value(found, "mqtt_broker_probe_success", broker="partial", address="127.0.0.1") == 1
    assert value(found, "mqtt_broker_probe_success", broker="partial", address="127.0.0.3") == 0
    labels = {"broker": "partial", "address": "127.0.0.3", "stage": "connect", "reason": "refused"}
    assert value(found, "mqtt_broker_probe_failure", **labels) == 1
    assert value(found, "mqtt_broker_probe_failures_total", **labels) == 1
    assert value(found, "mqtt_broker_addresses_same_leaf", broker="partial") == 1  # the one that answered
    # The default broker in the same exposition: exactly the series it always had.
    assert label_sets(found, "mqtt_broker_probe_success").count({"broker": "plain"}) == 1
    assert all(
        "address" not in labels
        for labels in label_sets(found, "mqtt_broker_cert_info")
        if labels["broker"] == "plain"
    )
    promtool_check(text)

    # An address that leaves the name leaves the store, with its counters.
    later = dataclasses.replace(ok, finished=ok.finished + 60)
    store.publish([later])
    assert not any(key[1] == "127.0.0.3" for key in store.failure_counts)
    assert "127.0.0.3" not in render(store)
