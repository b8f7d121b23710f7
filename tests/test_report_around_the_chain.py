"""The report around the chain (issue 7): the served certificate against the file it was read from, the
exporter's own client certificate, the trust anchor, revocation, lints and legacy TLS: their lines,
warnings and fixes, status and exit code, and their keys in the JSON document.

No server: hand-built ProbeResults (tests/report_helpers.py), so every boundary is exact. The same
facts from real brokers: tests/test_lifecycle.py.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace

import pytest

from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.report import (
    ANCHOR_FIX,
    CLIENT_CERT_FIX,
    RELOAD_FIX,
    RENEW_FIX,
    REVOKED_FIX,
    WRONG_FILE_FIX,
    Report,
    Status,
    build_report,
)
from mqtt_cert_exporter.results import (
    CertFacts,
    Failure,
    LegacyTlsFacts,
    Lint,
    LintFinding,
    MqttFacts,
    ProbeResult,
    Problem,
    Reason,
    RevocationCheck,
    RevocationFacts,
    RevocationStatus,
    ServedFileFacts,
    Stage,
    TrustVerdict,
)
from tests.report_helpers import ANSI, hand_cert, hand_result, hand_tls

#: Keys of the JSON document's objects around the chain (its top-level keys: tests/test_report.py).
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
    leaf = hand_cert(not_before=NOW - 60 * DAY, not_after=NOW + 90 * DAY, fingerprint="01" * 32)
    result = hand_result(LAB_BROKER, None, tls=hand_tls([leaf]), mqtt=MqttFacts("5", 0))
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
    new = hand_cert(not_before=renewed, not_after=renewed + 90 * DAY, fingerprint="02" * 32)
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
    expired_leaf = hand_cert(not_before=NOW - 95 * DAY, not_after=NOW - 5 * DAY, fingerprint="01" * 32)
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
    soon = hand_cert(not_before=NOW - 70 * DAY, not_after=NOW + 20 * DAY, fingerprint="01" * 32)
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
    client = hand_cert(common_name="exporter-client", not_after=NOW + left_days * DAY, fingerprint="0c" * 32)
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
    anchor = hand_cert(common_name="Old Root", issuer="CN=Old Root", not_after=NOW + left_days * DAY)
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
    chain = (healthy.tls.chain[0], hand_cert(common_name="Some CA", fingerprint="0a" * 32))
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
        soon = hand_cert(not_after=NOW + 20 * DAY)
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
        client_cert=hand_cert(common_name="exporter-client", not_after=NOW + 3 * DAY),
        revocation=_revocation(RevocationStatus.REVOKED),
        legacy_tls=LegacyTlsFacts(True, "TLSv1", NOW),
        lints=ALL_LINTS,
    )
    report = _report(result, broker)
    assert report.status is Status.CRITICAL  # revoked outranks every warning
    coloured = report.text(colour=True)
    assert ANSI.search(coloured) and ANSI.sub("", coloured) == report.text()
    json.dumps(report.document())
