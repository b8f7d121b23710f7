"""A chain OpenSSL judged before (``probe.judgements``): while the broker sends the same chain and nothing
OpenSSL's verdict depends on changed (server name, trust store, no date of the chain passed), the probe
does not ask OpenSSL again.

* Rejected: one connection that verifies nothing serves the probe, instead of a verifying handshake
  rejected again plus a second connection that asks whether the broker speaks MQTT.
* Accepted: the handshake checks all but the chain, which is compared with the one accepted.

The result stays the same; another chain, another trust store or another server name is judged by
OpenSSL again at once."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt_cert_exporter.certs.chain import VerdictCache
from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.probe import Prober, steps
from mqtt_cert_exporter.probe.wire.connection import Connection, connect
from mqtt_cert_exporter.results import ProbeResult, Reason, Stage
from tests.conftest import Lab
from tests.lab.hostile import HostileServer, after_tls, rotating_broker


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


async def test_a_rejected_chain_is_probed_again_on_one_connection_with_the_same_result(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted as the prober opens them, not from Mosquitto's log: when the rejected handshake is over
    # before Mosquitto accepts the connection (a loaded machine), it logs "Client connection from
    # 127.0.0.1 failed" without the port instead of "New connection from ... on port N".
    opened: list[int] = []

    async def counted(host: str, port: int) -> Connection:
        opened.append(port)
        return await connect(host, port)  # the real one: steps calls it by this name

    monkeypatch.setattr(steps, "connect", counted)
    prober = Prober()
    broker = lab.broker("unknown_ca", mqtt={"protocol": "5"})
    results = []
    for connections in (2, 1, 1):  # verifying + non-verifying; then the non-verifying one alone
        before = len(opened)
        results.append(await prober.probe(broker))
        assert opened[before:] == [broker.target.port] * connections
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


async def test_an_accepted_chain_is_probed_again_on_one_connection_with_the_same_result(lab: Lab) -> None:
    prober = Prober()
    broker = lab.broker("good", mqtt={"protocol": "5"})
    results = []
    for _ in range(3):
        before = lab.connections_logged(broker.target.port)
        results.append(await prober.probe(broker))
        assert await lab.connections_since(broker.target.port, before, 1) == 1
    first = results[0]
    assert first.failure is None, first.failure
    assert first.tls is not None and first.tls.verdict.trusted and first.tls.version == "TLSv1.3"
    assert first.mqtt is not None and first.mqtt.accepted and not first.mqtt.unverified_connection
    assert [essentials(result) for result in results[1:]] == [essentials(first)] * 2
    assert prober.judgements.size().entries == 1


async def test_an_accepted_chain_stays_one_connection_when_its_verdict_was_evicted(lab: Lab) -> None:
    """A fleet larger than the verdict cache: the verdict is worked out again, the handshake is not."""
    prober = Prober()
    prober.verdicts = VerdictCache(size=1)
    brokers = [lab.broker("good"), lab.broker("expiring")]  # two chains, verdicts evicting each other
    for _ in range(2):
        for broker in brokers:
            before = lab.connections_logged(broker.target.port)
            result = await prober.probe(broker)
            assert result.failure is None, result.failure
            assert result.tls is not None and result.tls.verdict.trusted
            assert await lab.connections_since(broker.target.port, before, 1) == 1


async def test_an_accepted_chain_is_judged_again_for_another_server_name(lab: Lab) -> None:
    prober = Prober()
    result = await prober.probe(lab.broker("good"))
    assert result.failure is None, result.failure
    renamed = await prober.probe(lab.broker("good", tls={"server_name": "other.example.com"}))
    assert renamed.failure is not None and renamed.failure.reason is Reason.UNTRUSTED
    assert renamed.tls is not None and not renamed.tls.verdict.trusted


async def test_a_trust_store_that_no_longer_trusts_the_chain_counts_at_the_next_probe(
    lab: Lab, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(lab.root.cert_path.read_bytes())
    broker = lab.broker("good", tls={"ca_file": str(ca_file)})
    prober = Prober()
    for _ in range(2):
        result = await prober.probe(broker)
        assert result.failure is None, result.failure
    ca_file.write_bytes(lab.other_root.cert_path.read_bytes())
    result = await prober.probe(broker)
    assert result.failure is not None and result.failure.reason is Reason.UNTRUSTED, result.failure
    assert result.tls is not None and not result.tls.verdict.trusted


@pytest.fixture
def switching(lab: Lab, tmp_path: Path) -> Iterator[tuple[BrokerConfig, list[str]]]:
    """A broker whose certificate the test switches between probes: ``serving[0]`` names it (``trusted``:
    a leaf of the lab's intermediate, sent with it; ``untrusted``: a leaf of a CA the probe does not
    trust)."""
    pki = Pki(tmp_path)
    good, unknown = (
        pki.leaf("switching-good", lab.intermediate),
        pki.leaf("switching-unknown", lab.other_root),
    )
    contexts = {}
    for name, leaf, chain in (
        ("trusted", good, good.chain_path(lab.intermediate)),
        ("untrusted", unknown, unknown.cert_path),
    ):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(chain, leaf.key_path)
        contexts[name] = context
    serving = ["trusted"]

    def choose(ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        ssl_object.context = contexts[serving[0]]

    front = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    front.load_cert_chain(good.chain_path(lab.intermediate), good.key_path)
    front.sni_callback = choose
    server = HostileServer(after_tls(lambda _: b"\x20\x03\x00\x00\x00", close=True), context=front).start()
    try:
        broker = BrokerConfig(
            "switching",
            Target("127.0.0.1", server.port),
            timeout=5,
            tls=TlsSettings(ca_file=str(lab.root.cert_path), server_name="localhost"),
        )
        yield broker, serving
    finally:
        server.stop()


async def test_a_broker_that_now_sends_an_untrusted_chain_is_reported_untrusted_at_once(
    switching: tuple[BrokerConfig, list[str]],
) -> None:
    broker, serving = switching
    prober = Prober()
    trusted = [await prober.probe(broker) for _ in range(2)]
    assert [result.failure for result in trusted] == [None, None]
    serving[0] = "untrusted"
    result = await prober.probe(broker)
    assert result.failure is not None and result.failure.reason is Reason.UNTRUSTED, result.failure
    assert result.tls is not None and result.tls.verdict.problems
    assert trusted[0].tls is not None
    assert result.tls.chain[0].fingerprint_sha256 != trusted[0].tls.chain[0].fingerprint_sha256
    serving[0] = "trusted"
    result = await prober.probe(broker)
    assert result.failure is None, result.failure
    assert result.tls is not None and result.tls.verdict.trusted
