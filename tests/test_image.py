"""The container image, built from the project's Dockerfile and run for real.

Debian's docker.io (started here as root when no engine runs), a base image built from Debian packages
(no registry is reachable), the legacy builder. The image runs as non-root with a read-only root file
system and no capabilities, probes a real Mosquitto on the host, turns healthy with its own
HEALTHCHECK command (also behind --web.config.file TLS and basic auth), reloads on SIGHUP, says when a
single-file mount hides a replaced config, stops on SIGTERM with exit 0, and `--version` and `check`
work in it. Skipped, saying why, when no engine can run here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto, mosquitto_binary
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.lab.ports import free_port
from tests.conftest import wait_for
from tests.lab.container import ROOT, Unavailable, base_image, build_image, docker, engine

pytestmark = [
    pytest.mark.slow,
    # One worker owns the engine (it may start dockerd) and the image.
    pytest.mark.xdist_group("image"),
    pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed"),
]

TAG = "mqtt-cert-exporter:test"
CONFIG_DIR = "/etc/mqtt-cert-exporter"
WEB_USER, WEB_PASSWORD = "prometheus", "scrape-the-container"
#: `docker stop -t` grace: an exporter that ignored SIGTERM would be killed and exit 137, not 0.
STOP_GRACE = "10"


def git(*args: str) -> str:
    if shutil.which("git") is None:
        return ""
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


# The session, not the module: a worker may run this module's tests between other modules' (xdist
# loadgroup keeps them on one worker, not together), and a module fixture then stopped dockerd and started
# it again between them; one test found the engine gone between two docker runs (3 CI runs here).
@pytest.fixture(scope="session")
def image() -> Iterator[str]:
    with ExitStack() as stack:
        try:
            stack.enter_context(engine())
            base = base_image()
        except Unavailable as exc:
            pytest.skip(f"no container engine can run here: {exc}")
        build_image(
            TAG, base, [f"REVISION={git('rev-parse', 'HEAD')}", f"BRANCH={git('branch', '--show-current')}"]
        )
        yield TAG


@dataclass
class HostBroker:
    address: str
    root: Issued
    server: Issued  # the exporter's own HTTPS certificate (--web.config.file)


@pytest.fixture(scope="module")
def host_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostBroker]:
    directory = tmp_path_factory.mktemp("image-broker")
    pki = Pki(directory / "pki")
    root = pki.root("Image Test Root")
    leaf = pki.leaf("image-broker", root)
    with Mosquitto(
        [Listener("tls", cert=leaf.cert_path, key=leaf.key_path)], directory / "mosquitto"
    ) as broker:
        yield HostBroker(broker.address("tls"), root, pki.leaf("image-exporter-web", root))


@dataclass
class Container:
    name: str

    def inspect(self, template: str) -> str:
        return docker("inspect", "--format", template, self.name).stdout.strip()

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *command, check=False)

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            status = self.inspect("{{.State.Health.Status}}")
            assert self.inspect("{{.State.Running}}") == "true", self.logs()
            return status == "healthy"

        wait_for(healthy, timeout=60)

    def stop(self) -> int:
        docker("stop", "-t", STOP_GRACE, self.name, timeout=60)
        return int(self.inspect("{{.State.ExitCode}}"))


@pytest.fixture
def run(image: str) -> Iterator[Callable[..., Container]]:
    started: list[Container] = []

    def start(*options: str, args: tuple[str, ...] = ()) -> Container:
        name = f"mqtt-cert-exporter-test-{os.getpid()}-{len(started)}"
        docker("rm", "-f", name, check=False)
        docker(
            "run", "--detach", f"--name={name}", "--read-only", "--cap-drop=ALL", "--health-interval=1s",
            *options, image, *args,
        )  # fmt: skip
        started.append(Container(name))
        return started[-1]

    yield start
    for container in started:
        docker("rm", "-f", container.name, check=False)


def config_directory(path: Path, broker: HostBroker, *names: str) -> Path:
    """A directory to mount over /etc/mqtt-cert-exporter, readable by the image's uid 10001."""
    path.mkdir(mode=0o755, exist_ok=True)
    path.chmod(0o755)
    for name, issued in (("ca", broker.root), ("web", broker.server)):
        shutil.copyfile(issued.cert_path, path / f"{name}.crt")
        shutil.copyfile(issued.key_path, path / f"{name}.key")
    write_by_rename(path / "config.yaml", broker_config(broker, *names))
    hashed = bcrypt.hashpw(WEB_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (path / "web.yml").write_text(
        f"tls_server_config:\n  cert_file: web.crt\n  key_file: web.key\nbasic_auth_users:\n  {WEB_USER}: '{hashed}'\n"
    )
    for file in path.iterdir():
        file.chmod(0o644)
    return path


def broker_config(broker: HostBroker, *names: str) -> str:
    lines = ["defaults: {interval: 2s, timeout: 2s}", "brokers:"]
    for name in names:
        lines.append(
            f"  - {{name: {name}, address: '{broker.address}', tls: {{ca_file: {CONFIG_DIR}/ca.crt}}}}"
        )
    return "\n".join(lines) + "\n"


def write_by_rename(path: Path, text: str) -> None:
    """What editors and `sed -i` do: a new file renamed over the old one (a new inode)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    fresh.chmod(0o644)
    os.replace(fresh, path)


def scrape(port: int, broker: HostBroker) -> str:
    context = ssl.create_default_context(cafile=str(broker.root.cert_path))
    request = urllib.request.Request(f"https://localhost:{port}/metrics")
    token = base64.b64encode(f"{WEB_USER}:{WEB_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        return str(response.read().decode())


def test_default_image_runs_as_non_root_probes_nothing_and_stops_cleanly(
    run: Callable[..., Container],
) -> None:
    container = run("--network=none")  # the image's own CMD, config and HEALTHCHECK
    container.wait_healthy()
    assert container.inspect("{{.Config.User}}") == "10001:10001"
    assert container.exec("id", "-u").stdout.strip() == "10001"
    metrics = container.exec(
        "python", "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9883/metrics').read().decode())"
    ).stdout  # fmt: skip
    assert re.search(r"^mqtt_cert_exporter_brokers 0\.0$", metrics, re.M), metrics
    (build,) = re.findall(r"^mqtt_cert_exporter_build_info\{(.*)\} 1\.0$", metrics, re.M)
    if git("rev-parse", "HEAD"):
        assert f'revision="{git("rev-parse", "HEAD")}"' in build
    assert container.stop() == 0, container.logs()
    assert "shutting down" in container.logs()


def test_probes_a_host_broker_behind_tls_and_basic_auth_healthy_and_reloads(
    run: Callable[..., Container], host_broker: HostBroker, tmp_path: Path
) -> None:
    directory = config_directory(tmp_path / "config", host_broker, "host-broker")
    port = free_port()
    container = run(
        "--network=host",
        f"--volume={directory}:{CONFIG_DIR}:ro",
        f"--health-cmd=mqtt-cert-exporter-healthcheck --web.listen-address=127.0.0.1:{port}",
        args=(
            f"--config.file={CONFIG_DIR}/config.yaml",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.config.file={CONFIG_DIR}/web.yml",
        ),
    )
    container.wait_healthy()  # with TLS and basic auth on
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(
            f"https://localhost:{port}/metrics",
            context=ssl.create_default_context(cafile=str(host_broker.root.cert_path)),
            timeout=5,
        )
    wait_for(lambda: 'mqtt_broker_probe_success{broker="host-broker"} 1.0' in scrape(port, host_broker))

    write_by_rename(directory / "config.yaml", broker_config(host_broker, "host-broker", "added-on-reload"))
    docker("kill", "--signal=HUP", container.name)
    wait_for(lambda: 'mqtt_broker_probe_success{broker="added-on-reload"} 1.0' in scrape(port, host_broker))
    assert "mqtt_cert_exporter_config_last_reload_successful 1.0" in scrape(port, host_broker)
    assert container.stop() == 0, container.logs()


def test_a_replaced_single_file_mount_fails_the_reload_and_says_why(
    run: Callable[..., Container], host_broker: HostBroker, tmp_path: Path
) -> None:
    directory = config_directory(tmp_path / "config", host_broker)
    container = run("--network=none", f"--volume={directory / 'config.yaml'}:{CONFIG_DIR}/config.yaml:ro")
    container.wait_healthy()
    write_by_rename(directory / "config.yaml", "defaults: {interval: 5s}\nbrokers: []\n")
    docker("kill", "--signal=HUP", container.name)
    wait_for(lambda: "configuration not reloaded" in container.logs())
    assert "Mount the directory" in container.logs()
    metrics = container.exec(
        "python", "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9883/metrics').read().decode())"
    ).stdout  # fmt: skip
    assert "mqtt_cert_exporter_config_last_reload_successful 0.0" in metrics
    assert container.stop() == 0, container.logs()


def test_version_and_check_work_in_the_image(image: str, host_broker: HostBroker, tmp_path: Path) -> None:
    version = docker(
        "run", "--rm", "--read-only", "--cap-drop=ALL", "--network=none", image, "--version"
    ).stdout
    assert version.startswith("mqtt-cert-exporter, version ")
    assert "python version:" in version and "openssl version:  OpenSSL" in version
    if git("rev-parse", "HEAD"):
        assert f"revision: {git('rev-parse', 'HEAD')}" in version

    directory = config_directory(tmp_path / "config", host_broker, "host-broker")
    checked = docker(
        "run", "--rm", "--read-only", "--cap-drop=ALL", "--network=host", f"--volume={directory}:{CONFIG_DIR}:ro",
        image, "check", host_broker.address, f"--ca-file={CONFIG_DIR}/ca.crt", "--output=json",
        check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert json.loads(checked.stdout)
