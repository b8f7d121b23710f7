"""The exporter as operators run it: a real process probing real brokers, read through /metrics."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PASSWORD, ExporterProcess, Lab, promtool_check, start_exporter, wait_for
from tests.lab.scrape import Samples, samples, value

pytestmark = pytest.mark.slow

SCENARIOS = (
    "good",
    "expiring",
    "expired",
    "expired_wrong_host",
    "unknown_ca",
    "password_ok",
    "closed",
    "mtls",
    "plaintext",
    "weak_key",
)


def series(found: Samples, name: str, **labels: str) -> list[dict[str, str]]:
    wanted = set(labels.items())
    return [dict(key[1]) for key in found if key[0] == name and wanted <= key[1]]


@pytest.fixture(scope="module")
def exporter(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    workdir = tmp_path_factory.mktemp("exporter")
    config = workdir / "config.yaml"
    config.write_text(lab.config_yaml(*SCENARIOS))
    process = start_exporter(config, workdir)
    try:
        wait_for(
            lambda: all(
                value(samples(process.get("/metrics")), "mqtt_broker_probe_success", broker=name) is not None
                for name in SCENARIOS
            )
        )
        yield process
    finally:
        process.stop()


@pytest.fixture
def metrics(exporter: ExporterProcess) -> Samples:
    return samples(exporter.get("/metrics"))


def test_good_broker(metrics: Samples) -> None:
    assert value(metrics, "mqtt_broker_probe_success", broker="good") == 1
    assert value(metrics, "mqtt_broker_tls_trusted", broker="good") == 1
    assert value(metrics, "mqtt_broker_connect_success", broker="good") == 1
    assert value(metrics, "mqtt_broker_connack_reason_code", broker="good") == 0
    assert value(metrics, "mqtt_broker_tls_version_info", broker="good", version="TLSv1.3") == 1
    assert not series(metrics, "mqtt_broker_probe_failure", broker="good")
    assert not series(metrics, "mqtt_broker_tls_trust_problem", broker="good")
    days = (value(metrics, "mqtt_broker_cert_expires_in_seconds", broker="good", position="0") or 0) / 86400
    assert 89 < days <= 90
    leaf, intermediate = (
        series(metrics, "mqtt_broker_cert_info", broker="good", position=p)[0] for p in ("0", "1")
    )
    assert leaf["subject"] == "CN=good,O=mqtt-cert-exporter lab" or "CN=good" in leaf["subject"]
    assert "Lab Intermediate CA" in leaf["issuer"] and "Lab Intermediate CA" in intermediate["subject"]
    assert leaf["dns_names"] == "localhost" and leaf["ip_addresses"] == "127.0.0.1,::1"
    assert leaf["key"] == "EC-P256" and leaf["signature_algorithm"] == "ecdsa-with-SHA256"
    assert len(leaf["fingerprint_sha256"]) == 64 and leaf["serial"] == leaf["serial"].lower()
    phases = {s["phase"] for s in series(metrics, "mqtt_broker_probe_duration_seconds", broker="good")}
    assert phases == {"resolve", "connect", "tls", "mqtt", "total"}


def test_expiring_in_twenty_days(metrics: Samples) -> None:
    days = (
        value(metrics, "mqtt_broker_cert_expires_in_seconds", broker="expiring", position="0") or 0
    ) / 86400
    assert 19.9 < days <= 20
    assert value(metrics, "mqtt_broker_probe_success", broker="expiring") == 1


def test_expired_certificate_still_reports_expiry_and_mqtt(metrics: Samples) -> None:
    assert value(metrics, "mqtt_broker_probe_success", broker="expired") == 0
    assert (
        value(metrics, "mqtt_broker_probe_failure", broker="expired", stage="trust", reason="untrusted") == 1
    )
    assert value(metrics, "mqtt_broker_tls_trusted", broker="expired") == 0
    assert value(metrics, "mqtt_broker_tls_trust_problem", broker="expired", problem="expired") == 1
    assert (value(metrics, "mqtt_broker_cert_expires_in_seconds", broker="expired", position="0") or 0) < 0
    assert value(metrics, "mqtt_broker_cert_not_after_timestamp_seconds", broker="expired", position="0")
    # Broker up, certificate bad: the CONNACK came over the non-verifying connection.
    assert value(metrics, "mqtt_broker_connect_success", broker="expired") == 1


def test_every_problem_is_a_series(metrics: Samples) -> None:
    problems = {
        s["problem"] for s in series(metrics, "mqtt_broker_tls_trust_problem", broker="expired_wrong_host")
    }
    assert problems == {"expired", "hostname_mismatch"}
    problems = {s["problem"] for s in series(metrics, "mqtt_broker_tls_trust_problem", broker="unknown_ca")}
    assert problems == {"unknown_ca"}
    problems = {s["problem"] for s in series(metrics, "mqtt_broker_tls_trust_problem", broker="weak_key")}
    assert problems == {"weak_key"}


def test_failures_by_stage_and_reason(metrics: Samples) -> None:
    assert (
        value(metrics, "mqtt_broker_probe_failure", broker="closed", stage="connect", reason="refused") == 1
    )
    assert (
        value(metrics, "mqtt_broker_probe_failures_total", broker="closed", stage="connect", reason="refused")
        or 0
    ) >= 1
    assert value(metrics, "mqtt_broker_tls_trusted", broker="closed") is None  # no certificate received
    assert value(metrics, "mqtt_broker_connect_success", broker="closed") is None  # no CONNACK
    assert (
        value(
            metrics,
            "mqtt_broker_probe_failure",
            broker="mtls",
            stage="tls",
            reason="client_certificate_required",
        )
        == 1
    )
    assert (
        value(metrics, "mqtt_broker_probe_failure", broker="plaintext", stage="tls", reason="protocol_error")
        == 1
    )
    assert value(metrics, "mqtt_broker_probe_success", broker="password_ok") == 1


def test_exporter_metrics(metrics: Samples) -> None:
    assert value(metrics, "mqtt_cert_exporter_brokers") == len(SCENARIOS)
    assert series(metrics, "mqtt_cert_exporter_build_info")
    assert value(metrics, "mqtt_cert_exporter_config_last_reload_successful") == 1
    assert value(metrics, "mqtt_broker_probe_interval_seconds", broker="good") == 2


def test_the_cost_of_the_previous_scrape_is_exposed(exporter: ExporterProcess) -> None:
    exporter.get("/metrics")
    render = value(samples(exporter.get("/metrics")), "mqtt_cert_exporter_metrics_render_seconds")
    assert render is not None and 0 < render < 5


def test_exposition_passes_promtool(exporter: ExporterProcess) -> None:
    text = exporter.get("/metrics")
    promtool_check(text)


def test_http_endpoints(exporter: ExporterProcess) -> None:
    assert "Healthy" in exporter.get("/-/healthy")
    assert "Ready" in exporter.get("/-/ready")
    assert 'href="metrics"' in exporter.get("/")


def test_password_never_leaks(exporter: ExporterProcess) -> None:
    assert PASSWORD not in exporter.get("/metrics")
    assert PASSWORD not in exporter.log()


def test_reload_adds_removes_and_rejects_bad_config(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good", "closed"))
    process = start_exporter(config, tmp_path)
    try:
        wait_for(
            lambda: (
                value(samples(process.get("/metrics")), "mqtt_broker_probe_success", broker="closed")
                is not None
            )
        )
        config.write_text(lab.config_yaml("good", "expired"))
        process.process.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            found = samples(process.get("/metrics"))
            return (
                value(found, "mqtt_broker_probe_success", broker="expired") == 0
                and not series(found, "mqtt_broker_probe_success", broker="closed")
                and not series(found, "mqtt_broker_probe_failures_total", broker="closed")
            )

        wait_for(reloaded)
        config.write_text("brokers:\n  - name: good\n    address: 'localhost:99999'\n")
        process.process.send_signal(signal.SIGHUP)
        wait_for(
            lambda: (
                value(samples(process.get("/metrics")), "mqtt_cert_exporter_config_last_reload_successful")
                == 0
            )
        )
        found = samples(process.get("/metrics"))
        assert value(found, "mqtt_broker_probe_success", broker="good") == 1  # the old config keeps running
        assert "brokers[0].address" in process.log()
    finally:
        assert process.stop() == 0


def test_config_check_lists_every_error(tmp_path: Path) -> None:
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text(
        "brokers:\n  - name: a\n    address: 'h:0'\n  - name: a\n    address: h\n    colour: red\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mqtt_cert_exporter", f"--config.file={config}", "--config.check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert (
        "brokers[0].address" in result.stderr and "brokers[1]" in result.stderr and "colour" in result.stderr
    )


def test_post_reload(lab: Lab, tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(config, tmp_path)

    def post() -> tuple[int, str]:
        request = urllib.request.Request(process.url + "/-/reload", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        assert post() == (200, "configuration unchanged\n")
        config.write_text(lab.config_yaml("good", "expired"))
        status, text = post()
        assert status == 200 and "1 added" in text
        wait_for(
            lambda: (
                value(samples(process.get("/metrics")), "mqtt_broker_probe_success", broker="expired") == 0
            )
        )
        config.write_text("brokers: [{name: x}]\n")
        status, text = post()
        assert status == 500 and "brokers[0].address" in text
    finally:
        assert process.stop() == 0


def test_every_exposed_metric_is_documented(exporter: ExporterProcess) -> None:
    """The contract: nothing reaches /metrics without a row in docs/metrics.md."""
    from tests.conftest import ROOT

    doc = (ROOT / "docs" / "metrics.md").read_text()
    names = {
        family.name
        for family in text_string_to_metric_families(exporter.get("/metrics"))
        if family.name.startswith(("mqtt_broker_", "mqtt_cert_exporter_"))
    }
    assert names
    undocumented = sorted(n for n in names if f"`{n}`" not in doc and f"`{n}_total`" not in doc)
    assert not undocumented
