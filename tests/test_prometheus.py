"""What users see in Prometheus and Grafana: the dashboard, and a real Prometheus scraping the exporter.

The end-to-end part starts a real Prometheus (Debian's) on an ephemeral port, scraping one exporter in
both modes (scheduled /metrics and multi-target /probe) that probes real Mosquitto brokers; it then asks
Prometheus's HTTP API whether every dashboard expression has data and which alerts are active. The rest
lints what cannot run here (no Grafana): the dashboard's structure, against the metric contract. How it
is deployed (scrape configs, Grafana provisioning, Compose, the Dockerfile, Kubernetes, systemd):
tests/test_deployment.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqtt_cert_exporter.lab.ports import free_port
from tests.conftest import ROOT, ExporterProcess, Lab, promtool, start_exporter, wait_for
from tests.lab.process import stop_process
from tests.test_rules import ALERTS, contract_metrics, in_contract, metric_names, recorded

DASHBOARD = ROOT / "grafana" / "dashboards" / "mqtt-cert-exporter.json"

#: Values the e2e test gives the dashboard's variables ("All").
VARIABLES = {"job": ".*", "instance": ".*", "broker": ".*", "__rate_interval": "1m", "__interval": "1m"}


# ==================================================================================================
# The dashboard


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels(items: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"] if items is None else items:
        yield panel
        yield from panels(panel.get("panels", []))


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        assert name in VARIABLES, f"unknown dashboard variable ${name} in {expr}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def panel_expressions() -> list[tuple[str, str]]:
    """(panel title / refId, expression with the variables substituted) of every panel target."""
    return [
        (f"{panel['title']} / {target['refId']}", substitute(target["expr"]))
        for panel in panels()
        for target in panel.get("targets", [])
    ]


def variable_selectors() -> dict[str, tuple[str, str]]:
    """variable -> (series selector, label) of every label_values() query variable."""
    selectors: dict[str, tuple[str, str]] = {}
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        assert match, f"variable {variable['name']}: expected label_values(selector, label), got {query}"
        selectors[variable["name"]] = (substitute(match[1]), match[2])
    return selectors


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert 36 <= board["schemaVersion"] <= 41
    assert board["uid"] == "mqtt-cert-exporter" and board["title"]
    assert board["id"] is None, "an exported dashboard carries no database id"
    assert not board.get("__inputs"), (
        "provisioned as is: no import-time inputs, a datasource variable instead"
    )
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "broker"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] and variables[name]["multi"]
        assert variables[name]["allValue"] == ".*"
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


def test_panels_are_well_formed() -> None:
    known_types = {"row", "stat", "table", "timeseries", "piechart", "bargauge", "gauge", "text"}
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels():
        assert panel["type"] in known_types, panel["type"]
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["w"] > 0 and position["x"] + position["w"] <= 24, panel[
            "title"
        ]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        targets = panel["targets"]
        assert targets, f"{panel['title']} has no query"
        refs = [target["refId"] for target in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in targets:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]


def test_panels_do_not_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in panels():
        position = panel["gridPos"]
        for x in range(position["x"], position["x"] + position["w"]):
            for y in range(position["y"], position["y"] + position["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_dashboard_covers_the_issue() -> None:
    titles = {panel["title"] for panel in panels()}
    assert {
        "Brokers",
        "Probe success",
        "Untrusted",
        "Expiry critical",  # by each broker's own thresholds, as the alerts (issue 12)
        "Expiry warning",
        "Expired",
        "Brokers by days left",
        "Probe duration by phase (average over brokers)",
        "TLS versions",
        "CONNACK codes",
        "Config reload",
    } <= titles
    assert any(title.startswith("Days left") for title in titles)


def test_dashboard_queries_only_exported_metrics() -> None:
    for where, expr in panel_expressions():
        for name in metric_names(expr):
            assert in_contract(name), f"{where}: {name} is not in docs/metrics.md"
    for name, (selector, _) in variable_selectors().items():
        assert all(in_contract(metric) for metric in metric_names(selector)), name


def test_days_are_shown_as_days() -> None:
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "mqtt_broker_cert_expires_in_seconds" in expr and not expr.startswith("count("):
                assert "/ 86400" in expr, f"{panel['title']}: seconds left must become days"
        if panel["type"] != "row":
            unit = panel["fieldConfig"]["defaults"].get("unit", "")
            exprs = " ".join(target["expr"] for target in panel["targets"])
            if unit == "suffix: days":
                assert "/ 86400" in exprs, panel["title"]


def test_broker_table_transformations_match_its_queries() -> None:
    (table,) = [panel for panel in panels() if panel["type"] == "table"]
    refs = {target["refId"] for target in table["targets"]}
    steps = {step["id"]: step["options"] for step in table["transformations"]}
    assert list(steps) == ["groupBy", "joinByField", "organize", "sortBy"]
    grouped = steps["groupBy"]["fields"]
    assert grouped["broker"]["operation"] == "groupby"
    labels = {
        label
        for target in table["targets"]
        for label in re.findall(r"by \(([^)]*)\)", target["expr"])[0].replace(" ", "").split(",")
    }
    values = {
        f"Value #{ref}" for ref in refs if "by (broker)" in table["targets"][ord(ref) - ord("A")]["expr"]
    }
    assert set(grouped) == labels | values, "every column the queries produce is grouped, no other"
    renamed = steps["organize"]["renameByName"]
    produced = {
        name if options["operation"] == "groupby" else f"{name} ({options['aggregations'][0]})"
        for name, options in grouped.items()
    }
    assert set(renamed) == produced, "the organize step renames exactly the grouped columns"
    assert steps["sortBy"]["sort"] == [{"field": "Days left", "desc": False}]
    assert "Days left" in renamed.values() and "Trust problems" in renamed.values()


# ==================================================================================================
# End to end: a real Prometheus scraping the exporter in both modes

SCENARIOS = ("good", "expiring", "expired", "unknown_ca")
LOOPBACK = r"127\.0\.0\.1:[0-9]+"


@dataclass
class DaemonProcess:
    """A server of the Prometheus ecosystem, started by a test on an ephemeral loopback port."""

    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class PrometheusProcess(DaemonProcess):
    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] in ("vector", "scalar"), data
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else [data]
        return result


def start_daemon(
    commands: tuple[str, ...], package: str, arguments: Callable[[int], list[str]], workdir: Path
) -> DaemonProcess:
    """Start the first of ``commands`` found with ``arguments(port)``; return it once /-/ready answers."""
    binary = next(filter(None, map(shutil.which, commands)), None)
    if binary is None:
        pytest.fail(
            f"{commands[0]} is not installed (Debian package {package}): run "
            "`bash scripts/ensure-system-packages.sh` (make test does)"
        )
    name = Path(binary).name
    for _attempt in range(3):  # the port from free_port() may be taken before the daemon binds it
        port = free_port()
        log_path = workdir / f"{name}-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([binary, *arguments(port)], stdout=log, stderr=subprocess.STDOUT)
        daemon = DaemonProcess(process, f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(daemon.url + "/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return daemon
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        daemon.stop()
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    raise RuntimeError(f"{name} did not start:\n{log_path.read_text(errors='replace')}")


def start_prometheus(config: Path, workdir: Path) -> PrometheusProcess:
    daemon = start_daemon(
        ("prometheus",),
        "prometheus",
        lambda port: [
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / f'tsdb-{port}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        workdir,
    )
    return PrometheusProcess(daemon.process, daemon.url, daemon.log_path)


@dataclass
class Stack:
    prometheus: PrometheusProcess
    exporter: ExporterProcess
    #: scenario -> the `broker` label in each mode
    scheduled: dict[str, str]
    probed: dict[str, str]


@pytest.fixture(scope="module")
def stack(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus-e2e")
    config = workdir / "exporter.yaml"
    config.write_text(
        lab.config_yaml(*SCENARIOS, interval="2s", timeout="1s")
        + f"modules:\n  lab:\n    timeout: 1s\n    tls:\n      ca_file: '{lab.root.cert_path}'\n"
        "      server_name: localhost\n"
    )
    exporter = start_exporter(config, workdir, f"--probe.allowed-target={LOOPBACK}")
    probed = {scenario: lab.broker(scenario).address for scenario in SCENARIOS}
    prometheus_config = workdir / "prometheus.yml"
    prometheus_config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "mqtt-cert-exporter",
                        "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}],
                    },
                    {
                        "job_name": "mqtt-probe",
                        "metrics_path": "/probe",
                        "params": {"module": ["lab"]},
                        "static_configs": [{"targets": list(probed.values())}],
                        "relabel_configs": [
                            {"source_labels": ["__address__"], "target_label": "__param_target"},
                            {"source_labels": ["__param_target"], "target_label": "instance"},
                            {
                                "target_label": "__address__",
                                "replacement": exporter.url.removeprefix("http://"),
                            },
                        ],
                    },
                ],
            },
            sort_keys=False,
        )
    )
    check = subprocess.run(
        [promtool(), "check", "config", str(prometheus_config)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    prometheus = start_prometheus(prometheus_config, workdir)
    try:
        yield Stack(prometheus, exporter, {scenario: scenario for scenario in SCENARIOS}, probed)
    finally:
        prometheus.stop()
        exporter.stop()


def missing_data(prometheus: PrometheusProcess) -> list[str]:
    return [f"{where}: {expr}" for where, expr in panel_expressions() if not prometheus.query(expr)]


@pytest.mark.slow
def test_every_dashboard_expression_returns_data(stack: Stack) -> None:
    try:
        wait_for(lambda: not missing_data(stack.prometheus), timeout=20, interval=0.5)
    except AssertionError:
        pytest.fail("dashboard expressions without data:\n" + "\n".join(missing_data(stack.prometheus)))
    for name, (selector, label) in variable_selectors().items():
        series = stack.prometheus.api("/api/v1/series", **{"match[]": selector})
        assert {item[label] for item in series if label in item}, f"variable {name} has no values"


@pytest.mark.slow
def test_dashboard_numbers_are_right(stack: Stack) -> None:
    def days_left(broker: str) -> float:
        (sample,) = stack.prometheus.query(
            f'min by (broker) (mqtt_broker_cert_expires_in_seconds{{broker="{broker}"}}) / 86400'
        )
        return float(sample["value"][1])

    wait_for(
        lambda: all(
            stack.prometheus.query(f'mqtt_broker_cert_expires_in_seconds{{broker="{b}"}}')
            for labels in (stack.scheduled, stack.probed)
            for b in labels.values()
        )
    )
    for labels in (stack.scheduled, stack.probed):
        assert 19.9 < days_left(labels["expiring"]) <= 20
        assert days_left(labels["expired"]) < -2.9
        assert 89 < days_left(labels["good"]) <= 90
    (expired,) = stack.prometheus.query(substitute(expression("Expired")))
    assert float(expired["value"][1]) == 2  # one expired broker, seen in both modes
    (untrusted,) = stack.prometheus.query(substitute(expression("Untrusted")))
    assert float(untrusted["value"][1]) == 4  # expired and unknown_ca, in both modes


def expression(title: str) -> str:
    (panel,) = [panel for panel in panels() if panel["title"] == title]
    (target,) = panel["targets"]
    expr: str = target["expr"]
    return expr


def active_alerts(prometheus: PrometheusProcess) -> list[dict[str, str]]:
    return [
        {**alert["labels"], "state": alert["state"]}
        for alert in prometheus.api("/api/v1/alerts")["alerts"]
        if alert["state"] in ("pending", "firing")  # pending: the expression is true, `for:` still running
    ]


@pytest.mark.slow
def test_expiry_and_trust_alerts_are_active_for_the_right_brokers(stack: Stack) -> None:
    expected = {
        (mode, alertname, labels[scenario])
        for mode, labels in (("scheduled", stack.scheduled), ("probe", stack.probed))
        for alertname, scenario in (
            ("MqttBrokerCertificateExpiringSoon", "expiring"),
            ("MqttBrokerCertificateExpired", "expired"),
            ("MqttBrokerCertificateUntrusted", "unknown_ca"),
        )
    }

    def found() -> set[tuple[str, str, str]]:
        return {
            ("probe" if alert["job"] == "mqtt-probe" else "scheduled", alert["alertname"], alert["broker"])
            for alert in active_alerts(stack.prometheus)
            if "broker" in alert
        }

    def exporter_level() -> list[dict[str, str]]:
        # MqttCertExporterAbsent is pending when the rules ran before Prometheus's first scrape.
        return [alert for alert in active_alerts(stack.prometheus) if "broker" not in alert]

    try:
        wait_for(lambda: expected <= found() and not exporter_level(), timeout=20, interval=0.5)
    except AssertionError:
        pytest.fail(
            f"missing alerts: {sorted(expected - found())}; active: {sorted(found())}; "
            f"exporter-level: {exporter_level()}"
        )
    alerts = active_alerts(stack.prometheus)
    by_broker: dict[str, set[str]] = {}
    for alert in alerts:
        by_broker.setdefault(alert.get("broker", ""), set()).add(alert["alertname"])
    for labels in (stack.scheduled, stack.probed):
        assert labels["good"] not in by_broker, "the good broker stays silent"
        # 20 days left: between the broker's 14-day critical and 28-day warning thresholds
        assert by_broker[labels["expiring"]] == {"MqttBrokerCertificateExpiringSoon"}
        # an expired leaf is one alert, not also an "untrusted: expired" one; the broker answers MQTT
        assert by_broker[labels["expired"]] == {"MqttBrokerCertificateExpired"}
        assert by_broker[labels["unknown_ca"]] == {"MqttBrokerCertificateUntrusted"}
    (untrusted,) = [
        alert
        for alert in alerts
        if alert["alertname"] == "MqttBrokerCertificateUntrusted" and alert["job"] == "mqtt-probe"
    ]
    assert untrusted["problem"] == "unknown_ca"
    (expiring,) = [alert for alert in alerts if alert.get("broker") == "expiring"]
    assert expiring["position"] == "0" and "CN=expiring" in expiring["subject"]
    assert not [alert for alert in alerts if "broker" not in alert], "no exporter-level alert"
    # The texts, expanded by the real Prometheus: broker, certificate (via the cert_info query) and fix.
    texts = {
        (alert["labels"]["alertname"], alert["labels"]["broker"]): alert["annotations"]
        for alert in stack.prometheus.api("/api/v1/alerts")["alerts"]
    }
    trust = texts[("MqttBrokerCertificateUntrusted", "unknown_ca")]
    unknown_ca_target = stack.probed["unknown_ca"]  # the configured address: where the broker is
    assert (
        trust["summary"]
        == f"MQTT broker unknown_ca ({unknown_ca_target}): certificate not trusted (unknown_ca)"
    )
    assert "its certificate O=mqtt-cert-exporter lab,CN=unknown-ca (issued by" in trust["description"]
    assert "Fix: the chain does not lead to a CA the clients trust" in trust["description"]
    soon = texts[("MqttBrokerCertificateExpiringSoon", "expiring")]
    assert re.fullmatch(
        r"MQTT broker expiring \(127\.0\.0\.1:\d+\): certificate O=mqtt-cert-exporter lab,CN=expiring "
        r"expires in 19d 23h \d+m \d+s",
        soon["summary"],
    ), soon["summary"]


@pytest.mark.slow
def test_rules_evaluate_without_errors(stack: Stack) -> None:
    def evaluated() -> list[dict[str, Any]]:
        return [rule for group in stack.prometheus.api("/api/v1/rules")["groups"] for rule in group["rules"]]

    wait_for(lambda: all(rule.get("lastEvaluation", "").startswith("2") for rule in evaluated()))
    time.sleep(1.5)  # a few evaluations over real data (joins fail only on real series)
    for rule in evaluated():
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    names = {rule["name"] for rule in evaluated()}
    assert recorded() <= names
    # the thresholds the rules compare with are the exporter's, per broker (defaults 28 and 14 days)
    (warning,) = wait_for(
        lambda: stack.prometheus.query('mqtt_broker_cert_expiry_warning_threshold_seconds{broker="good"}')
    )
    assert float(warning["value"][1]) == 28 * 86400


def test_contract_is_read_from_the_docs() -> None:
    assert "mqtt_broker_cert_expires_in_seconds" in contract_metrics()
