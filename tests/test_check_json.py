"""``check --output json`` carries everything ``/metrics`` has about a broker (issue 13)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from mqtt_cert_exporter import families
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.report import build_report
from mqtt_cert_exporter.results import Phase, ProbeResult

#: Every per-broker metric and where its value is in check's JSON document ("" for: not a probe fact).
WHERE_IN_JSON = {
    "mqtt_broker_info": "address, server_name, transport",
    "mqtt_broker_probe_success": "success",
    "mqtt_broker_probe_failure": "failure.stage, failure.reason",
    "mqtt_broker_probe_failures": "",  # a counter over the daemon's life
    "mqtt_broker_probe_duration_seconds": "durations_seconds",
    "mqtt_broker_probe_timestamp_seconds": "checked_at",
    "mqtt_broker_probe_interval_seconds": "",  # the schedule, not a probe fact
    "mqtt_broker_cert_chain_age_seconds": "",  # the daemon's retention of a chain, not a probe fact
    "mqtt_broker_cert_expires_in_seconds": "tls.chain[].days_left",
    "mqtt_broker_cert_not_after_timestamp_seconds": "tls.chain[].not_after",
    "mqtt_broker_cert_not_before_timestamp_seconds": "tls.chain[].not_before",
    "mqtt_broker_cert_info": "tls.chain[]",
    "mqtt_broker_cert_expiry_warning_threshold_seconds": "expiry_thresholds.warning",
    "mqtt_broker_cert_expiry_critical_threshold_seconds": "expiry_thresholds.critical",
    "mqtt_broker_cert_anchor_expires_in_seconds": "tls.anchor.days_left",
    "mqtt_broker_cert_anchor_not_after_timestamp_seconds": "tls.anchor.not_after",
    "mqtt_broker_cert_lint": "lints",
    "mqtt_broker_cert_revoked": "revocation.checks[].status",
    "mqtt_broker_crl_fetch_success": "revocation.fetch_success",
    "mqtt_broker_tls_trusted": "tls.trusted",
    "mqtt_broker_tls_trust_problem": "tls.problems",
    "mqtt_broker_tls_version_info": "tls.version",
    "mqtt_broker_tls_cipher_info": "tls.cipher",
    "mqtt_broker_tls_alpn_protocol_info": "tls.alpn_protocol",
    "mqtt_broker_connect_success": "mqtt.accepted",
    "mqtt_broker_connack_reason_code": "mqtt.connack_code",
    "mqtt_broker_websocket_upgrade_status_code": "websocket.upgrade_status_code",
    "mqtt_broker_roundtrip_success": "roundtrip.success",
    "mqtt_broker_roundtrip_duration_seconds": "roundtrip.duration_seconds",
    "mqtt_broker_served_cert_matches_file": "served_file.matches",
    "mqtt_broker_served_cert_file_read_success": "served_file.read_success",
    "mqtt_broker_served_cert_file_not_after_timestamp_seconds": "served_file.certificate.not_after",
    "mqtt_broker_served_cert_file_not_before_timestamp_seconds": "served_file.certificate.not_before",
    "mqtt_broker_addresses_same_leaf": "",  # across the addresses of one broker: check prints each one
}


def test_every_broker_metric_has_its_place_in_the_json_document() -> None:
    source = Path(families.__file__).read_text()
    metrics = set(re.findall(r'"(mqtt_broker_[a-z_]+)"', source))
    assert metrics == set(WHERE_IN_JSON), "a new per-broker metric: give it a key in check's JSON document"
    broker = BrokerConfig("b", Target("localhost", 8883))
    result = ProbeResult("b", broker.address, "127.0.0.1", 0.0, 0.1, ((Phase.TOTAL, 0.1),), None)
    document = build_report(result, broker, warn_days=30, now=time.time()).document()
    for places in WHERE_IN_JSON.values():
        for place in filter(None, places.split(", ")):
            assert place.split(".")[0].removesuffix("[]") in document, place
