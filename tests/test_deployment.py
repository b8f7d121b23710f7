"""How users deploy the exporter: the shipped files, checked against each other and against the files and
flags they refer to.

What cannot run here (no Docker engine, no Kubernetes, no Grafana) is linted: the shipped scrape configs
(promtool), Grafana's provisioning, docker-compose.yml, the Dockerfile, the Kubernetes manifests
(`kubectl kustomize` when installed) and the systemd unit (`systemd-analyze` when installed). The compose
demo's certificate script, exporter config and Mosquitto config run for real, without Docker. The image
built and run: tests/test_image.py; the dashboard and a real Prometheus: tests/test_prometheus.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mqtt_cert_exporter.config import parse_config
from mqtt_cert_exporter.lab.mosquitto import mosquitto_binary
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.lab.ports import free_port, wait_for_port
from mqtt_cert_exporter.probe import Prober
from tests.conftest import ROOT, promtool
from tests.test_prometheus import DASHBOARD
from tests.test_rules import ALERTS, load

PROVISIONING = ROOT / "grafana" / "provisioning"
SCRAPE_CONFIGS = [
    ROOT / "prometheus" / "prometheus.yml",
    *sorted((ROOT / "prometheus" / "examples").glob("*.yml")),
]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SYSTEMD_UNIT = ROOT / "deploy" / "systemd" / "mqtt-cert-exporter.service"
CONFIG_PATH = "/etc/mqtt-cert-exporter/config.yaml"


def load_all_yaml(path: Path) -> list[Any]:
    return [document for document in yaml.safe_load_all(path.read_text(encoding="utf-8")) if document]


# ==================================================================================================
# Scrape configs


@pytest.mark.parametrize("path", SCRAPE_CONFIGS, ids=lambda path: path.name)
def test_promtool_check_config(path: Path) -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_shipped_configs_load_the_shipped_rules() -> None:
    for path in SCRAPE_CONFIGS:
        config = load(path)
        assert [(path.parent / rule).resolve() for rule in config["rule_files"]] == [ALERTS.resolve()]


def probe_job(config: dict[str, Any]) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = [
        job for job in config["scrape_configs"] if job.get("metrics_path") == "/probe"
    ]
    (job,) = jobs
    return job


@pytest.mark.parametrize(
    "path", [path for path in SCRAPE_CONFIGS if "/probe" in path.read_text()], ids=lambda path: path.name
)
def test_probe_jobs_relabel_like_blackbox(path: Path) -> None:
    config = load(path)
    job = probe_job(config)
    steps = job["relabel_configs"]
    assert steps[0] == {"source_labels": ["__address__"], "target_label": "__param_target"}
    assert steps[1] == {"source_labels": ["__param_target"], "target_label": "instance"}
    assert any(step.get("target_label") == "__address__" for step in steps)
    assert job["params"]["module"], "a module is named"
    assert any(other.get("metrics_path", "/metrics") == "/metrics" for other in config["scrape_configs"]), (
        "the exporter's own /metrics is scraped too (MqttCertExporterAbsent, the Exporter row)"
    )


def test_sharded_example_uses_hashmod() -> None:
    job = probe_job(load(ROOT / "prometheus" / "examples" / "multi-target-sharded.yml"))
    actions = [step.get("action") for step in job["relabel_configs"]]
    assert actions.count("hashmod") == 2 and "keep" in actions


# ==================================================================================================
# Grafana's provisioning


def test_provisioning_points_at_the_dashboard() -> None:
    (provider,) = load(PROVISIONING / "dashboards" / "mqtt-cert-exporter.yml")["providers"]
    assert provider["type"] == "file"
    (datasource,) = load(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    grafana = load(COMPOSE)["services"]["grafana"]
    mounts = dict(volume.rsplit(":", 1)[0].split(":", 1) for volume in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


# ==================================================================================================
# docker-compose.yml, the Dockerfile


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load(COMPOSE)
    return loaded


def test_compose_parses_and_every_file_it_mounts_exists() -> None:
    document = compose()
    services = document["services"]
    assert set(services) >= {"exporter", "mosquitto", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        assert service.get("image"), name
        if "build" in service:
            assert (ROOT / service["build"]["context"] / "Dockerfile").is_file()
            assert "BASE_IMAGE" in service["build"]["args"], "the Dockerfile's base has no default"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in document["volumes"], f"{name}: undeclared volume {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_compose_services_agree_with_each_other() -> None:
    services = compose()["services"]
    prometheus_config = load(ROOT / "prometheus" / "prometheus.yml")
    # Prometheus reads prometheus/prometheus.yml, which loads alerts.yml next to it.
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    targets = {
        target
        for job in prometheus_config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert "exporter:9883" in targets
    assert prometheus_config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    # The exporter allows exactly the targets of the /probe job, and knows its module.
    exporter = services["exporter"]
    (pattern,) = [
        arg.split("=", 1)[1] for arg in exporter["command"] if arg.startswith("--probe.allowed-target")
    ]
    job = probe_job(prometheus_config)
    probe_targets = [target for static in job["static_configs"] for target in static["targets"]]
    assert probe_targets and all(re.fullmatch(pattern, target) for target in probe_targets)
    assert not re.fullmatch(pattern, "10.0.0.1:22")
    exporter_config = load(ROOT / "deploy" / "compose" / "exporter.yaml")
    assert set(job["params"]["module"]) <= set(exporter_config["modules"])
    assert f"./deploy/compose/exporter.yaml:{CONFIG_PATH}:ro" in exporter["volumes"]
    mosquitto_ports = re.findall(
        r"^listener (\d+)", (ROOT / "deploy/compose/mosquitto.conf").read_text(), re.M
    )
    assert {f"mosquitto:{port}" for port in mosquitto_ports} == set(probe_targets)
    assert {broker["address"] for broker in exporter_config["brokers"]} == set(probe_targets)
    alertmanager = load(ROOT / "deploy" / "compose" / "alertmanager.yml")
    assert alertmanager["route"]["receiver"] in {receiver["name"] for receiver in alertmanager["receivers"]}


@dataclass
class Instruction:
    keyword: str
    arguments: str


def dockerfile() -> list[Instruction]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def instruction(keyword: str) -> list[str]:
    return [item.arguments for item in dockerfile() if item.keyword == keyword]


def test_dockerfile_base_is_a_build_arg_with_no_default_and_no_syntax_line() -> None:
    # A floating default (python:3.11-slim) needs a registry; a `# syntax=` line makes BuildKit fetch
    # a frontend image. Neither works where no registry is reachable (tests/test_image.py builds it).
    assert "BASE_IMAGE" in instruction("ARG")
    stages = instruction("FROM")
    assert len(stages) == 2 and all(stage.startswith("${BASE_IMAGE}") for stage in stages)
    assert not re.search(r"^#\s*syntax=", DOCKERFILE.read_text(), re.M | re.I)
    assert any("--from=build" in copy for copy in instruction("COPY"))


def test_dockerfile_installs_the_locked_dependencies_before_the_code() -> None:
    steps = [f"{item.keyword} {item.arguments}" for item in dockerfile()]
    lock = next(i for i, step in enumerate(steps) if step.startswith("COPY requirements.lock"))
    install = next(i for i, step in enumerate(steps) if "--require-hashes" in step)
    code = next(i for i, step in enumerate(steps) if step.startswith("COPY exporter"))
    assert lock < install < code
    assert "--requirement /src/requirements.lock" in steps[install]
    assert "--no-deps" in steps[install], "every package, setuptools included, comes from the lock"


def test_dockerfile_runs_as_non_root_with_config_healthcheck_and_labels() -> None:
    (user,) = instruction("USER")
    assert user.split(":")[0] not in ("0", "root")
    assert instruction("EXPOSE") == ["9883"]
    (healthcheck,) = instruction("HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command[0] in scripts, "the HEALTHCHECK runs a command the package installs"
    labels = " ".join(instruction("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    (entrypoint,) = instruction("ENTRYPOINT")
    assert json.loads(entrypoint) == ["mqtt-cert-exporter"] and "mqtt-cert-exporter" in scripts
    (command,) = instruction("CMD")
    assert f"--config.file={CONFIG_PATH}" in json.loads(command)


def test_image_default_config_probes_nothing() -> None:
    (copy,) = [copy for copy in instruction("COPY") if copy.endswith(CONFIG_PATH)]
    config = parse_config((ROOT / copy.split()[0]).read_text(), base_dir=str(ROOT))
    assert config.brokers == () and config.modules == ()


def test_dockerfile_copies_what_exists_and_dockerignore_lets_it_in() -> None:
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")]
    for copy in instruction("COPY"):
        if copy.startswith("--from"):
            continue
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source in allowed, f".dockerignore keeps {source} out of the build context"
    for name in allowed:
        assert (ROOT / name).exists(), name


# ==================================================================================================
# Kubernetes


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for document in load_all_yaml(path):
            if document.get("kind") == "Kustomization":
                continue
            assert document.get("apiVersion") and document.get("kind"), path
            assert document["metadata"].get("name"), path
            found[document["kind"]] = document
    return found


def test_kubernetes_manifests_are_complete() -> None:
    kinds = manifests()
    assert set(kinds) >= {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "Probe", "ConfigMap"}
    kustomization = load(KUBERNETES / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_kubernetes_objects_refer_to_each_other() -> None:
    kinds = manifests()
    deployment, service = kinds["Deployment"], kinds["Service"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    port_names = {port["name"] for port in container["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    monitor = kinds["ServiceMonitor"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    service_ports = {port["name"]: port["port"] for port in service["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= set(service_ports)
    # Health probes: the package's healthcheck command, which works behind basic auth and TLS.
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    liveness, readiness = (
        container["livenessProbe"]["exec"]["command"],
        container["readinessProbe"]["exec"]["command"],
    )
    assert liveness == ["mqtt-cert-exporter-healthcheck"] and liveness[0] in scripts
    assert readiness == ["mqtt-cert-exporter-healthcheck", "--path=/-/ready"]
    # The hardened pod.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The config file the args name is the ConfigMap mounted there.
    assert f"--config.file={CONFIG_PATH}" in container["args"]
    directory, file_name = CONFIG_PATH.rsplit("/", 1)
    (config_mount,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == directory]
    assert "subPath" not in config_mount, "a subPath mount never sees ConfigMap updates"
    (config_volume,) = [volume for volume in pod["spec"]["volumes"] if volume["name"] == config_mount["name"]]
    assert config_volume["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert file_name in kinds["ConfigMap"]["data"]
    # The Probe goes through the Service, and the exporter allows every target it names.
    probe = kinds["Probe"]["spec"]
    namespace = load(KUBERNETES / "kustomization.yaml")["namespace"]
    name = service["metadata"]["name"]
    assert probe["prober"]["url"] == f"{name}.{namespace}.svc:{service_ports['http-metrics']}"
    assert probe["prober"]["path"] == "/probe"
    patterns = [
        arg.split("=", 1)[1] for arg in container["args"] if arg.startswith("--probe.allowed-target=")
    ]
    for target in probe["targets"]["staticConfig"]["static"]:
        assert any(re.fullmatch(pattern, target) for pattern in patterns), target
    configured = load_yaml_text(kinds["ConfigMap"]["data"]["config.yaml"])
    assert probe["module"] in configured["modules"]


def test_kubernetes_secret_is_required_while_the_config_reads_it() -> None:
    kinds = manifests()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = kinds["ConfigMap"]["data"]["config.yaml"]
    for volume in pod["volumes"]:
        if "secret" not in volume:
            continue
        (mount,) = [mount for mount in container["volumeMounts"] if mount["name"] == volume["name"]]
        if mount["mountPath"] + "/" in config:
            assert volume["secret"].get("optional") is False, (
                f"the config reads files from {mount['mountPath']}: an optional Secret would start the pod "
                "and crash-loop it; a required one keeps it pending with a clear event"
            )


def test_kubernetes_instance_label_survives_rollouts() -> None:
    (endpoint,) = manifests()["ServiceMonitor"]["spec"]["endpoints"]
    relabelings = endpoint["relabelings"]
    (instance,) = [rule for rule in relabelings if rule.get("targetLabel") == "instance"]
    # Neither source changes when a rollout replaces the pod (its IP and name do).
    assert instance["sourceLabels"] == ["__meta_kubernetes_namespace", "__meta_kubernetes_service_name"]
    assert {"action": "labeldrop", "regex": "pod"} in relabelings
    assert manifests()["Deployment"]["spec"]["replicas"] == 1


def test_kubernetes_memory_request_covers_the_measured_rss() -> None:
    (container,) = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]

    def mebibytes(quantity: str) -> int:
        assert quantity.endswith("Mi"), quantity
        return int(quantity.removesuffix("Mi"))

    # docs/deployment.md "Sizing": 74 MB RSS at 1,000 brokers, ~23 MB for a running probe command;
    # 227 MB peak at 10,000 brokers.
    assert mebibytes(resources["requests"]["memory"]) * 1.048576 >= 74 + 23
    assert mebibytes(resources["limits"]["memory"]) * 1.048576 >= 227 + 23


def load_yaml_text(text: str) -> Any:
    return yaml.safe_load(text)


def test_kubernetes_config_is_a_valid_exporter_config(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    root = Pki(tmp_path / "pki").root("Example CA")
    shutil.copyfile(root.cert_path, secrets / "ca.crt")
    (secrets / "mqtt-password").write_text("example\n")
    text = manifests()["ConfigMap"]["data"]["config.yaml"].replace(
        "/run/secrets/mqtt-cert-exporter/", f"{secrets}/"
    )
    assert str(secrets) in text
    config = parse_config(text, base_dir=str(tmp_path))
    assert config.brokers and config.module("default") is not None


def test_kustomize_renders() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [document for document in yaml.safe_load_all(result.stdout) if document]
    assert {document["kind"] for document in rendered} == set(manifests())
    assert all(document["metadata"]["namespace"] == "monitoring" for document in rendered)
    (deployment,) = [document for document in rendered if document["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/mqtt-cert-exporter:0.1.0"


# ==================================================================================================
# systemd


def unit() -> str:
    return SYSTEMD_UNIT.read_text(encoding="utf-8")


def test_systemd_unit_is_hardened_and_reloadable() -> None:
    text = unit()
    for setting in (
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert setting in text, setting
    assert f"--config.file={CONFIG_PATH}" in text and "--config.check" in text


def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The binary is not installed here: point the unit at one that exists, keep everything else.
    copy = tmp_path / SYSTEMD_UNIT.name
    copy.write_text(unit().replace("/opt/mqtt-cert-exporter/bin/mqtt-cert-exporter", "/bin/true"))
    verify = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=true", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert match, security.stdout + security.stderr
    assert float(match[1]) <= 2.0, "systemd rates the unit at most 2.0 (OK)"


# ==================================================================================================
# The compose demo without Docker: its certificates, its exporter config and its Mosquitto config, real


@pytest.mark.slow
def test_compose_demo_parts_work(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    made = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "compose" / "make-certs.py"), str(certs)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert {path.name for path in certs.iterdir()} == {
        "ca.pem",
        "good.pem",
        "good.key",
        "expiring.pem",
        "expiring.key",
    }

    binary = mosquitto_binary()
    assert binary is not None
    ports: dict[str, int] = {}

    def listener(match: re.Match[str]) -> str:
        ports[match[1]] = free_port()
        return f"listener {ports[match[1]]} 127.0.0.1"

    conf = re.sub(
        r"^listener (\d+)$", listener, (ROOT / "deploy/compose/mosquitto.conf").read_text(), flags=re.M
    )
    conf = conf.replace("/certs/", f"{certs}/")
    if os.geteuid() == 0:
        conf = "user root\n" + conf
    (tmp_path / "mosquitto.conf").write_text(conf)
    broker = subprocess.Popen(
        [binary, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        for port in ports.values():
            wait_for_port("127.0.0.1", port, 10)
        text = (ROOT / "deploy/compose/exporter.yaml").read_text().replace("/certs/", f"{certs}/")
        for original, port in ports.items():
            text = text.replace(f"mosquitto:{original}", f"localhost:{port}")
        config = parse_config(text, base_dir=str(tmp_path))
        prober = Prober()
        results = {broker.name: asyncio.run(prober.probe(broker)) for broker in config.brokers}
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(10)
    assert all(result.success for result in results.values()), results
    expiring = results["mosquitto-expiring"].tls
    assert expiring is not None
    assert 9.9 < (expiring.chain[0].not_after - time.time()) / 86400 <= 10
