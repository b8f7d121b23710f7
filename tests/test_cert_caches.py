"""Issue 18.13: a broker that rotates its certificate on every connection adds a parsed certificate,
signature checks and a chain verdict per probe. Those caches are bounded by entries and bytes, and their
sizes are exported. Real probes against a TLS server that presents a new lab leaf on every connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs import chain, parse
from mqtt_cert_exporter.collector import ExporterFacts, exporter_families
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.probe import Prober
from tests.conftest import Lab
from tests.lab.hostile import rotating_broker

PROBES = 12
#: small enough that a dozen probes overflow each cache
SMALL = 8_000


@pytest.fixture(scope="module")
def rotating(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerConfig]:
    with rotating_broker(
        tmp_path_factory.mktemp("rotating"),
        lab.intermediate,
        lab.intermediate.cert_path,
        ca_file=lab.root.cert_path,
        connack=b"\x20\x02\x00\x00",
    ) as broker:
        yield broker


def exported(prober: Prober) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels["cache"]): sample.value
        for family in exporter_families(ExporterFacts(brokers=1, caches=prober.cache_sizes()))
        for sample in family.samples
        if sample.name.startswith("mqtt_cert_exporter_cache_")
    }


async def test_every_rotation_is_a_new_entry_and_the_sizes_are_exported(
    rotating: BrokerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a cache of its own: other tests of this worker may have seen the lab's issuers already
    monkeypatch.setattr(parse, "ISSUER_NAMES", BoundedCache("issuers", max_entries=4096, max_bytes=4 << 20))
    prober = Prober()
    before = exported(prober)
    fingerprints = set()
    for _ in range(PROBES):
        result = await prober.probe(rotating)
        assert result.failure is None, result.failure
        assert result.tls is not None
        fingerprints.add(result.tls.chain[0].fingerprint_sha256)
    assert len(fingerprints) == PROBES  # the server really rotates
    after = exported(prober)
    for cache in ("certificates", "signatures", "verdicts"):
        grown = (
            after["mqtt_cert_exporter_cache_entries", cache]
            - before["mqtt_cert_exporter_cache_entries", cache]
        )
        assert grown >= PROBES, cache
        assert (
            after["mqtt_cert_exporter_cache_bytes", cache] > before["mqtt_cert_exporter_cache_bytes", cache]
        )
    # every rotated chain has the same issuers (the leaf's, the intermediate's): kept at most once, not
    # per leaf (a chain OpenSSL verified needs no issuer's Name: its issuers are found by key identifier)
    grown = (
        after["mqtt_cert_exporter_cache_entries", "issuers"]
        - before["mqtt_cert_exporter_cache_entries", "issuers"]
    )
    assert grown <= 2


async def test_rotating_certificates_cannot_grow_the_caches_past_their_bytes(
    rotating: BrokerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse, "PARSED", BoundedCache("certificates", max_entries=65536, max_bytes=SMALL))
    monkeypatch.setattr(chain, "SIGNATURES", BoundedCache("signatures", max_entries=65536, max_bytes=SMALL))
    prober = Prober()
    prober.verdicts = chain.VerdictCache(max_bytes=SMALL)
    for _ in range(PROBES):
        result = await prober.probe(rotating)
        assert result.failure is None, result.failure
    sizes = {size.name: size for size in prober.cache_sizes()}
    for cache in ("certificates", "signatures", "verdicts"):
        assert 0 < sizes[cache].bytes <= SMALL, sizes[cache]
        assert sizes[cache].entries < PROBES, sizes[cache]  # the least recently used went
