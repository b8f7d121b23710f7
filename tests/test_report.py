"""The report of one probe: every problem's cause and fix, status and exit code, JSON keys, colour.

Real probes of the lab's brokers feed most tests (probed once per module, concurrently); hand-built
ProbeResults cover what a lab cannot produce on demand (a resolver failure, exact expiry boundaries).
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
    ANCHOR_FIX,
    CLIENT_CERT_FIX,
    FULL_CHAIN_FIX,
    RELOAD_FIX,
    RENEW_FIX,
    REVOKED_FIX,
    WRONG_FILE_FIX,
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
    CertFacts,
    Failure,
    LegacyTlsFacts,
    Lint,
    LintFinding,
    MqttFacts,
    Phase,
    ProbeResult,
    Problem,
    Reason,
    RevocationCheck,
    RevocationFacts,
    RevocationStatus,
    ServedFileFacts,
    Stage,
    TlsFacts,
    TrustVerdict,
)
from tests.conftest import PASSWORD, Lab, cert_facts

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
ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
            finding = failure_finding(Failure(stage, reason, "detail"), _result(broker, None), broker)
            assert finding.kind == f"{stage.value}/{reason.value}"
            assert finding.fix and finding.fix != "see the broker's log", finding.kind
            assert "{" not in finding.fix, finding.fix  # every template placeholder was filled


def test_resolver_failure_hint() -> None:
    broker = BrokerConfig("nowhere", Target("nowhere.invalid", 8883))
    failure = Failure(Stage.RESOLVE, Reason.DNS_ERROR, "cannot resolve nowhere.invalid")
    report = build_report(_result(broker, failure), broker, warn_days=30, now=time.time())
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
    result = replace(_result(broker, failure, tls=_tls([_cert()])), mqtt=MqttFacts(protocol, code))
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
        _cert(not_after=now + 30 * day),  # exactly at the threshold: warns
        _cert(not_after=now + 30 * day + 1),  # just beyond: does not
        _cert(not_after=now - 1),  # expired: a trust problem, not a warning
    ]
    assert [item.position for item in expiring_soon(chain, now, 30)] == [0]
    broker = BrokerConfig("b", Target("localhost", 8883))
    result = _result(broker, None, tls=_tls(chain[:2]), mqtt=MqttFacts("5", 0))
    assert build_report(result, broker, warn_days=30, now=now).status is Status.WARNING
    assert build_report(result, broker, warn_days=29.9, now=now).status is Status.OK


def test_without_warn_days_the_brokers_expiry_warning_is_the_threshold() -> None:
    """check, demo and the status page warn where the alert rules do: at the broker's expiry_warning."""
    now = 1_700_000_000.0
    day = 86400.0
    seven_day_leaf = _cert(not_before=now - 4 * day, not_after=now + 3 * day)
    default = BrokerConfig("b", Target("localhost", 8883))
    result = _result(default, None, tls=_tls([seven_day_leaf]), mqtt=MqttFacts("5", 0))
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
OTHER_CERT_KEYS = {
    "subject",
    "issuer",
    "serial",
    "fingerprint_sha256",
    "not_before",
    "not_after",
    "days_left",
    "parse_error",
}
SERVED_FILE_KEYS = {
    "path",
    "resolved_path",
    "read_success",
    "error",
    "modified",
    "matches",
    "served_fingerprint_sha256",
    "certificate",
}
REVOCATION_CHECK_KEYS = {
    "position",
    "status",
    "url",
    "detail",
    "revoked_at",
    "reason",
    "crl_next_update",
    "fix",
}
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
    document = build_report(_result(broker, failure, tls=tls), broker, warn_days=30, now=0).document()
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


# --------------------------------------------------------------------------------------------------
# Hand-built results


