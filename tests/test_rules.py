"""The alert rules: valid for promtool, unit-tested rule by rule, within the metric contract, and shipped
identically to the Prometheus Operator."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, promtool

ALERTS = ROOT / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((ROOT / "prometheus" / "tests").glob("*.yml"))
PROMETHEUS_RULE = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
RENDERER = ROOT / "deploy" / "kubernetes" / "render_prometheusrule.py"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK_BASE_URL = "https://github.com/mqtt-cert-exporter/mqtt-cert-exporter/blob/main/docs/runbooks"

#: Metric families prometheus_client adds besides the documented ones.
CLIENT_PREFIXES = ("process_", "python_")

# --------------------------------------------------------------------------------------------------
# Metric names in PromQL (shared with tests/test_prometheus.py)

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left"}
    | {"group_right", "inf", "nan", "atan2", "start", "end"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME_MATCHER = re.compile(r'__name__\s*=~?\s*"([^"]*)"')
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a lexical approximation, good for our rules)."""
    names: set[str] = set()
    for alternatives in _NAME_MATCHER.findall(expr):
        names.update(part for part in alternatives.split("|") if part)
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _CLAUSE.sub(" ", text)
    for match in _IDENTIFIER.finditer(text):
        word = match[1]
        if word.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def contract_metrics() -> set[str]:
    """Every metric name docs/metrics.md documents."""
    names = set(re.findall(r"^\| `([a-z_:]+)`", METRICS_DOC.read_text(encoding="utf-8"), re.MULTILINE))
    assert "mqtt_broker_probe_success" in names and "mqtt_cert_exporter_build_info" in names
    return names


