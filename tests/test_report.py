"""The report of one probe: every problem's cause and fix, every failure's hint, status and exit code,
the JSON document's keys, colour and secrets.

Real probes of the lab's brokers feed most tests (probed once per module, concurrently); hand-built
ProbeResults (tests/report_helpers.py) cover what a lab cannot produce on demand (a resolver failure,
exact expiry boundaries). What is around the chain (issue 7): tests/test_report_around_the_chain.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from mqtt_cert_exporter.check import probe_all
from mqtt_cert_exporter.config import BrokerConfig, ExpiryThreshold, MqttProtocol, MqttSettings, Target
from mqtt_cert_exporter.report import (
    FULL_CHAIN_FIX,
    RENEW_FIX,
    Assessment,
    Report,
    Status,
    assess,
    build_report,
    display_name,
    expiring_soon,
    failure_finding,
    worst,
)
from mqtt_cert_exporter.results import (
    REASONS_BY_STAGE,
    Failure,
    MqttFacts,
    Phase,
    Reason,
    Stage,
    TlsFacts,
    TrustVerdict,
)
from tests.conftest import PASSWORD, Lab
from tests.report_helpers import ANSI, hand_cert, hand_result, hand_tls

#: Scenarios that fail only after their whole timeout get a short one.
SHORT_TIMEOUT = {"black_hole": 0.5, "silent": 0.5, "tls_silent": 0.5}
SCENARIOS = [
    "good",
    "expiring",
    "expired",
    "not_yet_valid",
    "wrong_host",
    "expired_wrong_host",
    "self_signed",
    "unknown_ca",
    "missing_intermediate",
    "incomplete_chain",
    "weak_key",
    "weak_signature",
    "mtls",
    "password",
    "password_ok",
    "password_wrong",
    "plaintext",
    "garbage",
    "tls_garbage",
    "tls_close",
    "closed",
    *SHORT_TIMEOUT,
]


class Probed:
    """Real results of the lab's scenarios, and reports over them."""

    def __init__(self, lab: Lab) -> None:
        self.brokers = {
            name: lab.broker(name, timeout=SHORT_TIMEOUT[name]) if name in SHORT_TIMEOUT else lab.broker(name)
            for name in SCENARIOS
        }
        results = asyncio.run(probe_all(list(self.brokers.values())))
        self.results = dict(zip(self.brokers, results, strict=True))
        self.now = time.time()

    def report(self, scenario: str, warn_days: float = 30) -> Report:
        return build_report(self.results[scenario], self.brokers[scenario], warn_days=warn_days, now=self.now)


@pytest.fixture(scope="module")
def probed(lab: Lab) -> Iterator[Probed]:
    yield Probed(lab)


# --------------------------------------------------------------------------------------------------
# Trust problems: cause and fix, in the text and in the JSON document


@pytest.mark.parametrize(
    ("scenario", "problem", "fix_fragments"),
    [
        ("expired", "expired", [RENEW_FIX]),
        ("expired_wrong_host", "expired", [RENEW_FIX]),
        ("expired_wrong_host", "hostname_mismatch", ["other.example.com", "--server-name", "subjectAltName"]),
        ("wrong_host", "hostname_mismatch", ["other.example.com", "reissue the certificate with localhost"]),
        ("not_yet_valid", "not_yet_valid", ["NTP"]),
        ("self_signed", "self_signed", ["cafile", "--ca-file"]),
        ("unknown_ca", "unknown_ca", ["Other Root CA issued it", "cafile", "--ca-file"]),
        ("missing_intermediate", "unknown_ca", ["Lab Intermediate CA issued it", FULL_CHAIN_FIX]),
        ("incomplete_chain", "incomplete_chain", [FULL_CHAIN_FIX]),
        ("weak_key", "weak_key", ["RSA 2048"]),
        ("weak_signature", "weak_signature", ["SHA-256"]),
    ],
)
def test_every_problem_has_its_cause_and_fix(
    probed: Probed, scenario: str, problem: str, fix_fragments: list[str]
) -> None:
    report = probed.report(scenario)
    assert report.status is Status.CRITICAL and report.exit_code == 2
    text = report.text()
    assert f"- {problem}: " in text
    for fragment in fix_fragments:
        assert fragment in text
    [entry] = [p for p in report.document()["tls"]["problems"] if p["problem"] == problem]
    assert entry["detail"]
    for fragment in fix_fragments:
        assert fragment in entry["fix"]


