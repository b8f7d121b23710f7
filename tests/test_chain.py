"""Pure certificate analysis: classification of chains made by the lab PKI (no network)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_cert_exporter.certs.chain import VerdictCache, classify, hostname_matches
from mqtt_cert_exporter.certs.parse import Parsed, TrustStore, parse_der
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import CertFacts, TrustVerdict
from tests.conftest import Lab, cert_facts

UTC = dt.UTC


def der(issued: Issued) -> bytes:
    return issued.cert.public_bytes(Encoding.DER)


def parsed(*certs: Issued) -> list[Parsed]:
    return [parse_der(der(c)) for c in certs]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    p = Pki(tmp_path_factory.mktemp("pki"))
    root = p.root("Root")
    inter = p.intermediate("Inter", root)
    now = dt.datetime.now(UTC)
    return {
        "root": root,
        "inter": inter,
        "good": p.leaf("good", inter),
        "expired_wrong": p.leaf(
            "ew", inter, dns_names=("a.example.com",), ip_addresses=(), not_after=now - dt.timedelta(days=2)
        ),
        "self": p.leaf("self", None),
        "other_root": p.root("Other"),
        "rsa1024": p.leaf("weak", inter, key="rsa1024"),
    }


def store(*anchors: Issued) -> TrustStore:
    return TrustStore("the test store", tuple(parsed(*anchors)))


def test_trusted_chain_finds_anchor(pki: dict[str, Issued]) -> None:
    verdict = classify(
        parsed(pki["good"], pki["inter"]),
        verify_code=None,
        server_name="localhost",
        now=time.time(),
        store=store(pki["root"]),
    )
    assert verdict.trusted and verdict.problems == ()
    assert verdict.anchor is not None and verdict.anchor.common_name == "Root"


def test_every_problem_is_named_not_only_openssls_first(pki: dict[str, Issued]) -> None:
    # OpenSSL says "hostname mismatch" (62) first; the leaf is also expired.
    verdict = classify(
        parsed(pki["expired_wrong"], pki["inter"]),
        verify_code=62,
        verify_message="Hostname mismatch",
        server_name="localhost",
        now=time.time(),
        store=store(pki["root"]),
    )
    assert not verdict.trusted
    assert [p.value for p in verdict.problems] == ["expired", "hostname_mismatch"]
    assert "a.example.com" in verdict.details[1]


def test_unknown_ca_and_hostname(pki: dict[str, Issued]) -> None:
    verdict = classify(
        parsed(pki["good"], pki["inter"]),
        verify_code=20,
        server_name="mqtt.example.com",
        now=time.time(),
        store=store(pki["other_root"]),
    )
    assert [p.value for p in verdict.problems] == ["unknown_ca", "hostname_mismatch"]


def test_incomplete_chain_when_extra_intermediate_completes_it(pki: dict[str, Issued]) -> None:
    verdict = classify(
        parsed(pki["good"]),
        verify_code=20,
        server_name="localhost",
        now=time.time(),
        store=store(pki["root"]),
        extra_intermediates=parsed(pki["inter"]),
    )
    assert [p.value for p in verdict.problems] == ["incomplete_chain"]
    assert [c.common_name for c in verdict.completed_with] == ["Inter"]


def test_missing_intermediate_without_help_is_unknown_ca(pki: dict[str, Issued]) -> None:
    verdict = classify(
        parsed(pki["good"]),
        verify_code=20,
        server_name="localhost",
        now=time.time(),
        store=store(pki["root"]),
    )
    assert [p.value for p in verdict.problems] == ["unknown_ca"]


def test_self_signed(pki: dict[str, Issued]) -> None:
    verdict = classify(
        parsed(pki["self"]),
        verify_code=18,
        server_name="localhost",
        now=time.time(),
        store=store(pki["root"]),
    )
    assert [p.value for p in verdict.problems] == ["self_signed"]


def test_weak_key(pki: dict[str, Issued]) -> None:
    verdict = classify(
        parsed(pki["rsa1024"], pki["inter"]),
        verify_code=66,
        server_name="localhost",
        now=time.time(),
        store=store(pki["root"]),
    )
    assert [p.value for p in verdict.problems] == ["weak_key"]


def test_unmapped_openssl_error_is_invalid_with_message(pki: dict[str, Issued]) -> None:
    verdict = classify(
        parsed(pki["good"], pki["inter"]),
        verify_code=24,
        verify_message="invalid CA certificate",
        server_name="localhost",
        now=time.time(),
        store=store(pki["root"]),
    )
    assert [p.value for p in verdict.problems] == ["invalid"]
    assert "invalid CA certificate" in verdict.details[0]


def test_no_certificate_is_invalid() -> None:
    verdict = classify([], verify_code=20, server_name="x", now=time.time(), store=TrustStore("none", ()))
    assert not verdict.trusted and [p.value for p in verdict.problems] == ["invalid"]


def test_facts(pki: dict[str, Issued]) -> None:
    facts = parse_der(der(pki["good"])).facts
    assert facts.key == "EC-P256" and facts.key_bits == 256
    assert facts.signature_algorithm == "ecdsa-with-SHA256" and facts.signature_hash == "sha256"
    assert facts.dns_names == ("localhost",) and facts.ip_addresses == ("127.0.0.1", "::1")
    assert facts.serial == format(pki["good"].cert.serial_number, "x")
    assert facts.common_name == "good" and not facts.is_ca
    assert parse_der(der(pki["rsa1024"])).facts.key == "RSA-1024"


def _facts(dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), cn: str = "") -> CertFacts:
    base = parse_der(b"junk").facts
    return dataclasses.replace(base, dns_names=dns, ip_addresses=ips, common_name=cn)


@pytest.mark.parametrize(
    ("dns", "ips", "cn", "name", "matches"),
    [
        (("mqtt.example.com",), (), "", "mqtt.example.com", True),
        (("MQTT.example.com",), (), "", "mqtt.EXAMPLE.com.", True),
        (("*.example.com",), (), "", "mqtt.example.com", True),
        (("*.example.com",), (), "", "a.b.example.com", False),
        (("*.example.com",), (), "", "example.com", False),
        (("*.com",), (), "", "example.com", False),
        (("m*.example.com",), (), "", "mqtt.example.com", False),
        ((), (), "mqtt.example.com", "mqtt.example.com", True),  # CN only when there is no SAN
        (("other.example.com",), (), "mqtt.example.com", "mqtt.example.com", False),
        ((), ("127.0.0.1",), "", "127.0.0.1", True),
        ((), ("::1",), "", "::1", True),
        (("127.0.0.1",), (), "", "127.0.0.1", False),  # an IP needs an IP SAN
    ],
)
def test_hostname_matching(
    dns: tuple[str, ...], ips: tuple[str, ...], cn: str, name: str, matches: bool
) -> None:
    assert hostname_matches(_facts(dns, ips, cn), name) is matches


def test_garbage_der_yields_facts_with_error() -> None:
    facts = parse_der(b"\x30\x03\x02\x01\x01").facts
    assert facts.parse_error and facts.key == "unknown"


#: FUZZ_EXAMPLES=100000 pytest tests/test_chain.py -k mutated  runs the fuzz target longer, on demand.
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None)
@given(data=st.data())
def test_mutated_certificates_never_crash_analysis(data: st.DataObject, pki: dict[str, Issued]) -> None:
    """A hostile broker can send any bytes as a certificate: analysis must not raise."""
    mutated = bytearray(der(pki["good"]))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    blob = bytes(mutated[: data.draw(st.integers(1, len(mutated)))])
    verdict = classify(
        [parse_der(blob)],
        verify_code=20,
        server_name="localhost",
        now=time.time(),
        store=TrustStore("none", ()),
    )
    assert not verdict.trusted and verdict.problems


def test_a_remembered_verdict_lasts_until_a_date_of_its_certificates_passes() -> None:
    cache = VerdictCache(ttl=3600.0)
    now = 1_000_000.0
    expires = cert_facts(not_before=now - 86400, not_after=now + 600)
    anchor = cert_facts(not_before=now - 86400, not_after=now + 10 * 86400)
    verdict = TrustVerdict(trusted=True)
    cache.put(("chain", None, "broker.example"), verdict, [expires, anchor], now)
    assert cache.get(("chain", None, "broker.example"), now + 599) is verdict
    assert cache.get(("chain", None, "broker.example"), now + 600) is None  # the leaf expires: judge again
    assert cache.get(("chain", None, "other.example"), now) is None


def test_a_remembered_verdict_lasts_at_most_the_ttl_and_the_oldest_goes_first() -> None:
    cache = VerdictCache(ttl=60.0, size=2)
    now = 1_000_000.0
    long_lived = cert_facts(not_before=now - 86400, not_after=now + 365 * 86400)
    for key in ("a", "b", "c"):
        cache.put((key,), TrustVerdict(trusted=True), [long_lived], now)
    assert cache.get(("a",), now) is None
    assert cache.get(("b",), now + 59) is not None
    assert cache.get(("c",), now + 60) is None


async def test_a_probe_judges_a_chain_once_and_again_when_it_changes(lab: Lab) -> None:
    prober = Prober()
    first = await prober.probe(lab.broker("good"))
    second = await prober.probe(lab.broker("good"))
    assert first.tls is not None and second.tls is not None
    assert second.tls.verdict is first.tls.verdict  # remembered, not recomputed
    other = await prober.probe(lab.broker("expiring"))
    assert other.tls is not None and other.tls.verdict is not first.tls.verdict
    assert other.tls.verdict.trusted
