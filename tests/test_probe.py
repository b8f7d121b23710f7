"""One probe against real brokers: every stage/reason and every trust problem, produced for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import REASONS_BY_STAGE, ProbeResult, Problem, Reason, Stage
from tests.conftest import ROOT, Lab


async def probe(broker: BrokerConfig) -> ProbeResult:
    return await Prober().probe(broker)


def failure_of(result: ProbeResult) -> tuple[str, str] | None:
    return (result.failure.stage.value, result.failure.reason.value) if result.failure else None


async def test_good_broker_succeeds_with_chain_and_connack(lab: Lab) -> None:
    result = await probe(lab.broker("good"))
    assert result.failure is None, result.failure
    assert result.success
    assert result.tls is not None and result.tls.verdict.trusted
    assert result.tls.version == "TLSv1.3"
    assert result.tls.cipher
    assert [cert.common_name for cert in result.tls.chain] == ["good", "Lab Intermediate CA"]
    assert result.tls.verdict.anchor is not None and result.tls.verdict.anchor.common_name == "Lab Root CA"
    assert result.mqtt is not None and result.mqtt.connack_code == 0 and not result.mqtt.unverified_connection
    assert result.ip == "127.0.0.1"
    assert {phase.value for phase, _ in result.durations} == {"resolve", "connect", "tls", "mqtt", "total"}


async def test_expiring_certificate_is_trusted_and_reports_days_left(lab: Lab) -> None:
    result = await probe(lab.broker("expiring"))
    assert result.success
    assert result.tls is not None
    days_left = (result.tls.chain[0].not_after - time.time()) / 86400
    assert 19.9 < days_left <= 20.0


@pytest.mark.parametrize(
    ("scenario", "problems"),
    [
        ("expired", ["expired"]),
        ("not_yet_valid", ["not_yet_valid"]),
        ("wrong_host", ["hostname_mismatch"]),
        ("expired_wrong_host", ["expired", "hostname_mismatch"]),
        ("self_signed", ["self_signed"]),
        ("unknown_ca", ["unknown_ca"]),
        ("missing_intermediate", ["unknown_ca"]),
        ("incomplete_chain", ["incomplete_chain"]),
        ("missing_aia", ["incomplete_chain"]),
        ("weak_key", ["weak_key"]),
        ("weak_signature", ["weak_signature"]),
    ],
)
async def test_untrusted_chain_names_every_problem_and_still_reports_expiry(
    lab: Lab, scenario: str, problems: list[str]
) -> None:
    result = await probe(lab.broker(scenario))
    assert failure_of(result) == ("trust", "untrusted")
    assert result.tls is not None
    assert [p.value for p in result.tls.verdict.problems] == problems, result.tls.verdict.details
    assert not result.tls.verdict.trusted
    assert len(result.tls.verdict.details) == len(problems)
    # The whole point: the chain (and so the expiry) is there even though verification failed.
    assert result.tls.chain and result.tls.chain[0].not_after > 0
    # ... and we still know the broker answers MQTT (over the second, non-verifying connection).
    assert result.mqtt is not None and result.mqtt.connack_code == 0 and result.mqtt.unverified_connection
    assert result.tls.version in ("TLSv1.2", "TLSv1.3")


async def test_expired_detail_says_when(lab: Lab) -> None:
    result = await probe(lab.broker("expired"))
    assert result.tls is not None
    assert "expired on" in result.tls.verdict.details[0]
    assert result.tls.chain[0].not_after < time.time()


async def test_hostname_mismatch_detail_names_covered_names(lab: Lab) -> None:
    result = await probe(lab.broker("wrong_host"))
    assert result.tls is not None
    assert "other.example.com" in result.tls.verdict.details[0]


async def test_system_store_does_not_trust_lab_ca(lab: Lab) -> None:
    result = await probe(lab.broker("good", tls={"ca_file": None}))
    assert failure_of(result) == ("trust", "untrusted")
    assert result.tls is not None and [p.value for p in result.tls.verdict.problems] == ["unknown_ca"]


async def test_ip_address_target_checks_ip_san(lab: Lab) -> None:
    result = await probe(lab.broker("good", tls={"server_name": None}))
    assert result.success, result.failure
    result = await probe(lab.broker("wrong_host", tls={"server_name": None}))
    assert result.tls is not None and Problem.HOSTNAME_MISMATCH in result.tls.verdict.problems


async def test_mtls_without_client_certificate(lab: Lab) -> None:
    for _ in range(5):  # the server's verdict arrives after the TLS 1.3 handshake: must not flip
        result = await probe(lab.broker("mtls"))
        assert failure_of(result) == ("tls", "client_certificate_required"), result.failure
    assert result.tls is not None and result.tls.verdict.trusted  # the chain is still reported


async def test_mtls_with_client_certificate(lab: Lab) -> None:
    result = await probe(lab.broker("mtls_with_cert"))
    assert result.success, result.failure


async def test_mtls_with_client_certificate_under_tls12(lab: Lab) -> None:
    result = await probe(lab.broker("mtls", tls={"max_version": "TLSv1.2"}))
    assert failure_of(result) == ("tls", "client_certificate_required"), result.failure


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_password_right(lab: Lab, protocol: str) -> None:
    result = await probe(lab.broker("password_ok", mqtt={"protocol": protocol}))
    assert result.success, result.failure
    assert result.mqtt is not None and result.mqtt.connack_code == 0


@pytest.mark.parametrize(("protocol", "code"), [("5", 135), ("3.1.1", 5)])
async def test_password_wrong_is_refused_with_code(lab: Lab, protocol: str, code: int) -> None:
    result = await probe(lab.broker("password_wrong", mqtt={"protocol": protocol}))
    assert failure_of(result) == ("mqtt", "refused")
    assert result.mqtt is not None and result.mqtt.connack_code == code
    assert "wrong" not in (result.failure.detail if result.failure else "")


async def test_tls12_only_broker(lab: Lab) -> None:
    result = await probe(lab.broker("tls12"))
    assert result.success, result.failure
    assert result.tls is not None and result.tls.version == "TLSv1.2"


async def test_no_shared_tls_version_is_handshake_failure(lab: Lab) -> None:
    result = await probe(lab.broker("tls12", tls={"min_version": "TLSv1.3"}))
    assert failure_of(result) == ("tls", "handshake_failure"), result.failure


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("plaintext", ("tls", "protocol_error")),
        ("garbage", ("tls", "protocol_error")),
        ("silent", ("tls", "timeout")),
        ("closed", ("connect", "refused")),
        ("black_hole", ("connect", "timeout")),
        ("tls_silent", ("mqtt", "timeout")),
        ("tls_garbage", ("mqtt", "protocol_error")),
        ("tls_close", ("mqtt", "closed")),
        ("tls_huge_length", ("mqtt", "protocol_error")),
    ],
)
async def test_failures_are_classified_within_the_timeout(
    lab: Lab, scenario: str, expected: tuple[str, str]
) -> None:
    broker = lab.broker(scenario, timeout=1.0)
    started = time.monotonic()
    result = await probe(broker)
    elapsed = time.monotonic() - started
    assert failure_of(result) == expected, result.failure
    assert elapsed < broker.timeout + 0.5
    assert result.failure is not None and result.failure.detail


async def test_v5_connack_to_a_311_connect_is_a_protocol_error(lab: Lab) -> None:
    result = await probe(lab.broker("tls_v5_connack", mqtt={"protocol": "3.1.1"}))
    assert failure_of(result) == ("mqtt", "protocol_error")


async def test_reset_on_accept_is_classified(lab: Lab) -> None:
    result = await probe(lab.broker("reset"))
    assert failure_of(result) in {("connect", "reset"), ("tls", "protocol_error")}


def _probe_in_empty_network_namespace(broker: BrokerConfig) -> dict[str, str]:
    """Run one probe in a fresh network namespace (only a down loopback): nothing leaves the machine."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare for a private network namespace")
    script = (
        "import asyncio, json, sys\n"
        "from mqtt_cert_exporter.config import BrokerConfig, Target\n"
        "from mqtt_cert_exporter.probe import Prober\n"
        "host, port = sys.argv[1], int(sys.argv[2])\n"
        "r = asyncio.run(Prober().probe(BrokerConfig(name='x', target=Target(host, port), timeout=2)))\n"
        "print(json.dumps({'stage': r.failure.stage.value, 'reason': r.failure.reason.value}))\n"
    )
    target = broker.target
    output = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", script, target.host, str(target.port)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    )
    return dict(json.loads(output.stdout))