def test_expired_says_when(probed: Probed) -> None:
    report = probed.report("expired")
    leaf = probed.results["expired"].tls.chain[0]  # type: ignore[union-attr]
    date = time.strftime("%Y-%m-%d", time.gmtime(leaf.not_after))
    assert f"expired on {date}" in report.text()
    assert "3.0 days ago" in report.text()  # the chain line: the date and the days


def test_untrusted_chain_still_says_the_broker_answers_mqtt(probed: Probed) -> None:
    text = probed.report("expired").text()
    assert "the broker is up, only the certificate needs fixing" in text


def test_chain_has_one_line_per_certificate(probed: Probed) -> None:
    text = probed.report("good").text()
    [leaf_line] = [line for line in text.splitlines() if re.match(r"\s+0\s+good\s", line)]
    assert "Lab Intermediate CA" in leaf_line  # issuer CN
    assert re.search(r"\d{4}-\d\d-\d\d \(in \d+\.\d days\)", leaf_line)
    assert "EC-P256" in leaf_line and "ecdsa-with-SHA256" in leaf_line
    assert re.search(r"^\s+1\s+Lab Intermediate CA\s+Lab Root CA\s", text, re.MULTILINE)
    # then the trust anchor from the CA file, which the broker does not send
    assert re.search(
        r"^\s+anchor  Lab Root CA\s+Lab Root CA\s+\d{4}-\d\d-\d\d \(in \d+\.\d days\)", text, re.MULTILINE
    )


def test_good_report_shows_address_ip_tls_and_timings(probed: Probed) -> None:
    report = probed.report("good")
    text = report.text()
    assert report.status is Status.OK and report.exit_code == 0
    assert f"{report.result.address}, probed 127.0.0.1" in text
    assert "TLSv1.3, TLS_" in text
    assert re.search(
        r"timings\s+resolve \d+\.\d ms, connect \d+\.\d ms, tls \d+\.\d ms, mqtt \d+\.\d ms", text
    )
    assert "CONNACK 0 (success)" in text
    assert "OK: trusted chain" in text


# --------------------------------------------------------------------------------------------------
# Failures of each stage: the hint


@pytest.mark.parametrize(
    ("scenario", "kind", "fragments"),
    [
        ("closed", "connect/refused", ["is the broker running", "listener"]),
        ("black_hole", "connect/timeout", ["firewall"]),
        ("plaintext", "tls/protocol_error", ["plaintext listener", "8883"]),
        ("garbage", "tls/protocol_error", ["8883"]),
        ("silent", "tls/timeout", ["8883"]),
        (
            "mtls",
            "tls/client_certificate_required",
            ["require_certificate true", "--cert-file", "tls.cert_file", "tls.key_file"],
        ),
        (
            "password_wrong",
            "mqtt/refused",
            ["CONNACK code 135 (not authorized)", "password_file", "--username"],
        ),
        ("password", "mqtt/refused", ["allow_anonymous false", "--password-file"]),
        ("tls_silent", "mqtt/timeout", ["MQTT listener"]),
        ("tls_garbage", "mqtt/protocol_error", ["--protocol auto"]),
        ("tls_close", "mqtt/closed", ["broker closed the connection"]),
    ],
)
def test_every_failure_has_a_hint(probed: Probed, scenario: str, kind: str, fragments: list[str]) -> None:
    report = probed.report(scenario)
    assert report.status is Status.CRITICAL and report.exit_code == 2
    text = report.text()
    assert f"- {kind}: " in text
    for fragment in fragments:
        assert fragment in text
    document = report.document()
    assert f"{document['failure']['stage']}/{document['failure']['reason']}" == kind
    assert document["failure"]["fix"]


