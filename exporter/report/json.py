"""The JSON document of one broker, as `check --output json` prints it. Pure.

The document is a public interface: docs/check.md describes it and docs/check-schema.json holds it to its
keys (a test validates the output of real probes against that schema). Keys are stable; new keys may be
added, and ``schema_version`` stays 1 as long as keys are only added.
"""

from __future__ import annotations

from typing import Any

from mqtt_cert_exporter.connack import connack_meaning
from mqtt_cert_exporter.report.assessment import Assessment, days_left
from mqtt_cert_exporter.report.brokerfixes import tailor
from mqtt_cert_exporter.report.fixes import REVOKED_FIX, Finding, failure_finding
from mqtt_cert_exporter.report.wording import iso8601
from mqtt_cert_exporter.results import CertFacts, Failure, LegacyTlsFacts, RevocationStatus, ServedFileFacts

SCHEMA_VERSION = 1


def _finding_document(failure: Failure, finding: Finding) -> dict[str, Any]:
    return {
        "stage": failure.stage.value,
        "reason": failure.reason.value,
        "detail": failure.detail,
        "fix": finding.fix,
    }


def _cert_document(position: int, cert: CertFacts, now: float) -> dict[str, Any]:
    """A certificate of the chain: the facts of any certificate plus what only the chain table shows."""
    document: dict[str, Any] = {"position": position, **_other_cert_document(cert, now)}
    parse_error = document.pop("parse_error")  # stays the last key
    document.update(
        dns_names=list(cert.dns_names),
        ip_addresses=list(cert.ip_addresses),
        key=cert.key,
        signature_algorithm=cert.signature_algorithm,
        parse_error=parse_error,
    )
    return document


def _optional_iso8601(timestamp: float | None) -> str | None:
    return iso8601(timestamp) if timestamp else None


def _anchor_document(anchor: CertFacts, now: float) -> dict[str, Any]:
    parsed = not anchor.parse_error
    return {
        "subject": anchor.subject,
        "fingerprint_sha256": anchor.fingerprint_sha256,
        "not_after": iso8601(anchor.not_after) if parsed else None,
        "days_left": round(days_left(anchor, now), 3) if parsed else None,
    }


def _other_cert_document(cert: CertFacts, now: float) -> dict[str, Any]:
    """A certificate outside the chain: the served file's, the exporter's own client certificate."""
    parsed = not cert.parse_error
    return {
        "subject": cert.subject,
        "issuer": cert.issuer,
        "serial": cert.serial,
        "fingerprint_sha256": cert.fingerprint_sha256,
        "not_before": iso8601(cert.not_before) if parsed else None,
        "not_after": iso8601(cert.not_after) if parsed else None,
        "days_left": round(days_left(cert, now), 3) if parsed else None,
        "parse_error": cert.parse_error or None,
    }


def _served_file_document(served: ServedFileFacts | None, now: float) -> dict[str, Any] | None:
    if served is None:
        return None
    return {
        "path": served.path,
        "resolved_path": served.resolved_path,
        "read_success": served.leaf is not None,
        "error": served.error or None,
        "modified": _optional_iso8601(served.modified),
        "matches": served.matches,
        "served_fingerprint_sha256": served.served_fingerprint,
        "certificate": _other_cert_document(served.leaf, now) if served.leaf is not None else None,
    }


def _revocation_document(report: Assessment) -> dict[str, Any] | None:
    revocation = report.result.revocation
    if revocation is None:
        return None
    return {
        "fetch_success": revocation.fetch_success,
        "checks": [
            {
                "position": check.position,
                "status": check.status.value,
                "url": check.url,
                "detail": check.detail,
                "revoked_at": _optional_iso8601(check.revoked_at),
                "reason": check.reason,
                "crl_next_update": _optional_iso8601(check.crl_next_update),
                "fix": REVOKED_FIX if check.status is RevocationStatus.REVOKED else None,
            }
            for check in revocation.checks
        ],
    }


def _legacy_document(legacy: LegacyTlsFacts | None) -> dict[str, Any] | None:
    if legacy is None:
        return None
    return {
        "accepted": legacy.accepted,
        "version": legacy.version,
        "checked_at": _optional_iso8601(legacy.checked_at),
        "detail": legacy.detail,
    }


