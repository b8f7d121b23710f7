"""The alerting path end to end, as an on-call engineer meets it: real Mosquitto brokers, two exporter
processes (shards of one job; the first also answers /probe for one broker, watched in both modes),
Debian's Prometheus with the shipped prometheus/alerts.yml, Debian's Alertmanager with the shipped
deploy/compose/alertmanager.yml, and a webhook receiver (aiohttp, in this test) that records every
notification.

Time is scaled: every duration of the shipped files is divided by ``FACTOR`` (60), nothing else changes:
the rules' ``for`` and ``keep_firing_for`` (5m -> 5s, 15m -> 15s), the route's ``group_wait``,
``group_interval`` and ``repeat_interval`` (30s -> 0.5s, 5m -> 5s, 12h -> 12m) and the scrape and
evaluation interval of prometheus/prometheus.yml (30s -> 0.5s). Range selectors inside expressions
(``[1d]``) are not durations of the alerting path and stay. The route's receiver gets the webhook (the
shipped one has none). Prometheus's own flags (resend delay, for-grace-period) keep their defaults.

The first part checks what needs no processes: the route's shape, the dashboard against the rules.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives import hashes

from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Issued, Pki
from tests.conftest import ROOT, ExporterProcess, start_exporter, wait_for
from tests.test_prometheus import (
    DaemonProcess,
    PrometheusProcess,
    panel_expressions,
    panels,
    start_daemon,
    start_prometheus,
)
from tests.test_rules import ALERTS, alerts, load, metric_names

ROUTE = ROOT / "deploy" / "compose" / "alertmanager.yml"
SCRAPE_CONFIG = ROOT / "prometheus" / "prometheus.yml"
FACTOR = 60
FLEET_SIZE = 20
UTC = dt.UTC

# ==================================================================================================
# Without processes: the route and the dashboard agree with the rules


def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool is not installed: run `bash scripts/ensure-system-packages.sh` (make test does)")
    return path


def test_route_passes_amtool() -> None:
    result = subprocess.run(
        [amtool(), "check-config", str(ROUTE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_route_groups_by_shared_cause_and_never_by_mode() -> None:
    route = load(ROUTE)["route"]
    by_scope = {child["matchers"][0]: child["group_by"] for child in route["routes"]}
    assert by_scope == {
        'scope="certificate"': ["alertname", "fingerprint_sha256"],
        'scope="broker"': ["alertname", "target"],
        'scope="exporter"': ["alertname", "job"],
    }
    assert {alert["labels"]["scope"] for alert in alerts()} == {"certificate", "broker", "exporter"}
    for scope, group_by in by_scope.items():
        if "exporter" not in scope:
            # a broker seen in both modes has another job and broker label in each: same notification
            assert not {"job", "instance", "broker"} & set(group_by), scope


def test_dashboard_shows_every_family_an_alert_reads() -> None:
    shown = {name for _, expr in panel_expressions() for name in metric_names(expr)}
    # Prometheus's and the exporter's own liveness (Status > Targets shows them better than a panel),
    # and the configured probe interval: a parameter of the staleness rule, not a state to watch.
    not_families = {"up", "mqtt_cert_exporter_build_info", "mqtt_broker_probe_interval_seconds"}
    for alert in alerts():
        missing = metric_names(alert["expr"]) - shown - not_families
        assert not missing, f"{alert['alert']} reads {sorted(missing)}, which no panel shows"


def test_dashboard_has_no_hand_written_expiry_days() -> None:
    for panel in panels():
        if panel["type"] == "row":
            continue
        config = json.dumps(panel["fieldConfig"])
        exprs = " ".join(target["expr"] for target in panel["targets"])
        if "mqtt_broker_cert_expires_in_seconds" in exprs or "expires_in_seconds" in exprs:
            steps = [
                step["value"]
                for step in panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
                if step["value"] is not None
            ]
            if panel["fieldConfig"]["defaults"].get("unit") == "suffix: days":
                assert not steps, f"{panel['title']}: colours by fixed days {steps}"
            assert "86400 * " not in exprs and not re.search(r"[<>]=? ?\d+ \* 86400", exprs), panel["title"]
        assert '"value": 28' not in config and '"value": 14' not in config, panel["title"]


# ==================================================================================================
# Scaling the shipped files


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", duration)
    assert parts and "".join(f"{n}{u}" for n, u in parts) == duration, duration
    return sum(int(number) * _UNITS[unit] for number, unit in parts)


def scaled(duration: str) -> str:
    return f"{round(seconds(duration) * 1000 / FACTOR)}ms"


def test_scaling_divides_every_duration() -> None:
    assert [scaled(d) for d in ("5m", "15m", "1h", "30s", "12h")] == [
        "5000ms",
        "15000ms",
        "60000ms",
        "500ms",
        "720000ms",
    ]


def scaled_rules() -> dict[str, Any]:
    document: dict[str, Any] = load(ALERTS)
    for group in document["groups"]:
        for rule in group["rules"]:
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    rule[key] = scaled(rule[key])
    return document


def scaled_route(webhook_url: str) -> dict[str, Any]:
    document: dict[str, Any] = load(ROUTE)

    def scale(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            if key in route:
                route[key] = scaled(route[key])
        for child in route.get("routes", []):
            scale(child)

    scale(document["route"])
    (receiver,) = document["receivers"]
    receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    return document


# ==================================================================================================
# The parts


class Webhook:
    """An Alertmanager webhook receiver: every notification's JSON, in arrival order."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(10), "webhook receiver did not start"

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.notifications.append(body)
        return web.Response(text="ok")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/alerts", self._receive)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/alerts"
        self._ready.set()
        self._loop.run_forever()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.notifications)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def start_alertmanager(config: Path, workdir: Path) -> DaemonProcess:
    return start_daemon(
        ("prometheus-alertmanager", "alertmanager"),
        "prometheus-alertmanager",
        lambda port: [
            f"--config.file={config}",
            f"--storage.path={workdir / f'alertmanager-{port}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        workdir,
    )


@dataclass
class Brokers:
    """Mosquitto processes, the brokers' addresses by name, and the shared intermediate."""

    addresses: dict[str, str]
    fleet: list[str]
    stoppable: Mosquitto
    intermediate_fingerprint: str
    processes: list[Mosquitto] = field(default_factory=list)
    ca_file: Path = Path()


def start_brokers(directory: Path) -> Brokers:
    now = dt.datetime.now(UTC)
    pki = Pki(directory / "pki")
    root = pki.root("Alerting Root CA")
    intermediate = pki.intermediate("Alerting Intermediate CA", root)
    # one intermediate CA that expires in 10 days (under the default 14-day critical threshold), shared
    expiring_intermediate = pki.intermediate("Expiring Intermediate CA", root, days=10)
    other_root = pki.root("Unknown Root CA")

    def listener(name: str, leaf: Issued, *chain: Issued) -> Listener:
        return Listener(name, cert=leaf.chain_path(*chain), key=leaf.key_path)

    main = Mosquitto(
        [
            listener("good", pki.leaf("good", intermediate), intermediate),
            listener(
                "expiring",
                pki.leaf("expiring", intermediate, not_after=now + dt.timedelta(days=10)),
                intermediate,
            ),
            listener("unknown_ca", pki.leaf("unknown-ca", other_root)),
        ],
        directory / "mosquitto-main",
    )
    stoppable = Mosquitto(
        [
            listener(
                "expired",
                pki.leaf("expired", intermediate, not_after=now - dt.timedelta(days=3)),
                intermediate,
            )
        ],
        directory / "mosquitto-stoppable",
    )
    fleet_names = [f"fleet-{index:02d}" for index in range(FLEET_SIZE)]
    fleet = Mosquitto(
        [
            listener(name, pki.leaf(name, expiring_intermediate), expiring_intermediate)
            for name in fleet_names
        ],
        directory / "mosquitto-fleet",
    )
    brokers = Brokers({}, fleet_names, stoppable, "", ca_file=root.cert_path)
    for process in (main, stoppable, fleet):
        process.start()
        brokers.processes.append(process)
    for process, names in (
        (main, ["good", "expiring", "unknown_ca"]),
        (stoppable, ["expired"]),
        (fleet, fleet_names),
    ):
        for name in names:
            brokers.addresses[name] = process.address(name)
    brokers.intermediate_fingerprint = expiring_intermediate.cert.fingerprint(hashes.SHA256()).hex()
    return brokers


def exporter_config(brokers: Brokers, names: list[str], interval: str) -> str:
    lines = [
        "defaults:",
        f"  interval: {interval}",
        "  timeout: 1s",
        "  tls:",
        f"    ca_file: '{brokers.ca_file}'",
        "brokers:",
    ]
    for name in names:
        lines += [f"  - name: {name}", f"    address: '{brokers.addresses[name]}'"]
    lines += ["modules:", "  lab:", "    timeout: 1s", "    tls:", f"      ca_file: '{brokers.ca_file}'"]
    return "\n".join(lines) + "\n"


@dataclass
class Stack:
    brokers: Brokers
    scheduled: ExporterProcess  # good, expiring, expired, unknown_ca
    fleet: ExporterProcess  # the twenty brokers under the expiring intermediate
    prometheus: PrometheusProcess
    alertmanager: DaemonProcess
    webhook: Webhook

    def notified(self, alertname: str, status: str = "firing") -> list[dict[str, Any]]:
        """Every alert of that name and status, as sent in notifications (one entry per sending)."""
        return [
            alert
            for notification in self.webhook.received()
            for alert in notification["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["status"] == status
        ]

    def firing_in_prometheus(self) -> set[tuple[str, str]]:
        return {
            (alert["labels"]["alertname"], alert["labels"].get("broker", alert["labels"].get("instance", "")))
            for alert in self.prometheus.api("/api/v1/alerts")["alerts"]
            if alert["state"] == "firing"
        }


def instance(process: ExporterProcess) -> str:
    return process.url.removeprefix("http://")


def has_results(exporter: ExporterProcess, names: list[str]) -> bool:
    text = exporter.get("/metrics")
    return all(f'mqtt_broker_probe_timestamp_seconds{{broker="{name}"}}' in text for name in names)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("alerting-e2e")
    brokers = start_brokers(workdir)
    started: list[Any] = list(brokers.processes)
    webhook = Webhook()
    try:
        own = ["good", "expiring", "expired", "unknown_ca"]
        (workdir / "scheduled.yaml").write_text(exporter_config(brokers, own, "1s"))
        scheduled = start_exporter(
            workdir / "scheduled.yaml", workdir, r"--probe.allowed-target=127\.0\.0\.1:[0-9]+"
        )
        started.append(scheduled)
        (workdir / "fleet.yaml").write_text(exporter_config(brokers, brokers.fleet, "2s"))
        fleet = start_exporter(workdir / "fleet.yaml", workdir)
        started.append(fleet)
        # Prometheus starts once every broker has a result, so that alerts which start together fire
        # together, as they do at real time scales where a group_wait of 30 s covers a probe round.
        wait_for(lambda: has_results(scheduled, own) and has_results(fleet, brokers.fleet), timeout=30)

        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(scaled_route(webhook.url), sort_keys=False))
        alertmanager = start_alertmanager(workdir / "alertmanager.yml", workdir)
        started.append(alertmanager)
        (workdir / "alerts.yml").write_text(yaml.safe_dump(scaled_rules(), sort_keys=False))
        shipped = load(SCRAPE_CONFIG)["global"]
        (workdir / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {key: scaled(value) for key, value in shipped.items()},
                    "rule_files": [str(workdir / "alerts.yml")],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [alertmanager.url.removeprefix("http://")]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": "mqtt-cert-exporter",
                            "static_configs": [{"targets": [instance(scheduled), instance(fleet)]}],
                        },
                        # the expired broker is watched in both modes, as the compose demo does
                        {
                            "job_name": "mqtt-probe",
                            "metrics_path": "/probe",
                            "params": {"module": ["lab"]},
                            "static_configs": [{"targets": [brokers.addresses["expired"]]}],
                            "relabel_configs": [
                                {"source_labels": ["__address__"], "target_label": "__param_target"},
                                {"source_labels": ["__param_target"], "target_label": "instance"},
                                {"target_label": "__address__", "replacement": instance(scheduled)},
                            ],
                        },
                    ],
                },
                sort_keys=False,
            )
        )
        prometheus = start_prometheus(workdir / "prometheus.yml", workdir)
        started.append(prometheus)
        yield Stack(brokers, scheduled, fleet, prometheus, alertmanager, webhook)
    finally:
        for part in reversed(started):
            if isinstance(part, ExporterProcess) and part.process.poll() is None:
                os.kill(part.process.pid, signal.SIGCONT)  # a stopped process cannot terminate
            part.stop()
        webhook.stop()


