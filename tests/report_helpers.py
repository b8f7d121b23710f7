"""What the report tests share (tests/test_report.py, tests/test_report_around_the_chain.py): results
built by hand, for what a lab cannot produce on demand (a resolver failure, exact expiry boundaries),
and the pattern of the colours a report may add."""

from __future__ import annotations

import re

from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.results import (
    CertFacts,
    Failure,
    MqttFacts,
    Phase,
    ProbeResult,
    Stage,
    TlsFacts,
    TrustVerdict,
)
from tests.conftest import cert_facts

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def hand_cert(
    *,
    not_after: float = 2_000_000_000.0,
    common_name: str = "leaf",
    not_before: float = 1_600_000_000.0,
    fingerprint: str = "ab" * 32,
    issuer: str = "CN=Some CA",
) -> CertFacts:
    return cert_facts(
        fingerprint_sha256=fingerprint,
        subject=f"CN={common_name}",
        issuer=issuer,
        serial="1f",
        not_before=not_before,
        not_after=not_after,
        common_name=common_name,
    )


def hand_tls(chain: list[CertFacts]) -> TlsFacts:
    return TlsFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", tuple(chain), TrustVerdict(trusted=True))


def hand_result(
    broker: BrokerConfig,
    failure: Failure | None,
    *,
    tls: TlsFacts | None = None,
    mqtt: MqttFacts | None = None,
) -> ProbeResult:
    return ProbeResult(
        broker=broker.name,
        address=broker.address,
        ip="" if failure is not None and failure.stage is Stage.RESOLVE else "127.0.0.1",
        started=1_700_000_000.0,
        finished=1_700_000_000.1,
        durations=((Phase.RESOLVE, 0.001), (Phase.TOTAL, 0.002)),
        failure=failure,
        tls=tls,
        mqtt=mqtt,
    )
