"""Certificates found in the wild (issue 13), made by the lab's certificate factory: an oversized
certificate message, a CA certificate or a client certificate served as the server's, SHA-1 and MD5
signed chains. Real handshakes where a Python TLS server can serve them; the chain analysis directly for
SHA-1/MD5 chains (with the verify codes OpenSSL gives them)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_cert_exporter.certs import chain, files
from mqtt_cert_exporter.certs.parse import Parsed, parse_der
from mqtt_cert_exporter.config import BrokerConfig, MqttSettings, Target, TlsSettings
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.report import build_report
from mqtt_cert_exporter.results import ProbeResult, Problem
from tests.lab.hostile import HostileServer, after_tls

CONNACK = b"\x20\x03\x00\x00\x00"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("wild"))


@pytest.fixture(scope="module")
def cas(pki: Pki) -> tuple[Issued, Issued]:
    root = pki.root("Wild Root CA", key="rsa2048")
    return root, pki.intermediate("Wild Intermediate CA", root, key="rsa2048")


def _serve(cert: Path, key: Path, ciphers: str | None = None) -> Iterator[str]:
    server = HostileServer(after_tls(lambda _: CONNACK), cert=cert, key=key, ciphers=ciphers).start()
    try:
        yield server.address
    finally:
        server.stop()


def _broker(address: str, root: Issued) -> BrokerConfig:
    host, _, port = address.rpartition(":")
    return BrokerConfig(
        "wild",
        Target(host, int(port)),
        timeout=5.0,
        tls=TlsSettings(ca_file=str(root.cert_path), server_name="localhost"),
        mqtt=MqttSettings(protocol="5"),
        broker_kind="mosquitto",
    )


async def _probe(
    cert: Path, key: Path, root: Issued, ciphers: str | None = None
) -> tuple[ProbeResult, BrokerConfig]:
    for address in _serve(cert, key, ciphers):
        broker = _broker(address, root)
        return await Prober().probe(broker), broker
    raise AssertionError("not served")


async def test_an_oversized_certificate_message_is_named_as_such(
    pki: Pki, cas: tuple[Issued, Issued]
) -> None:
    root, inter = cas
    names = [f"host-{index}.wild.example.com" for index in range(10_000)]
    leaf = pki.leaf("many-names", inter, dns_names=["localhost", *names])
    result, broker = await _probe(leaf.chain_path(inter), leaf.key_path, root)
    assert result.failure is not None
    assert (result.failure.stage.value, result.failure.reason.value) == ("tls", "certificate_too_large")
    text = build_report(result, broker, warn_days=30, now=time.time()).text()
    assert "subjectAltNames" in text and "plaintext" not in text
    # the chain's facts still: read from the TLS 1.2 handshake's plaintext records
    assert result.tls is not None
    assert [cert.common_name for cert in result.tls.chain] == ["many-names", "Wild Intermediate CA"]
    assert len(result.tls.chain[0].dns_names) == 10_001
    assert result.tls.chain[0].not_after == leaf.cert.not_valid_after_utc.timestamp()


async def test_a_ca_certificate_served_as_the_leaf_is_unsuitable(
    pki: Pki, cas: tuple[Issued, Issued]
) -> None:
    root, _ = cas
    # an intermediate as many CAs issue them (keyCertSign, cRLSign), deployed as the broker's certificate
    inter = pki.intermediate("Deployed Intermediate CA", root, signing_only=True)
    result, broker = await _probe(inter.chain_path(), inter.key_path, root)
    assert result.tls is not None
    assert Problem.UNSUITABLE_PURPOSE in result.tls.verdict.problems
    detail = dict(zip(result.tls.verdict.problems, result.tls.verdict.details, strict=True))
    assert "a CA certificate is served as the server's own" in detail[Problem.UNSUITABLE_PURPOSE]
    assert "keyCertSign" in detail[Problem.UNSUITABLE_PURPOSE]
    text = build_report(result, broker, warn_days=30, now=time.time()).text()
    assert (
        "connect with a name the certificate covers" not in text
    )  # not the CA's name: the right certificate


async def test_a_client_certificate_served_as_the_leaf_is_unsuitable(
    pki: Pki, cas: tuple[Issued, Issued]
) -> None:
    root, inter = cas
    client = pki.leaf("client-as-server", inter, client=True)
    result, _ = await _probe(client.chain_path(inter), client.key_path, root)
    assert result.tls is not None and result.tls.verdict.problems == (Problem.UNSUITABLE_PURPOSE,)
    assert "does not include serverAuth" in result.tls.verdict.details[0]


def _parsed(issued: Issued) -> Parsed:
    return parse_der(issued.cert.public_bytes(Encoding.DER))


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_weak_signatures_do_not_confuse_the_chain_analysis(
    pki: Pki, cas: tuple[Issued, Issued], digest: str
) -> None:
    root, inter = cas
    store = files.trust_store(str(root.cert_path))
    # self-signed: self_signed only (was: a spurious unknown_ca next to it)
    alone = _parsed(pki.leaf_sha1(f"self-{digest}", None, key="rsa2048", digest=digest))
    leaf = _parsed(pki.leaf_sha1(f"leaf-{digest}", inter, key="rsa2048", digest=digest))
    now = time.time() + 1  # openssl signs them valid from this second
    verdict = chain.classify([alone], verify_code=18, server_name="localhost", now=now, store=store)
    assert verdict.problems == (Problem.SELF_SIGNED,)
    # served without its intermediate, which tls.intermediates_file has: incomplete_chain, not unknown_ca
    verdict = chain.classify(
        [leaf],
        verify_code=20,
        server_name="localhost",
        now=now,
        store=store,
        extra_intermediates=[_parsed(inter)],
    )
    assert verdict.problems == (Problem.INCOMPLETE_CHAIN, Problem.WEAK_SIGNATURE)
    # the whole chain reaches the configured root: the anchor is known (mqtt_broker_cert_anchor_* series)
    verdict = chain.classify(
        [leaf, _parsed(inter)], verify_code=68, server_name="localhost", now=now, store=store
    )
    assert verdict.problems == (Problem.WEAK_SIGNATURE,)
    assert verdict.anchor is not None and verdict.anchor.common_name == "Wild Root CA"


async def test_a_leaf_from_an_interception_root_says_what_is_in_between(
    pki: Pki, cas: tuple[Issued, Issued]
) -> None:
    root, _ = cas
    # what a TLS-inspecting gateway answers in the broker's place: a leaf for the name, from its own CA
    zscaler = pki.root("Zscaler Root CA")
    minted = pki.leaf("minted-for-the-broker", zscaler)
    result, broker = await _probe(minted.chain_path(), minted.key_path, root)
    assert result.tls is not None and Problem.UNKNOWN_CA in result.tls.verdict.problems
    report = build_report(result, broker, warn_days=30, now=time.time())
    fix = dict(report.problems)[Problem.UNKNOWN_CA].fix
    assert "Zscaler" in fix and "exempt the broker" in fix
    assert "give clients its certificate" not in fix


async def test_a_512_bit_rsa_key_is_named_as_the_cause_of_the_failed_handshake(
    pki: Pki, cas: tuple[Issued, Issued]
) -> None:
    root, inter = cas
    leaf = pki.leaf("rsa-512", inter, key="rsa512")
    result, broker = await _probe(leaf.chain_path(inter), leaf.key_path, root, ciphers="DEFAULT:@SECLEVEL=0")
    assert result.failure is not None
    assert (result.failure.stage.value, result.failure.reason.value) == ("tls", "handshake_failure")
    assert "RSA-512 key" in result.failure.detail
    assert result.tls is not None and result.tls.chain[0].key == "RSA-512"  # the chain is reported
    report = build_report(result, broker, warn_days=30, now=time.time())
    assert report.failure is not None and "2048 bits" in report.failure.fix
    assert "cipher in common" not in report.failure.fix