def _cert(
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


def _tls(chain: list[CertFacts]) -> TlsFacts:
    return TlsFacts("TLSv1.3", "TLS_AES_128_GCM_SHA256", tuple(chain), TrustVerdict(trusted=True))


def _result(
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


# --------------------------------------------------------------------------------------------------
# Around the chain (issue 7): hand-built results, so every boundary is exact


DAY = 86400.0
NOW = 1_700_000_000.0
SERVED_FILE = "/etc/mosquitto/certs/broker.crt"
LAB_BROKER = BrokerConfig("b", Target("localhost", 8883), broker_kind="mosquitto")


def _day(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp))


def _healthy(**changes: object) -> ProbeResult:
    """A successful probe of a trusted chain (leaf valid 90 more days), then ``changes``."""
    leaf = _cert(not_before=NOW - 60 * DAY, not_after=NOW + 90 * DAY, fingerprint="01" * 32)
    result = _result(LAB_BROKER, None, tls=_tls([leaf]), mqtt=MqttFacts("5", 0))
    return replace(result, **changes)  # type: ignore[arg-type]


def _report(result: ProbeResult, broker: BrokerConfig = LAB_BROKER, warn_days: float = 30) -> Report:
    return build_report(result, broker, warn_days=warn_days, now=NOW)


def _stale(*, renewed: float = NOW - 2 * DAY, served_leaf: CertFacts | None = None) -> ProbeResult:
    """The file at SERVED_FILE was renewed on ``renewed``; the broker still serves its old leaf."""
    result = _healthy()
    assert result.tls is not None
    tls = result.tls if served_leaf is None else replace(result.tls, chain=(served_leaf,))
    result = replace(result, tls=tls)
    served = tls.chain[0]
    new = _cert(not_before=renewed, not_after=renewed + 90 * DAY, fingerprint="02" * 32)
    return replace(
        result,
        served_file=ServedFileFacts(
            path=SERVED_FILE,
            resolved_path=SERVED_FILE,
            leaf=new,
            modified=renewed,
            matches=False,
            served_fingerprint=served.fingerprint_sha256,
        ),
    )


def test_outdated_served_certificate_is_a_warning_with_the_reload_fix() -> None:
    result = _stale()
    assert result.tls is not None and result.served_file is not None and result.served_file.leaf
    report = _report(result)
    assert report.status is Status.WARNING and report.exit_code == 1
    new, old = result.served_file.leaf, result.tls.chain[0]
    sentence = (
        f"the broker serves an outdated certificate: the file {SERVED_FILE} was renewed on "
        f"{_day(new.not_before)} (expires {_day(new.not_after)}) but the broker still serves the old one "
        f"(expires {_day(old.not_after)})"
    )
    text = report.text()
    assert f"- served_cert_mismatch: {sentence}" in text
    assert f"fix: {RELOAD_FIX}" in text
    assert "Mosquitto: SIGHUP; WebSocket listeners need a restart" in RELOAD_FIX
    assert "WARNING: the broker serves an outdated certificate" in text
    assert re.search(rf"file\s+{SERVED_FILE}: NOT the certificate served; the file's: issued", text)

    document = json.loads(json.dumps(report.document()))
    assert document["status"] == "warning" and document["exit_code"] == 1 and document["success"] is True
    assert document["warnings"] == [
        {"warning": "served_cert_mismatch", "position": None, "detail": sentence, "fix": RELOAD_FIX}
    ]
    served = document["served_file"]
    assert set(served) == SERVED_FILE_KEYS and set(served["certificate"]) == OTHER_CERT_KEYS
    assert served["matches"] is False and served["read_success"] is True and served["error"] is None
    assert served["served_fingerprint_sha256"] == "01" * 32
    assert served["certificate"]["fingerprint_sha256"] == "02" * 32
    assert served["certificate"]["not_before"] == iso(new.not_before)
    assert served["modified"] == iso(new.not_before)


def iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def test_certbot_symlink_is_named_with_where_it_leads() -> None:
    result = _stale()
    assert result.served_file is not None
    live, archive = "/etc/letsencrypt/live/example/cert.pem", "/etc/letsencrypt/archive/example/cert3.pem"
    result = replace(result, served_file=replace(result.served_file, path=live, resolved_path=archive))
    assert f"the file {live} (-> {archive}) was renewed on" in _report(result).text()


def test_outdated_and_expired_is_critical_and_says_reload_not_renew() -> None:
    expired_leaf = _cert(not_before=NOW - 95 * DAY, not_after=NOW - 5 * DAY, fingerprint="01" * 32)
    result = _stale(served_leaf=expired_leaf)
    assert result.tls is not None
    result = replace(
        result,
        failure=Failure(Stage.TRUST, Reason.UNTRUSTED, "certificate has expired"),
        tls=replace(result.tls, verdict=TrustVerdict(False, (Problem.EXPIRED,), details=("expired",))),
    )
    report = _report(result)
    assert report.status is Status.CRITICAL and report.exit_code == 2
    [(problem, finding)] = report.problems
    assert problem is Problem.EXPIRED
    assert finding.fix.startswith(f"the file {SERVED_FILE} already holds a renewed certificate")
    assert finding.fix.endswith(RELOAD_FIX) and RENEW_FIX not in finding.fix
    assert "but the broker still serves the old one" in report.text()


def test_expiring_served_leaf_with_a_renewed_file_says_reload() -> None:
    soon = _cert(not_before=NOW - 70 * DAY, not_after=NOW + 20 * DAY, fingerprint="01" * 32)
    report = _report(_stale(served_leaf=soon))
    assert report.status is Status.WARNING
    [(_, expiring)] = report.warnings
    assert expiring.fix.endswith(RELOAD_FIX)
    kinds = [w["warning"] for w in report.document()["warnings"]]
    assert sorted(kinds) == ["expires_soon", "served_cert_mismatch"]


def test_a_file_older_than_the_served_certificate_is_probably_the_wrong_file() -> None:
    report = _report(_stale(renewed=NOW - 400 * DAY))
    assert report.status is Status.WARNING
    text = report.text()
    assert f"the broker serves another certificate than the file {SERVED_FILE}" in text
    assert WRONG_FILE_FIX in text and RELOAD_FIX not in text


def test_served_file_that_matches_or_cannot_be_read_is_no_warning() -> None:
    healthy = _healthy()
    assert healthy.tls is not None
    leaf = healthy.tls.chain[0]
    matching = ServedFileFacts(SERVED_FILE, SERVED_FILE, leaf, NOW, True, leaf.fingerprint_sha256)
    report = _report(_healthy(served_file=matching))
    assert report.status is Status.OK
    assert re.search(rf"file\s+{SERVED_FILE}: served; issued", report.text())
    assert report.document()["served_file"]["matches"] is True

    error = f"{SERVED_FILE}: permission denied for the exporter (uid 65534)"
    unreadable = ServedFileFacts(SERVED_FILE, SERVED_FILE, served_fingerprint="01" * 32, error=error)
    report = _report(_healthy(served_file=unreadable))
    assert report.status is Status.OK and report.exit_code == 0
    assert f"note: {error}; not compared with the served certificate" in report.text()
    document = report.document()["served_file"]
    assert document["read_success"] is False and document["error"] == error
    assert document["matches"] is None and document["certificate"] is None and document["modified"] is None


@pytest.mark.parametrize(
    ("left_days", "status"),
    [(90.0, Status.OK), (30.0, Status.WARNING), (2.0, Status.WARNING), (-1.0, Status.WARNING)],
)
def test_own_client_certificate_expiry(left_days: float, status: Status) -> None:
    broker = replace(LAB_BROKER, tls=replace(LAB_BROKER.tls, cert_file="/etc/exporter/client.pem"))
    client = _cert(common_name="exporter-client", not_after=NOW + left_days * DAY, fingerprint="0c" * 32)
    report = _report(_healthy(client_cert=client), broker)
    assert report.status is status
    text = report.text()
    verb = "expired" if left_days < 0 else "expires"
    assert f"our client certificate exporter-client (/etc/exporter/client.pem) {verb} " in text
    document = report.document()
    assert document["client_certificate"]["path"] == "/etc/exporter/client.pem"
    assert set(document["client_certificate"]) == OTHER_CERT_KEYS | {"path"}
    assert document["client_certificate"]["days_left"] == left_days
    if status is Status.WARNING:
        assert "- client_cert_expires_soon: the exporter's own client certificate exporter-client" in text
        assert "the monitor goes blind" in text and CLIENT_CERT_FIX in text
        assert [w["warning"] for w in document["warnings"]] == ["client_cert_expires_soon"]
        when = (
            "expired 1.0 days ago" if left_days < 0 else f"expires in {left_days:.1f} days, within the 30-day"
        )
        assert f"WARNING: the exporter's own client certificate {when}" in text
    else:
        assert document["warnings"] == []


def test_without_a_client_certificate_there_is_no_line() -> None:
    report = _report(_healthy())
    assert "client certificate" not in report.text()
    assert report.document()["client_certificate"] is None


@pytest.mark.parametrize(("left_days", "status"), [(365.0, Status.OK), (20.0, Status.WARNING)])
def test_trust_anchor_in_the_chain_table_and_its_expiry(left_days: float, status: Status) -> None:
    anchor = _cert(common_name="Old Root", issuer="CN=Old Root", not_after=NOW + left_days * DAY)
    healthy = _healthy()
    assert healthy.tls is not None
    tls = replace(healthy.tls, verdict=TrustVerdict(trusted=True, anchor=anchor))
    report = _report(replace(healthy, tls=tls))
    assert report.status is status
    text = report.text()
    assert re.search(
        rf"^\s+anchor  Old Root\s+Old Root\s+{_day(anchor.not_after)} \(in {left_days:.1f} days\)", text, re.M
    )
    assert "anchored at Old Root" in text
    document = report.document()
    assert document["tls"]["anchor"] == {
        "subject": "CN=Old Root",
        "fingerprint_sha256": anchor.fingerprint_sha256,
        "not_after": iso(anchor.not_after),
        "days_left": left_days,
    }
    if status is Status.WARNING:
        assert "- anchor_expires_soon: the trust anchor Old Root (from the system trust store)" in text
        assert ANCHOR_FIX in text
        assert "WARNING: the trust anchor Old Root expires in 20.0 days" in text
        assert [w["warning"] for w in document["warnings"]] == ["anchor_expires_soon"]


def _revocation(*statuses: RevocationStatus) -> RevocationFacts:
    checks = []
    for position, status in enumerate(statuses):
        url = f"http://crl.example/{position}.crl"
        if status is RevocationStatus.REVOKED:
            checks.append(
                RevocationCheck(
                    position,
                    status,
                    url,
                    f"revoked according to {url}",
                    NOW - DAY,
                    "keyCompromise",
                    NOW + DAY,
                )
            )
        elif status is RevocationStatus.UNKNOWN:
            checks.append(RevocationCheck(position, status, url, f"no CRL: {url}: HTTP 404"))
        else:
            checks.append(RevocationCheck(position, status, url, f"not revoked according to {url}"))
    fetch_success = all(status is not RevocationStatus.UNKNOWN for status in statuses)
    return RevocationFacts(tuple(checks), fetch_success)


def test_revoked_certificate_is_critical_though_the_probe_succeeds() -> None:
    healthy = _healthy()
    assert healthy.tls is not None
    chain = (healthy.tls.chain[0], _cert(common_name="Some CA", fingerprint="0a" * 32))
    result = replace(
        healthy,
        tls=replace(healthy.tls, chain=chain),
        revocation=_revocation(RevocationStatus.REVOKED, RevocationStatus.GOOD),
    )
    report = _report(result)
    assert report.status is Status.CRITICAL and report.exit_code == 2
    text = report.text()
    assert (
        f"- revoked: certificate 0 (leaf) was revoked on {_day(NOW - DAY)}" in text
        and "(keyCompromise) according to the CRL at http://crl.example/0.crl" in text
    )
    assert f"fix: {REVOKED_FIX}" in text
    assert REVOKED_FIX == "the CA revoked this certificate: issue a new one and deploy it"
    assert "CRITICAL: certificate 0 (leaf) was revoked by its CA" in text
    assert re.search(r"CRL\s+certificate 0 \(leaf\): REVOKED", text)
    assert "certificate 1 (Some CA): not revoked" in text
    document = report.document()
    assert document["success"] is True and document["status"] == "critical" and document["failure"] is None
    revocation = document["revocation"]
    assert revocation["fetch_success"] is True
    for check in revocation["checks"]:
        assert set(check) == REVOCATION_CHECK_KEYS
    revoked, good = revocation["checks"]
    assert (revoked["status"], revoked["reason"], revoked["fix"]) == ("revoked", "keyCompromise", REVOKED_FIX)
    assert revoked["revoked_at"] == iso(NOW - DAY) and revoked["crl_next_update"] == iso(NOW + DAY)
    assert (good["status"], good["fix"], good["revoked_at"]) == ("good", None, None)


def test_unknown_revocation_status_is_only_a_note() -> None:
    report = _report(_healthy(revocation=_revocation(RevocationStatus.UNKNOWN)))
    assert report.status is Status.OK and report.exit_code == 0
    text = report.text()
    assert "certificate 0 (leaf): unknown (note: revocation could not be checked)" in text
    assert "HTTP 404" in text
    assert report.document()["revocation"]["fetch_success"] is False
    nothing = _report(_healthy(revocation=RevocationFacts()))
    assert "CRL      not checked (no CRL distribution point in the chain)" in nothing.text()
    assert nothing.document()["revocation"] == {"fetch_success": None, "checks": []}


ALL_LINTS = tuple(LintFinding(lint, f"{lint.value} in plain words", (0,)) for lint in Lint)


@pytest.mark.parametrize("base", ["healthy", "expiring"])
def test_lints_are_listed_but_never_change_the_exit_code(base: str) -> None:
    result = _healthy(lints=ALL_LINTS)
    if base == "expiring":
        assert result.tls is not None
        soon = _cert(not_after=NOW + 20 * DAY)
        result = replace(result, tls=replace(result.tls, chain=(soon,)))
    without = _report(replace(result, lints=()))
    report = _report(result)
    assert report.status is without.status and report.exit_code == without.exit_code
    assert report.exit_code == (0 if base == "healthy" else 1)
    text = report.text()
    assert "lints    warnings that do not change the status or the exit code:" in text
    for lint in Lint:
        assert f"- {lint.value}: {lint.value} in plain words" in text
    assert report.document()["lints"] == [
        {"lint": lint.value, "detail": f"{lint.value} in plain words", "positions": [0]} for lint in Lint
    ]
    assert report.document()["warnings"] == without.document()["warnings"]
    assert "lints" not in without.text()


@pytest.mark.parametrize(
    ("legacy", "line"),
    [
        (LegacyTlsFacts(True, "TLSv1.1", NOW), "still accepts TLSv1.1, deprecated by RFC 8996"),
        (LegacyTlsFacts(False, "", NOW), "TLS 1.0/1.1 refused"),
        (LegacyTlsFacts(None, "", NOW, "timed out"), "note: could not tell whether TLS 1.0/1.1 is accepted"),
    ],
)
def test_legacy_tls_line(legacy: LegacyTlsFacts, line: str) -> None:
    report = _report(_healthy(legacy_tls=legacy))
    assert report.status is Status.OK
    assert re.search(rf"^  legacy\s+{re.escape(line)}", report.text(), re.M)
    assert report.document()["legacy_tls"] == {
        "accepted": legacy.accepted,
        "version": legacy.version,
        "checked_at": iso(NOW),
        "detail": legacy.detail,
    }


def test_everything_at_once_is_coloured_and_strips_to_the_plain_text() -> None:
    broker = replace(LAB_BROKER, tls=replace(LAB_BROKER.tls, cert_file="/etc/exporter/client.pem"))
    result = replace(
        _stale(),
        client_cert=_cert(common_name="exporter-client", not_after=NOW + 3 * DAY),
        revocation=_revocation(RevocationStatus.REVOKED),
        legacy_tls=LegacyTlsFacts(True, "TLSv1", NOW),
        lints=ALL_LINTS,
    )
    report = _report(result, broker)
    assert report.status is Status.CRITICAL  # revoked outranks every warning
    coloured = report.text(colour=True)
    assert ANSI.search(coloured) and ANSI.sub("", coloured) == report.text()
    json.dumps(report.document())