def test_refused_connack_meaning_for_3_1_1(probed: Probed, lab: Lab) -> None:
    broker = lab.broker("password_wrong", mqtt={"protocol": "3.1.1"})
    [result] = asyncio.run(probe_all([broker]))
    text = build_report(result, broker, warn_days=30, now=time.time()).text()
    assert "CONNACK code 5 (not authorized)" in text


def test_every_documented_stage_and_reason_has_its_own_fix() -> None:
    broker = BrokerConfig("b", Target("broker.example.com", 8883))
    for stage, reasons in REASONS_BY_STAGE.items():
        for reason in reasons:
            finding = failure_finding(Failure(stage, reason, "detail"), hand_result(broker, None), broker)
            assert finding.kind == f"{stage.value}/{reason.value}"
            assert finding.fix and finding.fix != "see the broker's log", finding.kind
            assert "{" not in finding.fix, finding.fix  # every template placeholder was filled


def test_resolver_failure_hint() -> None:
    broker = BrokerConfig("nowhere", Target("nowhere.invalid", 8883))
    failure = Failure(Stage.RESOLVE, Reason.DNS_ERROR, "cannot resolve nowhere.invalid")
    report = build_report(hand_result(broker, failure), broker, warn_days=30, now=time.time())
    assert "getent hosts nowhere.invalid" in report.text()
    assert "probed not resolved" in report.text()
    assert report.document()["tls"] is None and report.document()["mqtt"] is None


@pytest.mark.parametrize(
    ("protocol", "code", "fragment"),
    [
        ("3.1.1", 1, "--protocol 5"),
        ("5", 0x84, "--protocol 3.1.1"),
        ("3.1.1", 2, "client_id"),
        ("5", 0x89, "overloaded"),
        ("5", 0x8A, "banned"),
        ("5", 0x9D, "another server"),
        ("3.1.1", 4, "--password-file"),
    ],
)
def test_refused_connack_hints(protocol: MqttProtocol, code: int, fragment: str) -> None:
    broker = BrokerConfig("b", Target("localhost", 8883), mqtt=MqttSettings(protocol=protocol, username="u"))
    failure = Failure(Stage.MQTT, Reason.REFUSED, f"CONNACK refused the connection: {code}")
    result = replace(
        hand_result(broker, failure, tls=hand_tls([hand_cert()])), mqtt=MqttFacts(protocol, code)
    )
    report = build_report(result, broker, warn_days=30, now=time.time())
    assert fragment in report.text()
    assert report.document()["mqtt"]["connack_code"] == code
    assert report.document()["mqtt"]["accepted"] is False


# --------------------------------------------------------------------------------------------------
# Warning threshold and status


def test_expiring_warns_within_threshold_only(probed: Probed) -> None:
    report = probed.report("expiring", warn_days=30)
    assert report.status is Status.WARNING and report.exit_code == 1
    text = report.text()
    assert "WARNING: certificate 0 (expiring) expires in" in text
    assert "- expires_soon: " in text and RENEW_FIX in text
    [warning] = report.document()["warnings"]
    assert warning["warning"] == "expires_soon" and warning["position"] == 0
    assert probed.report("expiring", warn_days=5).status is Status.OK


def test_warning_threshold_is_inclusive_and_skips_expired() -> None:
    now = 1_700_000_000.0
    day = 86400.0
    chain = [
        hand_cert(not_after=now + 30 * day),  # exactly at the threshold: warns
        hand_cert(not_after=now + 30 * day + 1),  # just beyond: does not
        hand_cert(not_after=now - 1),  # expired: a trust problem, not a warning
    ]
    assert [item.position for item in expiring_soon(chain, now, 30)] == [0]
    broker = BrokerConfig("b", Target("localhost", 8883))
    result = hand_result(broker, None, tls=hand_tls(chain[:2]), mqtt=MqttFacts("5", 0))
    assert build_report(result, broker, warn_days=30, now=now).status is Status.WARNING
    assert build_report(result, broker, warn_days=29.9, now=now).status is Status.OK


