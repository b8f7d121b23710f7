"""What the configuration takes from outside its own text: file paths resolved against the config
file's folder and checked as it loads (missing, a directory, unreadable), ``${NAME}`` expanded from the
environment in every string (``$${`` for a literal, a single pass), ``mqtt.password_file``, and
secrets kept out of every error, repr and YAML syntax error. That no output of a running exporter holds
the password is checked in tests/test_secrets.py."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from mqtt_cert_exporter.config import ConfigError, MqttSettings, Secret, Target, load_config, parse_config
from tests.config_helpers import errors, only_broker, parse

# --- files -------------------------------------------------------------------------------------


def test_file_paths_are_relative_to_the_config_file(tmp_path: Path, pems: dict[str, bytes]) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_bytes(pems["ca.pem"])
    config_file = tmp_path / "exporter.yaml"
    config_file.write_text("defaults: {tls: {ca_file: certs/ca.pem}}\nbrokers: [{name: a, address: a}]\n")
    config = load_config(str(config_file))
    assert only_broker(config).tls.ca_file == str(tmp_path / "certs" / "ca.pem")


def test_absolute_file_paths_are_kept(tmp_path: Path, pems: dict[str, bytes]) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(pems["ca.pem"])
    config = parse(f"brokers: [{{name: a, address: a, tls: {{ca_file: '{ca}'}}}}]", tmp_path / "elsewhere")
    assert only_broker(config).tls.ca_file == str(ca)


def test_missing_and_unusable_files(tmp_path: Path) -> None:
    (tmp_path / "a-directory").mkdir()
    problems = errors(
        """
        brokers:
          - name: a
            address: a
          - name: b
            address: b
            tls: {ca_file: missing/ca.pem, cert_file: a-directory, key_file: ""}
        """,
        tmp_path,
    )
    assert problems == [
        f"brokers[1].tls.ca_file: {tmp_path}/missing/ca.pem: no such file",
        f"brokers[1].tls.cert_file: {tmp_path}/a-directory: not a regular file",
        "brokers[1].tls.key_file: must not be empty",
    ]


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    # chmod 0 proves nothing when the tests run as root, so the open() failure is simulated.
    real_open = open

    def deny(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(ca):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    (problem,) = errors("defaults: {tls: {ca_file: ca.pem}}", tmp_path)
    assert problem == f"defaults.tls.ca_file: {ca}: Permission denied"


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "nope.yaml"))
    assert caught.value.errors == [f"{tmp_path}/nope.yaml: No such file or directory"]


# --- environment variables and secrets ---------------------------------------------------------


def test_env_expansion_in_every_string(tmp_path: Path) -> None:
    config = parse(
        """
        brokers:
          - name: ${SITE}-broker
            address: ${HOST}:${PORT}
            interval: ${INTERVAL}
            tls: {alpn: ["${ALPN}"]}
            mqtt: {username: "${USER}", password: "${PASSWORD}", keepalive: "${KEEPALIVE}"}
        """,
        tmp_path,
        env={
            "SITE": "plant-a",
            "HOST": "mqtt.example.com",
            "PORT": "8884",
            "INTERVAL": "2m",
            "ALPN": "mqtt",
            "USER": "monitor",
            "PASSWORD": "s3cr3t",
            "KEEPALIVE": "20",
        },
    )
    broker = only_broker(config)
    assert broker.name == "plant-a-broker"
    assert broker.target == Target("mqtt.example.com", 8884)
    assert broker.interval == 120.0
    assert broker.tls.alpn == ("mqtt",)
    assert broker.mqtt == MqttSettings(username="monitor", password=Secret("s3cr3t"), keepalive=20)


def test_env_expansion_escape_and_single_pass(tmp_path: Path) -> None:
    config = parse(
        """
        brokers:
          - name: a
            address: a
            mqtt: {username: "$${NOT_EXPANDED}", client_id: "cost: $5 ${INNER}", password: "$$x"}
        """,
        tmp_path,
        env={"INNER": "${OTHER}", "OTHER": "expanded twice"},
    )
    mqtt = only_broker(config).mqtt
    assert mqtt.username == "${NOT_EXPANDED}"
    assert mqtt.client_id == "cost: $5 ${OTHER}"
    assert mqtt.password == Secret("$$x")


def test_undefined_and_malformed_env_references(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          mqtt: {password: "pre-${MQTT_PASSWORD}"}
        brokers:
          - name: a
            address: ${A_HOST}
            tls: {alpn: [mqtt, "${ALPN_1}"]}
          - name: b
            address: b
            mqtt: {username: "${oops", client_id: "${with space}"}
        """,
        tmp_path,
        env={},
    )
    assert problems == [
        "defaults.mqtt.password: environment variable MQTT_PASSWORD is not set",
        "brokers[0].address: environment variable A_HOST is not set",
        "brokers[0].tls.alpn[1]: environment variable ALPN_1 is not set",
        "brokers[1].mqtt.username: invalid ${...} reference; use ${NAME}, or $${ for a literal ${",
        "brokers[1].mqtt.client_id: invalid ${...} reference; use ${NAME}, or $${ for a literal ${",
    ]


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFIG_TEST_HOST", "from-environ")
    config = parse_config("brokers: [{name: a, address: '${CONFIG_TEST_HOST}'}]", base_dir=str(tmp_path))
    assert only_broker(config).target.host == "from-environ"


