"""`mqtt-cert-exporter-healthcheck` (the image's HEALTHCHECK, Kubernetes exec probes) against a real
exporter: plain, behind --web.config.file TLS and basic auth, and with client certificates required."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import pytest

from mqtt_cert_exporter.healthcheck import loopback_target
from mqtt_cert_exporter.lab.ports import free_port
from mqtt_cert_exporter.web.webconfig import is_loopback
from tests.conftest import ExporterProcess, Lab, start_exporter

pytestmark = pytest.mark.slow


def healthcheck(process: ExporterProcess | None, *args: str) -> subprocess.CompletedProcess[str]:
    port = urllib.parse.urlsplit(process.url).port if process else free_port()
    command = [
        sys.executable,
        "-c",
        "from mqtt_cert_exporter.healthcheck import run; raise SystemExit(run())",
    ]
    return subprocess.run(
        [*command, f"--web.listen-address=:{port}", *args], capture_output=True, text=True, timeout=30
    )


@contextmanager
def secured_exporter(lab: Lab, directory: Path, client_auth: str) -> Iterator[ExporterProcess]:
    """An exporter behind --web.config.file: TLS, basic auth and ``client_auth``."""
    config = directory / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    web = web_config(lab, directory, client_auth, users=True)
    process = start_exporter(config, directory, f"--web.config.file={web}")
    try:
        yield process
    finally:
        process.stop()


def web_config(lab: Lab, directory: Path, client_auth: str, *, users: bool) -> Path:
    """Server certificate from the lab's server PKI; client certificates from its client CA."""
    server = lab.pki.leaf(f"healthcheck-web-{client_auth}", lab.intermediate)
    path = directory / "web.yml"
    lines = [
        "tls_server_config:",
        f"  cert_file: {server.chain_path(lab.intermediate)}",
        f"  key_file: {server.key_path}",
        f"  client_auth_type: {client_auth}",
        f"  client_ca_file: {lab.client_root.cert_path}",
    ]
    if users:
        hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
        lines += ["basic_auth_users:", f"  prometheus: '{hashed}'"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plain_exporter_is_healthy_and_ready(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(config, tmp_path)
    try:
        assert healthcheck(process).returncode == 0
        assert healthcheck(process, "--path=/-/ready").returncode == 0
        port = urllib.parse.urlsplit(process.url).port
        subcommand = [
            sys.executable,
            "-m",
            "mqtt_cert_exporter",
            "healthcheck",
            f"--web.listen-address=:{port}",
        ]
        assert subprocess.run(subcommand, capture_output=True, timeout=30).returncode == 0
    finally:
        process.stop()


def test_nothing_listening_is_unhealthy_with_the_reason() -> None:
    done = healthcheck(None)
    assert done.returncode == 1
    assert "unhealthy" in done.stderr and "refused" in done.stderr.lower()


def test_healthy_behind_tls_and_basic_auth_while_metrics_stay_protected(lab: Lab, tmp_path: Path) -> None:
    with secured_exporter(lab, tmp_path, "NoClientCert") as process:
        assert process.url.startswith("https://")
        done = healthcheck(process)
        assert done.returncode == 0, done.stderr
        assert healthcheck(process, "--path=/-/ready").returncode == 0
        # Only the two health paths are open to loopback: /metrics still wants the password.
        unverified = ssl.create_default_context()
        unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(process.url + "/metrics", context=unverified, timeout=5)


def test_client_certificates_required_needs_one(lab: Lab, tmp_path: Path) -> None:
    with secured_exporter(lab, tmp_path, "RequireAndVerifyClientCert") as process:
        refused = healthcheck(process)
        assert refused.returncode == 1 and "unhealthy" in refused.stderr
        done = healthcheck(
            process, f"--tls.cert-file={lab.client.cert_path}", f"--tls.key-file={lab.client.key_path}"
        )
        assert done.returncode == 0, done.stderr


def test_loopback_target() -> None:
    assert loopback_target(":9883") == ("127.0.0.1", 9883)
    assert loopback_target("0.0.0.0:1") == ("127.0.0.1", 1)
    assert loopback_target("[::]:9883") == ("::1", 9883)
    assert loopback_target("[::1]:9883") == ("::1", 9883)
    assert loopback_target("10.0.0.5:9883") == ("10.0.0.5", 9883)
    with pytest.raises(ValueError, match="expected \\[host\\]:port"):
        loopback_target("9883")


def test_only_loopback_peers_skip_basic_auth() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1") and not is_loopback("::ffff:10.0.0.1") and not is_loopback("fe80::1")
    assert not is_loopback(None) and not is_loopback("not an address")