def test_without_warn_days_the_brokers_expiry_warning_is_the_threshold() -> None:
    """check, demo and the status page warn where the alert rules do: at the broker's expiry_warning."""
    now = 1_700_000_000.0
    day = 86400.0
    seven_day_leaf = hand_cert(not_before=now - 4 * day, not_after=now + 3 * day)
    default = BrokerConfig("b", Target("localhost", 8883))
    result = hand_result(default, None, tls=hand_tls([seven_day_leaf]), mqtt=MqttFacts("5", 0))
    assert build_report(result, default, now=now).warn_days == 28  # expiry_warning's default
    # 3 days left is inside expiry_critical (14 days by default): critical, where the alerts page
    assert build_report(result, default, now=now).status is Status.CRITICAL
    lenient = replace(default, expiry_critical=ExpiryThreshold(seconds=day))
    assert build_report(result, lenient, now=now).status is Status.WARNING
    # a 7-day fleet warns at 33% of the lifetime (2.3 days): 3 days left is still fine
    short = replace(default, expiry_warning=ExpiryThreshold(share=0.33))
    report = build_report(result, short, now=now)
    assert report.warn_days == pytest.approx(0.33 * 7) and report.status is Status.OK
    assert build_report(
        result, replace(short, expiry_warning=ExpiryThreshold(seconds=5 * day)), now=now
    ).status is (Status.CRITICAL)


def test_failure_outranks_warning(probed: Probed) -> None:
    broker = probed.brokers["expiring"]
    result = replace(probed.results["expiring"], failure=Failure(Stage.MQTT, Reason.TIMEOUT, "no CONNACK"))
    assert build_report(result, broker, warn_days=30, now=probed.now).status is Status.CRITICAL


@pytest.mark.parametrize("scenario", ["good", "expiring", "expired", "password"])
def test_assess_is_the_verdict_check_prints(probed: Probed, scenario: str) -> None:
    """What a status page reuses: the same verdict, findings and fixes as `check`, without rendering."""
    broker, result = probed.brokers[scenario], probed.results[scenario]
    assessment = assess(result, broker, warn_days=30, now=probed.now)
    report = probed.report(scenario)
    assert isinstance(assessment, Assessment) and not isinstance(assessment, Report)
    assert (assessment.status, assessment.failure, assessment.problems, assessment.warnings) == (
        report.status,
        report.failure,
        report.problems,
        report.warnings,
    )
    assert f"{report.status.name}: {assessment.headline}" in ANSI.sub("", report.text())


def test_worst_status() -> None:
    assert worst([Status.OK, Status.CRITICAL, Status.WARNING]) is Status.CRITICAL
    assert worst([Status.OK, Status.WARNING]) is Status.WARNING
    assert worst([]) is Status.OK
    assert [int(status) for status in Status] == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------------
# JSON document