@pytest.mark.parametrize(
    ("content", "password"),
    [
        ("s3cr3t\n", "s3cr3t"),
        ("s3cr3t\r\n", "s3cr3t"),
        ("s3cr3t", "s3cr3t"),
        ("s3cr3t\n\n", "s3cr3t\n"),
        (" spaced \n", " spaced "),
    ],
)
def test_password_file(tmp_path: Path, content: str, password: str) -> None:
    (tmp_path / "password").write_bytes(content.encode())
    config = parse("brokers: [{name: a, address: a, mqtt: {password_file: password}}]", tmp_path)
    assert only_broker(config).mqtt.password == Secret(password)


def test_password_file_overrides_default_password(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("from-file\n")
    config = parse(
        """
        defaults: {mqtt: {password: from-defaults}}
        brokers: [{name: a, address: a, mqtt: {password_file: password}}]
        """,
        tmp_path,
    )
    assert only_broker(config).mqtt.password == Secret("from-file")


def test_password_file_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    (tmp_path / "good").write_text("pw")
    problems = errors(
        """
        brokers:
          - {name: a, address: a, mqtt: {password_file: missing}}
          - {name: b, address: b, mqtt: {password_file: empty}}
          - {name: c, address: c, mqtt: {password_file: binary}}
          - {name: d, address: d, mqtt: {password: pw, password_file: good}}
        """,
        tmp_path,
    )
    assert problems == [
        f"brokers[0].mqtt.password_file: {tmp_path}/missing: no such file",
        f"brokers[1].mqtt.password_file: {tmp_path}/empty: file is empty",
        f"brokers[2].mqtt.password_file: {tmp_path}/binary: not valid UTF-8",
        "brokers[3].mqtt.password_file: cannot be combined with password; set only one of them",
    ]


SECRET = "Tr0ub4dor&3-never-print-me"


def test_secrets_never_leak_into_errors(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(SECRET)
    with pytest.raises(ConfigError) as caught:
        parse(
            f"""
            brokers:
              - name: a
                address: a
                timeout: 10 seconds
                mqtt: {{username: monitor, password: "{SECRET}", keepalive: many}}
              - name: b
                address: b:70000
                mqtt: {{password: "${{FROM_ENV}}", protokol: 5}}
              - name: c
                address: c
                mqtt: {{password: "{SECRET}", password_file: password}}
              - name: d
                address: "mqtts://monitor:{SECRET}@d:8883"
                mqtt: {{password: ["{SECRET}"]}}
              - name: e
                address: e
                mqtt: {{password: "{SECRET}${{unterminated"}}
            """,
            tmp_path,
            env={"FROM_ENV": SECRET},
        )
    text = str(caught.value)
    assert len(caught.value.errors) == 8
    assert SECRET not in text
    assert SECRET not in repr(caught.value)
    assert SECRET not in "".join(caught.value.errors)


def test_secrets_never_leak_from_yaml_syntax_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f'brokers:\n  - name: a\n    mqtt: {{password: "{SECRET}"\n    oops', tmp_path)
    assert SECRET not in str(caught.value)
    # The chained PyYAML exception quotes the offending line; it must not be attached to tracebacks.
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_secrets_never_leak_into_repr(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(SECRET)
    config = parse(
        f"""
        defaults:
          mqtt: {{password: "{SECRET}"}}
        brokers:
          - {{name: a, address: a}}
          - {{name: b, address: b, mqtt: {{password: "${{FROM_ENV}}"}}}}
          - {{name: c, address: c, mqtt: {{password_file: password}}}}
        modules:
          auth: {{}}
        """,
        tmp_path,
        env={"FROM_ENV": SECRET},
    )
    assert all(broker.mqtt.password == Secret(SECRET) for broker in config.brokers)
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
