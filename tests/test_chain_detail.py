"""--metrics.chain: the default series budget keeps the leaf and the certificates beyond it that an alert
can fire on first; `all` keeps every certificate, as before."""

from __future__ import annotations

import dataclasses

from mqtt_cert_exporter.cli import serve_parser
from mqtt_cert_exporter.collector import ChainDetail, broker_samples, shown_positions
from mqtt_cert_exporter.daemon import ServeOptions
from mqtt_cert_exporter.exposition import BrokerExposition
from mqtt_cert_exporter.families import (
    CERT_EXPIRES_IN,
    CERT_INFO,
    CERT_NOT_AFTER,
    CERT_NOT_BEFORE,
    CERT_REVOKED,
    Family,
    Sample,
)
from mqtt_cert_exporter.results import (
    CertFacts,
    Phase,
    ProbeResult,
    RevocationCheck,
    RevocationFacts,
    RevocationStatus,
    TlsFacts,
    TrustVerdict,
)
from mqtt_cert_exporter.store import ResultStore
from tests.conftest import cert_facts, configured

DAY = 86400.0
NOW = 1_750_000_000.0
LEAF = cert_facts(subject="CN=leaf", not_before=NOW - 30 * DAY, not_after=NOW + 60 * DAY)
#: an intermediate expiring before the leaf, sent second to last so position alone cannot find it
SOON = cert_facts(subject="CN=Soon CA", is_ca=True, not_before=NOW - 900 * DAY, not_after=NOW + 20 * DAY)
LATER = cert_facts(subject="CN=Later CA", is_ca=True, not_before=NOW - 800 * DAY, not_after=NOW + 900 * DAY)
ROOT = cert_facts(subject="CN=Root", is_ca=True, not_before=NOW - 3000 * DAY, not_after=NOW + 3000 * DAY)


def result(chain: tuple[CertFacts, ...], revoked: tuple[int, ...] = ()) -> ProbeResult:
    checks = tuple(RevocationCheck(position, RevocationStatus.REVOKED) for position in revoked)
    return ProbeResult(
        broker="b",
        address="b:8883",
        ip="10.0.0.1",
        started=NOW - 0.05,
        finished=NOW,
        durations=((Phase.TOTAL, 0.05),),
        failure=None,
        tls=TlsFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", chain, TrustVerdict(True, ())),
        revocation=RevocationFacts(checks, True) if checks else None,
    )


def positions(samples: list[Sample], family: Family) -> set[str]:
    return {values[1] for fam, _labels, values, _value in samples if fam is family}


def test_the_default_keeps_the_leaf_and_the_earliest_expiring_ca_certificate_wherever_it_is() -> None:
    chain = (LEAF, LATER, SOON, ROOT)
    assert shown_positions(chain, (), ChainDetail.LEAF_EARLIEST) == {0, 2}
    assert shown_positions(chain, (), ChainDetail.ALL) == {0, 1, 2, 3}
    assert shown_positions((LEAF,), (), ChainDetail.LEAF_EARLIEST) == {0}
    samples = broker_samples([(result(chain),)], {}, {}, now=NOW, chain=ChainDetail.LEAF_EARLIEST)
    # what the expiry alerts join: the value and the certificate's identity, at its real position
    for family in (CERT_EXPIRES_IN, CERT_INFO):
        assert positions(samples, family) == {"0", "2"}
    # a CA certificate that started before its leaf cannot be the one not yet valid; expires_in is its expiry
    for family in (CERT_NOT_AFTER, CERT_NOT_BEFORE):
        assert positions(samples, family) == {"0"}
    everything = broker_samples([(result(chain),)], {}, {}, now=NOW)
    for family in (CERT_INFO, CERT_EXPIRES_IN, CERT_NOT_AFTER, CERT_NOT_BEFORE):
        assert positions(everything, family) == {"0", "1", "2", "3"}


def test_a_ca_certificate_not_yet_valid_or_revoked_keeps_its_series() -> None:
    not_yet = dataclasses.replace(LATER, not_before=NOW + 2 * DAY)
    chain = (LEAF, SOON, not_yet, ROOT)
    # the latest to start is the last to become valid: the not-yet-valid alert sees it at any scrape time
    assert shown_positions(chain, (), ChainDetail.LEAF_EARLIEST) == {0, 1, 2}
    samples = broker_samples([(result(chain),)], {}, {}, now=NOW, chain=ChainDetail.LEAF_EARLIEST)
    # what MqttBrokerCertificateNotYetValid watches: its not_before, with its identity
    assert positions(samples, CERT_NOT_BEFORE) == {"0", "2"}
    assert positions(samples, CERT_INFO) == {"0", "1", "2"}
    samples = broker_samples([(result((LEAF, SOON, LATER, ROOT), revoked=(3,)),)], {}, {}, now=NOW)
    assert positions(samples, CERT_REVOKED) == {"3"}
    budget = broker_samples(
        [(result((LEAF, SOON, LATER, ROOT), revoked=(3,)),)], {}, {}, now=NOW, chain=ChainDetail.LEAF_EARLIEST
    )
    assert positions(budget, CERT_REVOKED) == {"3"}
    assert positions(budget, CERT_INFO) == {"0", "1", "3"}


def test_the_daemon_renders_the_budget_by_default_and_everything_one_flag_away() -> None:
    assert serve_parser().parse_args([]).chain is ChainDetail.LEAF_EARLIEST
    assert ServeOptions("config.yaml").chain is ChainDetail.LEAF_EARLIEST
    assert serve_parser().parse_args(["--metrics.chain=all"]).chain is ChainDetail.ALL
    store = ResultStore()
    store.configure(configured({"b": 60.0}))
    store.publish([result((LEAF, LATER, SOON, ROOT))])
    budget = BrokerExposition(store, clock=lambda: NOW, chain=ChainDetail.LEAF_EARLIEST).render()
    full = BrokerExposition(store, clock=lambda: NOW, chain=ChainDetail.ALL).render()
    assert 'mqtt_broker_cert_info{broker="b",position="2"' in budget
    assert 'position="1"' not in budget and 'position="3"' not in budget
    assert 'mqtt_broker_cert_info{broker="b",position="3"' in full
    assert len(budget) < len(full)