DOCUMENT_KEYS = {
    "schema_version",
    "broker",
    "address",
    "ip",
    "server_name",
    "checked_at",
    "warn_days",
    "status",
    "exit_code",
    "success",
    "failure",
    "unverified_failure",
    "tls",
    "mqtt",
    "warnings",
    "durations_seconds",
    # issue 7: added keys, schema_version stays 1
    "served_file",
    "client_certificate",
    "revocation",
    "legacy_tls",
    "lints",
    # issue 13: what /metrics has besides
    "transport",
    "address_label",
    "expiry_thresholds",
    "websocket",
    "roundtrip",
}
TLS_KEYS = {
    "version",
    "cipher",
    "alpn_protocol",
    "trusted",
    "verify_code",
    "verify_message",
    "problems",
    "anchor",
    "chain",
}
CERT_KEYS = {
    "position",
    "subject",
    "issuer",
    "serial",
    "fingerprint_sha256",
    "not_before",
    "not_after",
    "days_left",
    "dns_names",
    "ip_addresses",
    "key",
    "signature_algorithm",
    "parse_error",
}
MQTT_KEYS = {"protocol", "connack_code", "accepted", "meaning", "unverified_connection", "requested_protocol"}
ANCHOR_KEYS = {"subject", "fingerprint_sha256", "not_after", "days_left"}
ISO8601 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.mark.parametrize("scenario", ["good", "expired", "closed", "password_wrong"])
def test_json_document_keys(probed: Probed, scenario: str) -> None:
    document = json.loads(json.dumps(probed.report(scenario).document()))
    assert set(document) == DOCUMENT_KEYS
    assert document["schema_version"] == 1
    assert document["status"] in ("ok", "warning", "critical")
    assert ISO8601.fullmatch(document["checked_at"])
    assert set(document["durations_seconds"]) <= {phase.value for phase in Phase}
    assert "total" in document["durations_seconds"]
    if document["tls"] is not None:
        assert set(document["tls"]) == TLS_KEYS
        if document["tls"]["anchor"] is not None:
            assert set(document["tls"]["anchor"]) == ANCHOR_KEYS
        for position, cert in enumerate(document["tls"]["chain"]):
            assert set(cert) == CERT_KEYS
            assert cert["position"] == position
            assert ISO8601.fullmatch(cert["not_after"]) and ISO8601.fullmatch(cert["not_before"])
    if document["mqtt"] is not None:
        assert set(document["mqtt"]) == MQTT_KEYS
    if document["failure"] is not None:
        assert set(document["failure"]) == {"stage", "reason", "detail", "fix"}
    if document["revocation"] is not None:
        assert set(document["revocation"]) == {"fetch_success", "checks"}
    if document["legacy_tls"] is not None:
        assert set(document["legacy_tls"]) == {"accepted", "version", "checked_at", "detail"}
    assert isinstance(document["lints"], list)


def test_json_facts_match_the_result(probed: Probed) -> None:
    result = probed.results["expired"]
    document = probed.report("expired").document()
    assert result.tls is not None and result.mqtt is not None
    assert document["success"] is False and document["exit_code"] == 2 and document["status"] == "critical"
    assert document["failure"]["stage"] == "trust" and document["failure"]["reason"] == "untrusted"
    assert [p["problem"] for p in document["tls"]["problems"]] == ["expired"]
    assert document["tls"]["trusted"] is False
    leaf = document["tls"]["chain"][0]
    assert leaf["fingerprint_sha256"] == result.tls.chain[0].fingerprint_sha256
    assert leaf["serial"] == result.tls.chain[0].serial
    assert leaf["days_left"] < 0
    assert leaf["dns_names"] == ["localhost"] and leaf["ip_addresses"] == ["127.0.0.1", "::1"]
    assert document["mqtt"] == {
        "protocol": "5",
        "connack_code": 0,
        "accepted": True,
        "meaning": "success",
        "unverified_connection": True,
        "requested_protocol": "5",
    }


def test_trusted_is_null_without_a_certificate() -> None:
    broker = BrokerConfig("b", Target("localhost", 8883))
    tls = TlsFacts("", "", (), TrustVerdict(trusted=False))
    failure = Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, "alert")
    document = build_report(hand_result(broker, failure, tls=tls), broker, warn_days=30, now=0).document()
    assert document["tls"]["trusted"] is None and document["tls"]["chain"] == []


# --------------------------------------------------------------------------------------------------
# Colour and secrets


def test_no_colour_unless_asked(probed: Probed) -> None:
    for scenario in ("good", "expiring", "expired", "closed"):
        report = probed.report(scenario)
        assert not ANSI.search(report.text())
        assert not ANSI.search(json.dumps(report.document()))
        coloured = report.text(colour=True)
        assert ANSI.search(coloured)
        assert ANSI.sub("", coloured) == report.text()


def test_password_never_in_the_report(probed: Probed) -> None:
    for scenario in ("password_ok", "password_wrong"):
        report = probed.report(scenario)
        assert PASSWORD not in report.text(colour=True)
        assert PASSWORD not in json.dumps(report.document())


def test_display_name() -> None:
    assert display_name("O=mqtt-cert-exporter lab,CN=Lab Root CA") == "Lab Root CA"
    assert display_name(r"CN=Acme\, Inc. CA,O=Acme") == "Acme, Inc. CA"
    assert display_name("O=No CN") == "O=No CN"
