"""Issue 7 in the configuration: ``tls.served_cert_file`` (a file relative to the config, kept as
configured so that a re-pointed symlink is followed), ``discover`` making a broker of every TLS listener
of a mosquitto.conf (with its own timeout and tls settings, a name prefix, names that must not clash
with the configured brokers, and its errors), and TLS files OpenSSL cannot use reported as config
errors. The mosquitto.conf parser itself, and a real Mosquitto started from such a file, are in
tests/test_discover.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

from mqtt_cert_exporter.config import BrokerConfig, MqttSettings, Target, TlsSettings
from tests.config_helpers import errors, parse, write_pems

# --- issue 7: tls.served_cert_file and discover -------------------------------------------------


def test_served_cert_file_is_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "live").mkdir()
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "cert1.pem").write_text("x")
    (tmp_path / "live" / "cert.pem").symlink_to("../archive/cert1.pem")
    config = parse(
        """
        brokers:
          - name: a
            address: a
            tls: {served_cert_file: live/cert.pem}
        """,
        tmp_path,
    )
    # kept as configured (the symlink is followed at every probe, as certbot renews by re-pointing it)
    assert config.brokers[0].tls.served_cert_file == str(tmp_path / "live" / "cert.pem")


def test_served_cert_file_errors(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    problems = errors(
        """
        brokers:
          - {name: a, address: a, tls: {served_cert_file: missing.pem}}
          - {name: b, address: b, tls: {served_cert_file: dir}}
          - {name: c, address: c, tls: {served_cert_file: 42}}
        """,
        tmp_path,
    )
    assert problems == [
        f"brokers[0].tls.served_cert_file: {tmp_path}/missing.pem: no such file",
        f"brokers[1].tls.served_cert_file: {tmp_path}/dir: not a regular file",
        "brokers[2].tls.served_cert_file: expected a string, got a number; put it in quotes",
    ]


def _mosquitto_conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mosquitto.conf"
    path.write_text(textwrap.dedent(text))
    return path


def test_discover_makes_a_broker_of_every_tls_listener(tmp_path: Path) -> None:
    (tmp_path / "server.crt").write_text("not a certificate: server_name stays the default")
    _mosquitto_conf(
        tmp_path,
        f"""
        listener 1883
        listener 8883
        certfile {tmp_path}/server.crt
        keyfile {tmp_path}/server.key
        listener 8884 0.0.0.0
        protocol websockets
        certfile {tmp_path}/server.crt
        """,
    )
    (tmp_path / "ca.pem").write_text("x")
    config = parse(
        """
        defaults:
          interval: 30s
          mqtt: {username: monitor}
        discover:
          mosquitto_conf: mosquitto.conf
          timeout: 2s
          tls: {ca_file: ca.pem}
        brokers:
          - {name: remote, address: remote.example.com}
        """,
        tmp_path,
    )
    assert [broker.name for broker in config.brokers] == ["remote", "mosquitto-8883", "mosquitto-8884"]
    remote, plain, ws = config.brokers
    assert remote.tls.ca_file is None and remote.timeout == 10.0  # discover's settings are its own
    assert plain == BrokerConfig(
        name="mosquitto-8883",
        target=Target("localhost", 8883),
        interval=30.0,
        timeout=2.0,
        tls=TlsSettings(ca_file=str(tmp_path / "ca.pem"), served_cert_file=str(tmp_path / "server.crt")),
        mqtt=MqttSettings(username="monitor"),
        broker_kind="mosquitto",  # what discovery found
    )
    assert ws.address == "wss://127.0.0.1:8884/mqtt"


def test_discover_name_prefix(tmp_path: Path) -> None:
    _mosquitto_conf(tmp_path, "listener 8883\ncertfile /etc/mosquitto/server.crt\n")
    config = parse("discover: {mosquitto_conf: mosquitto.conf, name_prefix: edge}", tmp_path)
    assert [broker.name for broker in config.brokers] == ["edge-8883"]


def test_discover_errors(tmp_path: Path) -> None:
    _mosquitto_conf(
        tmp_path,
        """
        listener 8883
        certfile /etc/mosquitto/a.crt
        listener eighty
        listener 8884
        certfile /etc/mosquitto/b.crt
        """,
    )
    problems = errors(
        """
        discover:
          mosquitto_conf: mosquitto.conf
          name_prefix: "two words"
          dns: x
          timeout: 0s
          tls: {served_cert_file: mosquitto.conf}
        brokers:
          - {name: mosquitto-8884, address: b}
        """,
        tmp_path,
    )
    conf = tmp_path / "mosquitto.conf"
    assert problems == [
        "discover.name_prefix: must not contain spaces or control characters",
        "discover.dns: unknown key",
        "discover.timeout: must be greater than 0",
        "discover.tls.served_cert_file: not allowed here: each listener's certfile is used",
        f"discover.mosquitto_conf: {conf}:4: invalid port 'eighty': expected 0-65535",
        f"discover: the listener at {conf}:5 would become broker 'mosquitto-8884', a name brokers[0] "
        "already uses; rename that broker or set discover.name_prefix",
    ]


def test_discover_needs_a_readable_mosquitto_conf(tmp_path: Path) -> None:
    assert errors("discover: {}", tmp_path) == ["discover.mosquitto_conf: required"]
    assert errors("discover: {mosquitto_conf: nope.conf}", tmp_path) == [
        f"discover.mosquitto_conf: {tmp_path}/nope.conf: no such file"
    ]
    assert errors("discover: [a]", tmp_path) == [
        "discover: expected a mapping with mosquitto_conf, got a list"
    ]
    _mosquitto_conf(tmp_path, "include_dir conf.d\n")
    assert errors("discover: {mosquitto_conf: mosquitto.conf}", tmp_path) == [
        f"discover.mosquitto_conf: {tmp_path}/mosquitto.conf:1: include_dir {tmp_path}/conf.d: "
        "No such file or directory"
    ]


def test_unusable_tls_files_are_config_errors(tmp_path: Path, pems: dict[str, bytes]) -> None:
    write_pems(tmp_path, pems)
    (tmp_path / "junk.pem").write_text("not a certificate")
    problems = errors(
        "brokers:\n  - {name: a, address: a, tls: {ca_file: junk.pem}}\n"
        "  - {name: b, address: b, tls: {cert_file: client.pem, key_file: ca.pem}}\n",
        tmp_path,
    )
    assert len(problems) == 2
    assert problems[0].startswith("brokers[0].tls: ca_file") and "junk.pem" in problems[0]
    assert problems[1].startswith("brokers[1].tls: cert_file/key_file")