def test_unresolvable_name_is_dns_error() -> None:
    outcome = _probe_in_empty_network_namespace(
        BrokerConfig(name="x", target=Target("mqtt.example.com", 8883))
    )
    assert outcome == {"stage": "resolve", "reason": "dns_error"}


def test_no_route_is_unreachable() -> None:
    outcome = _probe_in_empty_network_namespace(BrokerConfig(name="x", target=Target("127.0.0.1", 8883)))
    assert outcome == {"stage": "connect", "reason": "unreachable"}


def test_reasons_contract_matches_docs() -> None:
    doc = (ROOT / "docs" / "metrics.md").read_text()
    for stage, reasons in REASONS_BY_STAGE.items():
        for reason in reasons:
            assert f"`{reason.value}`" in doc, (stage, reason)
    for problem in Problem:
        assert f"`{problem.value}`" in doc
    assert {s.value for s in Stage} <= {s.value for s in REASONS_BY_STAGE}
    assert Reason.UNTRUSTED in REASONS_BY_STAGE[Stage.TRUST]


async def test_a_replaced_ca_file_is_read_again(lab: Lab, tmp_path: Path) -> None:
    """An operator fixes the CA file in place: the next probe uses it, no restart needed."""
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(lab.other_root.cert_path.read_bytes())
    broker = lab.broker("good", tls={"ca_file": str(ca_file)})
    prober = Prober()
    before = await prober.probe(broker)
    assert before.tls is not None and [p.value for p in before.tls.verdict.problems] == ["unknown_ca"]
    ca_file.write_bytes(lab.root.cert_path.read_bytes() + b"\n")  # new content (and size)
    after = await prober.probe(broker)
    assert after.success, after.failure


def test_brokers_differing_only_in_name_share_one_tls_context(lab: Lab) -> None:
    from mqtt_cert_exporter.probe.wire.tls import client_context

    a = lab.broker("good", tls={"server_name": "a.example.com"})
    b = lab.broker("good", tls={"server_name": "b.example.com"})
    assert client_context(a.tls, verify=True) is client_context(b.tls, verify=True)
