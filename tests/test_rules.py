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
        "MqttBrokerUnreachable",
        "MqttBrokerTlsHandshakeFailing",
        "MqttBrokerConnackRefused",
        "MqttBrokerProbeResultsStale",
        "MqttCertExporterConfigReloadFailed",
    }


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: str(alert["alert"]))
def test_alert_is_actionable(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in ("warning", "critical")
    assert re.fullmatch(r"[0-9]+[mh]", alert["for"]), "every alert needs a `for:` duration"
    annotations = alert["annotations"]
    assert set(annotations) >= {"summary", "description"}
    assert "Fix" in annotations["description"], "the description says how to fix it"
    if alert["alert"] != "MqttCertExporterAbsent":
        # names the broker (or, for the exporter's own alerts, the exporter instance)
        assert "$labels.broker" in annotations["summary"] or "$labels.instance" in annotations["summary"]


def test_rules_use_only_documented_metrics() -> None:
    for rule in rules():
        for name in metric_names(rule["expr"]):
            assert in_contract(name, recorded()), f"{rule.get('alert') or rule.get('record')}: {name}"


def test_alerts_never_rely_on_the_up_series() -> None:
    # `up` is Prometheus's, not the exporter's; /probe answers 200 even when the broker is down.
    for rule in rules():
        assert "up" not in metric_names(rule["expr"])


def test_thresholds_are_in_one_place_and_documented() -> None:
    thresholds = {
        rule["record"]: int(re.fullmatch(r"vector\(([0-9]+) \* 86400\)", rule["expr"])[1])  # type: ignore[index]
        for rule in rules()
        if "threshold" in rule.get("record", "")
    }
    assert thresholds == {
        "mqtt_cert_exporter:cert_expiry_warning_threshold_seconds": 28,
        "mqtt_cert_exporter:cert_expiry_critical_threshold_seconds": 14,
    }
    header = ALERTS.read_text(encoding="utf-8").split("groups:")[0]
    assert "WARNING 28 days, CRITICAL 14 days" in header
    expiry = [alert for alert in alerts() if "Expir" in alert["alert"] and "Expired" not in alert["alert"]]
    for alert in expiry:
        assert "86400" not in alert["expr"], "expiry alerts read the thresholds from the recording rules"


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
        renderer().render("# nothing here\n")


def test_prometheusrule_spec_passes_promtool(tmp_path: Path) -> None:
    rule_file = tmp_path / "from-prometheusrule.yml"
    rule_file.write_text(yaml.safe_dump(load(PROMETHEUS_RULE)["spec"], sort_keys=False))
    result = run(promtool(), "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