def in_contract(name: str, extra: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    return name in contract_metrics() or name in extra or name.startswith(CLIENT_PREFIXES)


def test_metric_names_are_found_in_expressions() -> None:
    assert metric_names(
        'count(min by (job, broker) (mqtt_broker_cert_expires_in_seconds{broker=~"a|b"}) <= 7 * 86400) '
        "or vector(0)"
    ) == {"mqtt_broker_cert_expires_in_seconds"}
    assert metric_names(
        'rate(process_cpu_seconds_total{job="x"}[5m]) * on (instance) group_left (version) '
        "mqtt_cert_exporter_build_info"
    ) == {"process_cpu_seconds_total", "mqtt_cert_exporter_build_info"}
    assert metric_names('{__name__=~"a_b|c_d", job=~"$job"}') == {"a_b", "c_d"}
    assert metric_names('count_values("code", x_y) unless absent(z)') == {"x_y", "z"}


# --------------------------------------------------------------------------------------------------
# The rule file


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> Iterator[dict[str, Any]]:
    for group in load(ALERTS)["groups"]:
        yield from group["rules"]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def test_promtool_check_rules() -> None:
    result = run(promtool(), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(list(rules()))} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = run(promtool(), "test", "rules", *(str(path) for path in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    tested_records: set[str] = set()
    for path in RULE_TESTS:
        document = load(path)
        assert document["rule_files"] == ["../alerts.yml"], path
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
            for case in test.get("promql_expr_test", []):
                tested_records |= metric_names(case["expr"]) & recorded()
    names = {alert["alert"] for alert in alerts()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - silent == set(), "alerts without a silent test"
    assert recorded() - tested_records == set(), "recording rules without a test"


def test_the_issue_asks_for_these_alerts() -> None:
    assert {alert["alert"] for alert in alerts()} >= {
        "MqttBrokerCertificateExpiringSoon",
        "MqttBrokerCertificateExpiryCritical",
        "MqttBrokerCertificateExpired",
        "MqttBrokerCertificateNotYetValid",
        "MqttBrokerCertificateUntrusted",
        "MqttBrokerCertificateRevoked",
        "MqttBrokerCertificateRenewalOverdue",
        "MqttBrokerServesOutdatedCertificate",
        "MqttBrokerTrustAnchorExpiringSoon",
        "MqttCertExporterClientCertificateExpiringSoon",
        "MqttBrokerDown",
        "MqttBrokerProbeResultsStale",
        "MqttCertExporterConfigReloadFailed",
        "MqttCertExporterDown",
        "MqttCertExporterAbsent",
    }


#: Alerts about an exporter (its instance or job), not about one broker.
EXPORTER_ALERTS = frozenset(
    {"MqttCertExporterConfigReloadFailed", "MqttCertExporterDown", "MqttCertExporterJobAbsent"}
    | {"MqttCertExporterAbsent"}
)


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: str(alert["alert"]))
def test_alert_is_actionable(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in ("warning", "critical")
    assert alert["labels"]["scope"] in ("certificate", "broker", "exporter")
    assert re.fullmatch(r"[0-9]+[mh]", alert["for"]), "every alert needs a `for:` duration"
    assert alert["keep_firing_for"] == "15m", "a scrape gap or restart under 15 minutes resolves nothing"
    annotations = alert["annotations"]
    assert set(annotations) >= {"summary", "description", "runbook_url"}
    assert "Fix" in annotations["description"], "the description says how to fix it"
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE_URL}/{alert['alert']}.md"
    if alert["alert"] in EXPORTER_ALERTS:
        assert alert["labels"]["scope"] == "exporter"
    else:
        # names the broker and where it is
        assert "$labels.broker" in annotations["summary"] and "$labels.target" in annotations["summary"]


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: str(alert["alert"]))
def test_broker_alerts_join_the_broker_info(alert: dict[str, Any]) -> None:
    if alert["alert"] in EXPORTER_ALERTS:
        return
    assert re.search(
        r"\* on \(job, instance, broker\) group_left \(target[^)]*\)\s+mqtt_broker_info", alert["expr"]
    ), "joins target (and server_name) from mqtt_broker_info"
    if alert["labels"]["scope"] != "exporter":
        # a restarted pod, an HA pair or a rollout continues the same alert
        assert alert["expr"].startswith("max without (instance) (")


def test_certificate_alerts_name_the_certificate_or_have_none() -> None:
    for alert in alerts():
        if alert["labels"]["scope"] != "certificate":
            continue
        if "mqtt_broker_cert_info" in alert["expr"]:
            assert "fingerprint_sha256" in alert["expr"], alert["alert"]
        else:  # the anchor and the client certificate: no certificate series of their own
            assert alert["alert"] in {
                "MqttBrokerTrustAnchorExpiringSoon",
                "MqttCertExporterClientCertificateExpiringSoon",
            }


def test_rules_use_only_documented_metrics() -> None:
    for rule in rules():
        for name in metric_names(rule["expr"]):
            assert in_contract(name, recorded() | {"up"}), (
                f"{rule.get('alert') or rule.get('record')}: {name}"
            )


def test_only_the_exporter_liveness_alerts_read_the_up_series() -> None:
    # `up` is Prometheus's, not the exporter's; /probe answers 200 even when the broker is down, so
    # it says something about the exporter instance, never about a broker.
    readers = {rule.get("alert") for rule in rules() if "up" in metric_names(rule["expr"])}
    assert readers == {"MqttCertExporterDown", "MqttCertExporterJobAbsent"}


def test_thresholds_come_from_the_exporter() -> None:
    assert recorded() == set(), "no global threshold: each broker's are exported"
    for rule in rules():
        assert "86400" not in rule["expr"], f"{rule.get('alert')}: a hand-written number of days"
    expiry = [alert for alert in alerts() if "Expir" in alert["alert"] and "Expired" not in alert["alert"]]
    assert len(expiry) == 4
    for alert in expiry:
        assert "mqtt_broker_cert_expiry_warning_threshold_seconds" in alert["expr"] or (
            "mqtt_broker_cert_expiry_critical_threshold_seconds" in alert["expr"]
        ), alert["alert"]


# --------------------------------------------------------------------------------------------------
# Runbooks

RUNBOOKS = ROOT / "docs" / "runbooks"


def test_every_alert_has_its_runbook_and_every_runbook_an_alert() -> None:
    names = {alert["alert"] for alert in alerts()}
    assert {path.stem for path in RUNBOOKS.glob("*.md")} == names


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: str(alert["alert"]))
def test_runbook_says_what_to_run_and_how_to_fix(alert: dict[str, Any]) -> None:
    text = (RUNBOOKS / f"{alert['alert']}.md").read_text(encoding="utf-8")
    assert text.startswith(f"# {alert['alert']}\n")
    for heading in ("## What it means", "## Check", "## Fix", "## Verify"):
        assert heading in text, f"{alert['alert']}: no {heading!r} section"
    if alert["labels"]["scope"] != "exporter":
        assert "mqtt-cert-exporter check" in text
        assert "openssl s_client -showcerts -servername" in text
    if alert["labels"]["scope"] == "certificate" and "Client" not in alert["alert"]:
        assert "Mosquitto" in text and "SIGHUP" in text and "RabbitMQ" in text


# --------------------------------------------------------------------------------------------------
# The Prometheus Operator copy


def renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render_prometheusrule", RENDERER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_is_generated_from_alerts_yml() -> None:
    expected = renderer().render(ALERTS.read_text(encoding="utf-8"))
    assert PROMETHEUS_RULE.read_text(encoding="utf-8") == expected, (
        "deploy/kubernetes/prometheusrule.yaml is out of date: "
        "run python3 deploy/kubernetes/render_prometheusrule.py"
    )


def test_prometheusrule_holds_the_same_rules() -> None:
    document = load(PROMETHEUS_RULE)
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"] == "mqtt-cert-exporter"
    assert document["spec"] == load(ALERTS)


def test_renderer_check_mode(tmp_path: Path) -> None:
    result = run("python3", str(RENDERER), "--check")
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(ValueError, match="groups:"):
        renderer().render(f"# nothing here\nrunbook_url: {RUNBOOK_BASE_URL}/X.md\n")


def test_a_site_renders_the_rules_with_its_own_runbook_base_url(tmp_path: Path) -> None:
    base = "https://wiki.example.com/ops/mqtt-runbooks"
    for form, output in (("prometheusrule", tmp_path / "rule.yaml"), ("rules", tmp_path / "alerts.yml")):
        result = run(
            "python3", str(RENDERER), f"--runbook-base-url={base}/", f"--format={form}", f"--output={output}"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        document = load(output)
        groups = document["spec"]["groups"] if form == "prometheusrule" else document["groups"]
        urls = [rule["annotations"]["runbook_url"] for group in groups for rule in group["rules"]]
        assert urls == [f"{base}/{alert['alert']}.md" for alert in alerts()]
    checked = run(promtool(), "check", "rules", str(tmp_path / "alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    old_prometheus = run(
        "python3", str(RENDERER), "--without-keep-firing-for", "--format=rules", "--output=-"
    )
    assert old_prometheus.returncode == 0, old_prometheus.stderr
    assert yaml.safe_load(old_prometheus.stdout) == {
        "groups": [
            {
                **group,
                "rules": [
                    {k: v for k, v in rule.items() if k != "keep_firing_for"} for rule in group["rules"]
                ],
            }
            for group in load(ALERTS)["groups"]
        ]
    }
    refused = run("python3", str(RENDERER), "--runbook-base-url=wiki/mqtt", "--output=-")
    assert (
        refused.returncode == 2 and "--runbook-base-url: 'wiki/mqtt' is not an http(s) URL" in refused.stderr
    )


def test_prometheusrule_spec_passes_promtool(tmp_path: Path) -> None:
    rule_file = tmp_path / "from-prometheusrule.yml"
    rule_file.write_text(yaml.safe_dump(load(PROMETHEUS_RULE)["spec"], sort_keys=False))
    result = run(promtool(), "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
