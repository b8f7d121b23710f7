"""A chain OpenSSL rejected before: while the broker sends the same chain and nothing OpenSSL's verdict
depends on changed (server name, trust store, no date of the chain passed), one connection that verifies
nothing serves the probe, instead of a verifying handshake rejected again plus a second connection that
asks whether the broker speaks MQTT. The result stays the same; another chain or another trust store is
judged by OpenSSL again at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import ProbeResult, Reason, Stage
from tests.conftest import Lab
from tests.lab.hostile import rotating_broker


def essentials(result: ProbeResult) -> tuple[object, ...]:
    """Everything a probe reports but its times."""
    assert result.tls is not None
    return (
        result.failure,
        result.secondary_failure,
        result.tls.version,
        result.tls.cipher,
        tuple(facts.fingerprint_sha256 for facts in result.tls.chain),
        result.tls.verdict,
        result.mqtt,
        result.lints,
    )


async def test_a_rejected_chain_is_probed_again_on_one_connection_with_the_same_result(lab: Lab) -> None:
    prober = Prober()
    broker = lab.broker("unknown_ca", mqtt={"protocol": "5"})
    results = []
    for connections in (2, 1, 1):  # verifying + non-verifying; then the non-verifying one alone
        before = lab.connections_logged(broker.target.port)
        results.append(await prober.probe(broker))
        await asyncio.sleep(0.2)  # Mosquitto writes its log line after the accept
        assert lab.connections_logged(broker.target.port) - before == connections
    first = results[0]
    assert first.failure is not None and (first.failure.stage, first.failure.reason) == (
        Stage.TRUST,
        Reason.UNTRUSTED,
    )
    assert first.tls is not None and first.tls.version == "TLSv1.3" and first.tls.verdict.problems
    assert first.mqtt is not None and first.mqtt.accepted and first.mqtt.unverified_connection
    assert [essentials(result) for result in results[1:]] == [essentials(first)] * 2


async def test_a_trust_store_that_now_trusts_the_chain_counts_at_the_next_probe(
    lab: Lab, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(lab.root.cert_path.read_bytes())
    broker = lab.broker("unknown_ca", tls={"ca_file": str(ca_file)}, mqtt={"protocol": "5"})
    prober = Prober()
    for _ in range(2):
        result = await prober.probe(broker)
        assert result.failure is not None and result.failure.reason is Reason.UNTRUSTED
    ca_file.write_bytes(ca_file.read_bytes() + lab.other_root.cert_path.read_bytes())
    result = await prober.probe(broker)
    assert result.failure is None, result.failure
    assert result.tls is not None and result.tls.verdict.trusted


@pytest.fixture
def rotating_untrusted(lab: Lab, tmp_path: Path) -> Iterator[BrokerConfig]:
    """A broker that sends a new leaf of a CA we do not trust on every connection."""
    with rotating_broker(
        tmp_path,
        lab.other_root,
        lab.other_root.cert_path,
        ca_file=lab.root.cert_path,
        connack=b"\x20\x03\x00\x00\x00",
    ) as broker:
        yield broker


async def test_another_chain_is_judged_again_and_reported_not_the_remembered_one(
    rotating_untrusted: BrokerConfig,
) -> None:
    prober = Prober()
    leaves = []
    for _ in range(4):
        result = await prober.probe(rotating_untrusted)
        assert result.failure is not None and result.failure.reason is Reason.UNTRUSTED, result.failure
        assert result.tls is not None and result.tls.verdict.problems
        leaves.append(result.tls.chain[0].fingerprint_sha256)
    assert len(set(leaves)) == 4