def _beyond_mqtt_document(report: Assessment) -> dict[str, Any]:
    """What /metrics has besides the chain and the CONNACK: transport, WebSocket upgrade, round trip,
    the expiry thresholds, the address label of ``addresses: all``."""
    result, broker = report.result, report.broker
    websocket = result.websocket
    roundtrip = result.roundtrip
    failure = roundtrip.failure if roundtrip is not None else None
    return {
        "transport": "wss" if broker.target.scheme == "wss" else "tls",
        "address_label": result.address_label,
        "expiry_thresholds": {"warning": str(broker.expiry_warning), "critical": str(broker.expiry_critical)},
        "websocket": (
            {"upgrade_status_code": websocket.status_code, "subprotocol": websocket.subprotocol}
            if websocket is not None
            else None
        ),
        "roundtrip": (
            {
                "success": roundtrip.success,
                "duration_seconds": round(roundtrip.latency, 6) if roundtrip.latency is not None else None,
                "unverified_connection": roundtrip.unverified_connection,
                "failure": (
                    {"stage": failure.stage.value, "reason": failure.reason.value, "detail": failure.detail}
                    if failure is not None
                    else None
                ),
            }
            if roundtrip is not None
            else None
        ),
    }


def render_document(report: Assessment) -> dict[str, Any]:
    """The JSON document of one broker; its schema is docs/check-schema.json (see docs/check.md)."""
    result, broker = report.result, report.broker
    failure: dict[str, Any] | None = None
    if result.failure is not None:
        finding = report.failure or failure_finding(result.failure, result, broker)
        failure = _finding_document(result.failure, finding)
    unverified: dict[str, Any] | None = None
    if result.secondary_failure is not None and report.unverified_failure is not None:
        unverified = _finding_document(result.secondary_failure, report.unverified_failure)
    tls: dict[str, Any] | None = None
    if result.tls is not None:
        verdict = result.tls.verdict
        tls = {
            "version": result.tls.version,
            "cipher": result.tls.cipher,
            "alpn_protocol": result.tls.alpn_protocol,
            "trusted": verdict.trusted if result.tls.chain else None,
            "verify_code": verdict.verify_code,
            "verify_message": verdict.verify_message,
            "problems": [
                {"problem": problem.value, "detail": finding.cause, "fix": finding.fix}
                for problem, finding in report.problems
            ],
            "anchor": _anchor_document(verdict.anchor, report.now) if verdict.anchor else None,
            "chain": [
                _cert_document(position, cert, report.now) for position, cert in enumerate(result.tls.chain)
            ],
        }
    mqtt: dict[str, Any] | None = None
    if result.mqtt is not None and result.mqtt.connack_code is not None:
        code = result.mqtt.connack_code
        mqtt = {
            "protocol": result.mqtt.protocol,
            "connack_code": code,
            "accepted": result.mqtt.accepted,
            "meaning": connack_meaning(result.mqtt.protocol, code),
            "unverified_connection": result.mqtt.unverified_connection,
            "requested_protocol": result.mqtt.requested,
        }
    return {
        "schema_version": SCHEMA_VERSION,
        "broker": result.broker,
        "address": result.address,
        "ip": result.ip,
        "server_name": broker.server_name,
        "checked_at": iso8601(result.finished),
        "warn_days": report.warn_days,
        "status": report.status.label,
        "exit_code": report.exit_code,
        "success": result.success,
        "failure": failure,
        "unverified_failure": unverified,
        "tls": tls,
        "mqtt": mqtt,
        "warnings": [
            {"warning": finding.kind, "position": item.position, "detail": finding.cause, "fix": finding.fix}
            for item, finding in report.warnings
        ]
        + [
            {"warning": finding.kind, "position": None, "detail": finding.cause, "fix": finding.fix}
            for _, finding in report.lifecycle_warnings
        ],
        "durations_seconds": {phase.value: round(seconds, 6) for phase, seconds in result.durations},
        "served_file": _served_file_document(result.served_file, report.now),
        "client_certificate": (
            {"path": broker.tls.cert_file or "", **_other_cert_document(result.client_cert, report.now)}
            if result.client_cert is not None
            else None
        ),
        "revocation": _revocation_document(report),
        "legacy_tls": _legacy_document(result.legacy_tls),
        "lints": [
            {
                "lint": finding.lint.value,
                "detail": tailor(finding.detail, broker.broker_kind),
                "positions": list(finding.positions),
            }
            for finding in result.lints
        ],
        **_beyond_mqtt_document(report),
    }
