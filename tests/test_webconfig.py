"""--web.config.file: the exporter's own endpoint over real HTTPS, mTLS and basic auth."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from mqtt_cert_exporter.config import ConfigError
from mqtt_cert_exporter.web.webconfig import parse_web_config
from tests.conftest import ROOT, ExporterProcess, Lab, start_exporter

WEB_PASSWORD = "scrape-me-please"


def get(url: str, *, context: ssl.SSLContext, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def secured(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExporterProcess, Path]]:
    workdir = tmp_path_factory.mktemp("web")
    server = lab.pki.leaf("exporter-web", lab.intermediate)
    hashed = bcrypt.hashpw(WEB_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = workdir / "web.yml"
    web_config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {server.chain_path(lab.intermediate)}\n"
        f"  key_file: {server.key_path}\n"
        "  client_auth_type: VerifyClientCertIfGiven\n"
        f"  client_ca_file: {lab.client_root.cert_path}\n"
        "  min_version: TLS12\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    config = workdir / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(config, workdir, f"--web.config.file={web_config}")
    try:
        yield process, workdir
    finally:
        process.stop()


def client_context(lab: Lab, *, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(lab.root.cert_path))
    if with_cert:
        context.load_cert_chain(lab.client.cert_path, lab.client.key_path)
    return context


def test_https_with_basic_auth(lab: Lab, secured: tuple[ExporterProcess, Path]) -> None:
    process, _ = secured
    assert process.url.startswith("https://")
    url = process.url.replace("127.0.0.1", "localhost") + "/metrics"
    context = client_context(lab)
    assert get(url, context=context, user="prometheus", password=WEB_PASSWORD) == 200
    assert get(url, context=context, user="prometheus", password="wrong") == 401
    assert get(url, context=context, user="nobody", password=WEB_PASSWORD) == 401
    assert get(url, context=context) == 401
    assert (
        get(url, context=client_context(lab, with_cert=True), user="prometheus", password=WEB_PASSWORD) == 200
    )
    assert WEB_PASSWORD not in process.log()


def test_plain_http_is_not_served(secured: tuple[ExporterProcess, Path]) -> None:
    process, _ = secured
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(process.url.replace("https://", "http://") + "/metrics", timeout=5)


def test_mtls_required(lab: Lab, tmp_path: Path) -> None:
    server = lab.pki.leaf("exporter-web-mtls", lab.intermediate)
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {server.chain_path(lab.intermediate)}\n"
        f"  key_file: {server.key_path}\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        f"  client_ca_file: {lab.client_root.cert_path}\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(config, tmp_path, f"--web.config.file={web_config}")
    try:
        url = process.url.replace("127.0.0.1", "localhost") + "/-/healthy"
        assert get(url, context=client_context(lab, with_cert=True)) == 200
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            get(url, context=client_context(lab))
    finally:
        process.stop()


def test_invalid_web_config_is_rejected_at_start(tmp_path: Path) -> None:
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n  client_auth_type: Sometimes\n"
        "basic_auth_users:\n  alice: plaintext-password\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text("brokers: []\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtt_cert_exporter",
            f"--config.file={config}",
            f"--web.config.file={web_config}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 1
    for expected in ("tls_server_config.cert_file", "client_auth_type", "basic_auth_users.alice"):
        assert expected in result.stderr
    assert "plaintext-password" not in result.stderr


def test_parse_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="colour: unknown key"):
        parse_web_config({"colour": "red"}, base_dir="/")


async def test_no_users_means_no_auth() -> None:
    assert await parse_web_config({}, base_dir="/").auth.allows(None)


def test_long_passwords_and_junk_credentials_are_401_never_500(
    lab: Lab, secured: tuple[ExporterProcess, Path]
) -> None:
    process, _ = secured
    url = process.url.replace("127.0.0.1", "localhost") + "/metrics"
    context = client_context(lab)
    assert get(url, context=context, user="prometheus", password="x" * 100) == 401
    assert get(url, context=context, user="nobody", password="x" * 100) == 401
    assert get(url, context=context, user="prometheus", password=WEB_PASSWORD + "\0") == 401
    assert get(url, context=context, user="prometheus", password=WEB_PASSWORD) == 200
    assert "Traceback" not in process.log()