def fired(stack: Stack, alertname: str, broker: str) -> list[dict[str, Any]]:
    return [alert for alert in stack.notified(alertname) if alert["labels"].get("broker") == broker]


@pytest.mark.slow
def test_the_alerting_path_end_to_end(stack: Stack) -> None:  # noqa: C901, PLR0915 - one scenario in order: the steps share a clock
    """One scenario in order (the steps share a clock): notify, survive a frozen exporter, keep
    certificate alerts through a broker outage, and tell which exporter died."""
    addresses = stack.brokers.addresses

    # 1. The bad brokers notify, with where they are, the runbook and the fix; the fleet's shared
    #    intermediate is ONE notification listing all twenty brokers; the good broker never notifies.
    expected = {
        ("MqttBrokerCertificateExpired", "expired"),
        ("MqttBrokerCertificateUntrusted", "unknown_ca"),
        ("MqttBrokerCertificateExpiryCritical", "expiring"),
    }
    fleet_alerts = "MqttBrokerCertificateExpiryCritical"

    def everything_notified() -> bool:
        fleet_brokers = {a["labels"]["broker"] for a in stack.notified(fleet_alerts)} & set(
            stack.brokers.fleet
        )
        return all(fired(stack, *pair) for pair in expected) and len(fleet_brokers) == FLEET_SIZE

    try:
        wait_for(everything_notified, timeout=60, interval=0.5)
    except AssertionError:
        pytest.fail(
            f"not every notification arrived: {json.dumps(stack.webhook.received(), indent=1)[:4000]}"
        )
    for alertname, broker in expected:
        (alert, *_) = fired(stack, alertname, broker)
        labels, annotations = alert["labels"], alert["annotations"]
        assert labels["target"] == addresses[broker], labels
        assert addresses[broker] in annotations["summary"]
        assert annotations["runbook_url"].endswith(f"/docs/runbooks/{alertname}.md")
        assert "Fix" in annotations["description"]
    (untrusted, *_) = fired(stack, "MqttBrokerCertificateUntrusted", "unknown_ca")
    assert untrusted["labels"]["problem"] == "unknown_ca"
    assert "Fix: the chain does not lead to a CA the clients trust" in untrusted["annotations"]["description"]

    shared = [
        notification
        for notification in stack.webhook.received()
        if notification["groupLabels"].get("fingerprint_sha256") == stack.brokers.intermediate_fingerprint
    ]
    assert len(shared) == 1, f"{len(shared)} notifications for one intermediate"
    (notification,) = shared
    assert notification["groupLabels"]["alertname"] == fleet_alerts
    assert {alert["labels"]["broker"] for alert in notification["alerts"]} == set(stack.brokers.fleet)
    assert {alert["labels"]["position"] for alert in notification["alerts"]} == {"1"}

    # The expired broker, watched in both modes (broker=<name> in one job, broker=<target> in the
    # other), is one group: both copies share the certificate, so they never page apart.
    def groups_of(alertname: str, target: str) -> dict[str, set[str]]:
        groups: dict[str, set[str]] = {}
        for notification in stack.webhook.received():
            for alert in notification["alerts"]:
                if alert["labels"]["alertname"] == alertname and alert["labels"]["target"] == target:
                    groups.setdefault(notification["groupKey"], set()).add(alert["labels"]["job"])
        return groups

    wait_for(
        lambda: (
            set().union(*groups_of("MqttBrokerCertificateExpired", addresses["expired"]).values())
            == {"mqtt-cert-exporter", "mqtt-probe"}
        ),
        timeout=20,
        interval=0.5,
    )
    assert len(groups_of("MqttBrokerCertificateExpired", addresses["expired"])) == 1

    def never_the_good_broker() -> None:
        for notification in stack.webhook.received():
            for alert in notification["alerts"]:
                assert alert["labels"].get("broker") != "good", alert
                assert alert["labels"].get("target") != addresses["good"], alert

    never_the_good_broker()

    # 2. The exporter frozen (SIGSTOP) for six scrape intervals: its series go stale, its alerts stay
    #    firing (keep_firing_for) and nothing is RESOLVED, not even two group intervals later.
    # At the scaled durations Prometheus may evaluate absent() before its first scrape of the
    # exporters: a start-up page that resolves on its own. Let it end (and its RESOLVED go out) first.
    wait_for(
        lambda: not stack.prometheus.query('ALERTS{alertname="MqttCertExporterAbsent"}'),
        timeout=60,
        interval=0.5,
    )
    if stack.notified("MqttCertExporterAbsent"):
        wait_for(lambda: stack.notified("MqttCertExporterAbsent", "resolved"), timeout=60, interval=0.5)
    before = len(stack.webhook.received())
    scrape_interval = seconds(scaled(load(SCRAPE_CONFIG)["global"]["scrape_interval"]))
    os.kill(stack.scheduled.process.pid, signal.SIGSTOP)
    try:
        time.sleep(6 * scrape_interval)
        stale = stack.prometheus.query(f'up{{instance="{instance(stack.scheduled)}"}} == 0')
    finally:
        os.kill(stack.scheduled.process.pid, signal.SIGCONT)
    assert stale, "the frozen exporter's scrapes failed"
    time.sleep(2 * seconds(scaled("5m")) + 2)  # two group intervals, and then some
    after = stack.webhook.received()[before:]
    assert not [
        n for n in after if n["status"] == "resolved" or any(a["status"] == "resolved" for a in n["alerts"])
    ], after
    assert {("MqttBrokerCertificateExpired", "expired")} <= stack.firing_in_prometheus()

    # 3. The expired broker stops while its alert fires, and one of the two exporters is killed.
    stack.brokers.stoppable.stop()
    stack.fleet.process.kill()
    stack.fleet.process.wait(10)
    wait_for(lambda: fired(stack, "MqttBrokerDown", "expired"), timeout=40, interval=0.5)
    (down, *_) = fired(stack, "MqttBrokerDown", "expired")
    assert down["labels"]["target"] == addresses["expired"]
    assert down["annotations"]["cause"] == "connect/refused"
    assert down["annotations"]["runbook_url"].endswith("/docs/runbooks/MqttBrokerDown.md")
    assert "Fix: check that the broker runs" in down["annotations"]["description"]
    assert not {"stage", "reason"} & set(down["labels"]), "the cause is no label: it may change"
    wait_for(
        lambda: (
            set().union(*groups_of("MqttBrokerDown", addresses["expired"]).values())
            == {"mqtt-cert-exporter", "mqtt-probe"}
        ),
        timeout=20,
        interval=0.5,
    )
    assert len(groups_of("MqttBrokerDown", addresses["expired"])) == 1, "both modes, one page"

    def liveness() -> list[dict[str, Any]]:
        return stack.notified("MqttCertExporterDown")

    wait_for(liveness, timeout=40, interval=0.5)
    assert {alert["labels"]["instance"] for alert in liveness()} == {instance(stack.fleet)}

    # Past keep_firing_for: the certificate alert of the stopped broker still fires (its last chain is
    # kept), and it was never resolved.
    time.sleep(seconds(scaled("15m")) + 1)
    assert ("MqttBrokerCertificateExpired", "expired") in stack.firing_in_prometheus()
    assert not [
        alert
        for alert in stack.notified("MqttBrokerCertificateExpired", "resolved")
        if alert["labels"]["broker"] == "expired"
    ]
    assert {alert["labels"]["instance"] for alert in liveness()} == {instance(stack.fleet)}
    never_the_good_broker()
