"""A broker's next result reuses the text of its lasting samples (the chain, the session, the configuration)
while their key is equal: whatever changed from one result to the next, the text is what formatting the
new result from scratch gives, byte for byte, and what prometheus_client renders."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest

from mqtt_cert_exporter import exposition
from mqtt_cert_exporter import results as facts
from mqtt_cert_exporter.collector import (
    PER_PROBE_FAMILIES,
    ChainDetail,
    broker_samples,
    configured_samples,
    lasting_samples,
    per_probe_samples,
)
from mqtt_cert_exporter.config import ExpiryThreshold
from mqtt_cert_exporter.exposition import BrokerExposition
from mqtt_cert_exporter.results import ProbeResult, TlsFacts
from mqtt_cert_exporter.store import ResultStore
from tests.conftest import cert_facts, configured
from tests.test_exposition import exact, fleet, full_result, reference, refused

NOW = 1_700_000_000.0
BASE = full_result("b", finished=NOW)


def tls_of(result: ProbeResult) -> TlsFacts:
    assert result.tls is not None
    return result.tls


TLS = tls_of(BASE)
OTHER_LEAF = cert_facts(subject="CN=renewed", fingerprint_sha256="ef" * 32, not_after=1_900_000_000.0)

#: for every field of a result, a value other than BASE's (the broker's name is what the text is kept
#: under: another name is another broker)
CHANGED: dict[str, Any] = {
    "address": "elsewhere:8883",
    "ip": "10.9.9.9",
    "started": NOW - 1.0,
    "finished": NOW + 60.0,
    "durations": ((facts.Phase.CONNECT, 0.004), (facts.Phase.TOTAL, 0.06)),
    "failure": None,
    "tls": dataclasses.replace(TLS, chain=(OTHER_LEAF, *TLS.chain[1:])),
    "mqtt": facts.MqttFacts("3.1.1", 0),
    "secondary_failure": facts.Failure(facts.Stage.CONNECT, facts.Reason.TIMEOUT, "timeout"),
    "address_label": "10.0.0.1",
    "websocket": facts.WebSocketFacts(403),
    "roundtrip": facts.RoundtripFacts(
        False, failure=facts.Failure(facts.Stage.ROUNDTRIP, facts.Reason.TIMEOUT)
    ),
    "served_file": facts.ServedFileFacts("/etc/cert.pem", leaf=OTHER_LEAF, matches=True),
    "client_cert": cert_facts(not_after=1_660_000_000.0),
    "revocation": facts.RevocationFacts((facts.RevocationCheck(0, facts.RevocationStatus.GOOD),), True),
    "legacy_tls": facts.LegacyTlsFacts(True, "TLSv1.1"),
    "lints": (facts.LintFinding(facts.Lint.NO_SUBJECT_ALT_NAME, "no SAN", (0,)),),
    "retained": facts.SeenChain(NOW - 600.0, dataclasses.replace(TLS, version="TLSv1.2")),
}
#: what only part of the TLS facts changes, as successive probes see it
TLS_CHANGES = [
    dataclasses.replace(TLS, version="TLSv1.2"),
    dataclasses.replace(TLS, cipher="TLS_AES_128_GCM_SHA256"),
    dataclasses.replace(TLS, alpn_protocol=""),
    dataclasses.replace(TLS, verdict=facts.TrustVerdict(True, anchor=TLS.verdict.anchor)),
    dataclasses.replace(TLS, verdict=dataclasses.replace(TLS.verdict, anchor=cert_facts(not_after=3e9))),
    dataclasses.replace(TLS, chain=TLS.chain[:1]),
    TlsFacts("TLSv1.3", "c", (), facts.TrustVerdict(False, (facts.Problem.HOSTNAME_MISMATCH,))),
]


def variants() -> list[ProbeResult]:
    changed = [dataclasses.replace(BASE, **{name: value}) for name, value in CHANGED.items()]
    changed += [dataclasses.replace(BASE, tls=tls) for tls in TLS_CHANGES]
    # the next probe, as in steady state: equal facts in new objects, new times
    changed.append(
        dataclasses.replace(BASE, finished=NOW + 60.0, lints=tuple(map(dataclasses.replace, BASE.lints)))
    )
    down = dataclasses.replace(refused("b"), finished=NOW + 120.0)
    changed += [
        down,
        dataclasses.replace(down, retained=facts.SeenChain(NOW, TLS)),
        dataclasses.replace(BASE, tls=None),
    ]
    return changed


def test_every_field_of_a_result_has_a_change_to_check() -> None:
    fields = {field.name for field in dataclasses.fields(ProbeResult)}
    assert set(CHANGED) == fields - {"broker"}, "add the new field to CHANGED"


def scrape(store: ResultStore, chain: ChainDetail) -> str:
    return BrokerExposition(store, clock=lambda: NOW + 30.0, chain=chain).render()


@pytest.mark.parametrize("chain", list(ChainDetail))
def test_the_text_after_any_change_is_the_new_result_formatted_from_scratch(chain: ChainDetail) -> None:
    for first, second in itertools.permutations([BASE, *variants()], 2):
        store = ResultStore()
        store.configure(configured({"b": 60.0, "other": 60.0}))
        view = BrokerExposition(store, clock=lambda: NOW + 30.0, chain=chain)
        for result in (refused("other"), first, second):
            store.publish([result])
            view.prepare(result.broker)
        text = view.render()
        assert text == scrape(store, chain), (first, second)
        if chain is ChainDetail.ALL:
            assert exact(text) == exact(reference(store, NOW + 30.0)), (first, second)


def test_a_new_configuration_reaches_the_thresholds_at_the_next_result() -> None:
    store = ResultStore()
    store.configure(configured({"b": 60.0}))
    view = BrokerExposition(store, clock=lambda: NOW + 30.0)
    store.publish([BASE])
    view.prepare("b")
    share = dataclasses.replace(store.brokers["b"], expiry_warning=ExpiryThreshold(share=0.5))
    store.configure({"b": share})
    store.publish([dataclasses.replace(BASE, finished=NOW + 60.0)])
    view.prepare("b")
    text = view.render()
    assert 'mqtt_broker_cert_expiry_warning_threshold_seconds{broker="b"}' in text
    assert text == scrape(store, ChainDetail.ALL)


def test_per_probe_and_lasting_samples_are_the_broker_samples_and_share_no_family() -> None:
    """The exposition keeps the lasting text in place and replaces the per-probe text: that is right only
    while every family comes from one of them."""
    store = fleet()
    for results in store.results.values():
        per_probe = per_probe_samples(results, NOW)
        lasting = lasting_samples(results, store.brokers.get(results[0].broker), NOW, ChainDetail.ALL)
        assert {sample[0] for sample in per_probe} <= PER_PROBE_FAMILIES
        assert not {sample[0] for sample in lasting} & PER_PROBE_FAMILIES
        whole = broker_samples([results], {}, {}, NOW, store.brokers)
        assert sorted(map(repr, whole)) == sorted(map(repr, per_probe + lasting))  # NaN included


def test_the_configuration_is_formatted_when_applied_not_at_the_first_scrape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the configuration alone says (intervals, configured facts) is formatted once per configuration:
    by prepare_configuration when the daemon applies it, else by the first scrape after it."""
    store = ResultStore()
    store.configure(configured({"b": 60.0, "c": 15.0}))
    view = BrokerExposition(store, clock=lambda: NOW + 30.0)
    store.publish([BASE])
    view.prepare("b")
    formatted: list[int] = []

    def counted(*args: Any) -> Any:
        formatted.append(1)
        return configured_samples(*args)

    monkeypatch.setattr(exposition, "configured_samples", counted)
    view.prepare_configuration()
    assert len(formatted) == 1
    text = view.render()
    assert len(formatted) == 1  # the scrape only joined
    assert 'mqtt_broker_probe_interval_seconds{broker="c"} 15.0' in text
    assert text == scrape(store, ChainDetail.ALL)
    store.configure(configured({"b": 60.0, "c": 30.0}))  # a reload the exposition was not told of
    formatted.clear()
    text = view.render()
    assert len(formatted) == 1
    assert 'mqtt_broker_probe_interval_seconds{broker="c"} 30.0' in text
    assert text == scrape(store, ChainDetail.ALL)
