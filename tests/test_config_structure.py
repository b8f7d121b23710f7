"""What a valid configuration loads into: a full document compared field by field, the built-in
defaults, ``defaults`` merged into each broker key by key (a null inherits), the checks across fields
(timeout against interval, tls.min_version against max_version, key_file without cert_file) and the
spellings normalized (TLS versions, MQTT protocols), ``modules`` for the multi-target endpoint, and the
alerting settings (expiry thresholds as a duration or a share of the leaf's lifetime, chain retention)
layered from defaults to brokers and modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_cert_exporter.config import (
    BrokerConfig,
    Config,
    ModuleConfig,
    MqttSettings,
    Secret,
    Target,
    TlsSettings,
)
from tests.config_helpers import errors, only_broker, parse, write_pems

# --- loading: structure and defaults -----------------------------------------------------------


def test_full_config(tmp_path: Path, pems: dict[str, bytes]) -> None:
    write_pems(tmp_path, pems)
    config = parse(
        """
        brokers:
          - name: plant-a
            address: mqtt.example.com:8883
            interval: 5m
            timeout: 2.5s
            tls:
              ca_file: ca.pem
              server_name: broker.internal
              cert_file: client.pem
              key_file: client.key
              intermediates_file: chain.pem
              min_version: TLSv1.2
              max_version: TLSv1.3
              alpn: [mqtt, x-amzn-mqtt-ca]
            mqtt:
              protocol: "3.1.1"
              client_id: probe-1
              username: monitor
              password: secret
              keepalive: 15
        """,
        tmp_path,
    )
    assert config == Config(
        brokers=(
            BrokerConfig(
                name="plant-a",
                target=Target("mqtt.example.com", 8883),
                interval=300.0,
                timeout=2.5,
                tls=TlsSettings(
                    ca_file=str(tmp_path / "ca.pem"),
                    server_name="broker.internal",
                    cert_file=str(tmp_path / "client.pem"),
                    key_file=str(tmp_path / "client.key"),
                    intermediates_file=str(tmp_path / "chain.pem"),
                    min_version="TLSv1.2",
                    max_version="TLSv1.3",
                    alpn=("mqtt", "x-amzn-mqtt-ca"),
                ),
                mqtt=MqttSettings(
                    protocol="3.1.1",
                    client_id="probe-1",
                    username="monitor",
                    password=Secret("secret"),
                    keepalive=15,
                ),
            ),
        )
    )
    assert config.broker("plant-a") is config.brokers[0]
    assert config.broker("nope") is None


def test_builtin_defaults(tmp_path: Path) -> None:
    broker = only_broker(parse("brokers: [{name: a, address: broker}]", tmp_path))
    assert broker == BrokerConfig(name="a", target=Target("broker", 8883))
    assert (broker.interval, broker.timeout) == (60.0, 10.0)


@pytest.mark.parametrize(
    "text", ["", "# nothing yet\n", "brokers:\n", "brokers: []\n", "defaults: {}\nbrokers: []\n"]
)
def test_empty_configs_are_allowed(tmp_path: Path, text: str) -> None:
    assert parse(text, tmp_path) == Config()


def test_defaults_are_merged_key_by_key(tmp_path: Path, pems: dict[str, bytes]) -> None:
    (tmp_path / "ca.pem").write_bytes(pems["ca.pem"])
    config = parse(
        """
        defaults:
          interval: 2m
          timeout: 20s
          tls: {ca_file: ca.pem, min_version: "1.3", alpn: [mqtt]}
          mqtt: {username: monitor, password: pw, protocol: 3.1.1, keepalive: 45}
        brokers:
          - name: inherits
            address: a
          - name: overrides
            address: b
            timeout: 5s
            tls: {server_name: b.internal, alpn: []}
            mqtt: {username: other}
        """,
        tmp_path,
    )
    inherits, overrides = config.brokers
    assert inherits.interval == overrides.interval == 120.0
    assert (inherits.timeout, overrides.timeout) == (20.0, 5.0)
    assert inherits.tls == TlsSettings(
        ca_file=str(tmp_path / "ca.pem"), min_version="TLSv1.3", alpn=("mqtt",)
    )
    assert overrides.tls == TlsSettings(
        ca_file=str(tmp_path / "ca.pem"), server_name="b.internal", min_version="TLSv1.3", alpn=()
    )
    assert inherits.mqtt == MqttSettings(
        protocol="3.1.1", username="monitor", password=Secret("pw"), keepalive=45
    )
    assert overrides.mqtt == MqttSettings(
        protocol="3.1.1", username="other", password=Secret("pw"), keepalive=45
    )


def test_null_values_inherit(tmp_path: Path) -> None:
    config = parse(
        """
        defaults:
          timeout: 3s
          tls:
          mqtt: {username: monitor}
        brokers:
          - name: a
            address: a
            timeout:
            mqtt: {username: }
        """,
        tmp_path,
    )
    assert only_broker(config).timeout == 3.0
    assert only_broker(config).mqtt.username == "monitor"


# --- timeout / interval and other cross-field checks -------------------------------------------


def test_timeout_may_equal_interval(tmp_path: Path) -> None:
    broker = only_broker(parse("brokers: [{name: a, address: a, interval: 10s, timeout: 10s}]", tmp_path))
    assert broker.timeout == broker.interval == 10.0


def test_timeout_longer_than_interval(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          timeout: 30s
        brokers:
          - {name: a, address: a, interval: 1m, timeout: 2m}
          - {name: b, address: b, interval: 20s}
          - {name: c, address: c, timeout: 90s}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[0].timeout: 120s must not exceed interval 60s",
        "brokers[1].interval: 20s is shorter than timeout 30s (from defaults.timeout)",
        "brokers[2].timeout: 90s must not exceed interval 60s (the default)",
    ]


def test_conflict_inherited_from_defaults_is_reported_once_at_defaults(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults: {interval: 5s, timeout: 10s}
        brokers:
          - {name: a, address: a}
          - {name: b, address: b}
          - {name: c, address: c, interval: 1m}
        """,
        tmp_path,
    )
    assert problems == ["defaults.timeout: 10s must not exceed interval 5s"]


def test_tls_min_version_above_max_version(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          tls: {max_version: TLSv1.2}
        brokers:
          - {name: a, address: a, tls: {min_version: TLS13}}
          - {name: b, address: b, tls: {min_version: 1.3, max_version: 1.2}}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[0].tls.min_version: TLSv1.3 is higher than max_version TLSv1.2"
        " (from defaults.tls.max_version)",
        "brokers[1].tls.min_version: TLSv1.3 is higher than max_version TLSv1.2",
    ]


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("TLSv1.2", "TLSv1.2"),
        ("tlsv1.3", "TLSv1.3"),
        ("1.2", "TLSv1.2"),
        ('"1.3"', "TLSv1.3"),
        ("TLS12", "TLSv1.2"),
    ],
)
def test_tls_version_normalization(tmp_path: Path, written: str, normalized: str) -> None:
    config = parse(f"brokers: [{{name: a, address: a, tls: {{min_version: {written}}}}}]", tmp_path)
    assert only_broker(config).tls.min_version == normalized


@pytest.mark.parametrize(
    ("written", "normalized"),
    [
        ("5", "5"),
        ('"5"', "5"),
        ("v5", "5"),
        ("5.0", "5"),
        ("3.1.1", "3.1.1"),
        ('"3.1.1"', "3.1.1"),
        ("311", "3.1.1"),
        ('"311"', "3.1.1"),
        ("v3.1.1", "3.1.1"),
    ],
)
def test_protocol_normalization(tmp_path: Path, written: str, normalized: str) -> None:
    config = parse(f"brokers: [{{name: a, address: a, mqtt: {{protocol: {written}}}}}]", tmp_path)
    assert only_broker(config).mqtt.protocol == normalized


def test_key_file_requires_cert_file(tmp_path: Path, pems: dict[str, bytes]) -> None:
    write_pems(tmp_path, pems)
    only_cert = parse("brokers: [{name: a, address: a, tls: {cert_file: client.pem}}]", tmp_path)
    assert only_broker(only_cert).tls.key_file is None
    problems = errors("brokers: [{name: a, address: a, tls: {key_file: client.pem}}]", tmp_path)
    assert problems == ["brokers[0].tls.key_file: requires cert_file"]


# --- modules -----------------------------------------------------------------------------------


def test_modules(tmp_path: Path) -> None:
    config = parse(
        """
        defaults:
          timeout: 4s
          mqtt: {username: monitor}
        modules:
          v311:
            mqtt: {protocol: 3.1.1}
          quick:
            timeout: 1s
            tls: {server_name: broker.internal}
          plain:
        """,
        tmp_path,
    )
    assert config.brokers == ()
    assert config.module("v311") == ModuleConfig(
        timeout=4.0, mqtt=MqttSettings(protocol="3.1.1", username="monitor")
    )
    assert config.module("quick") == ModuleConfig(
        timeout=1.0, tls=TlsSettings(server_name="broker.internal"), mqtt=MqttSettings(username="monitor")
    )
    assert config.module("plain") == ModuleConfig(timeout=4.0, mqtt=MqttSettings(username="monitor"))
    assert config.module("missing") is None
    assert [name for name, _ in config.modules] == ["v311", "quick", "plain"]


def test_module_errors(tmp_path: Path) -> None:
    problems = errors(
        """
        modules:
          a: {name: x, address: y, timeout: 0s}
          b: {tls: {min_version: "1.3", max_version: "1.2"}, mqtt: {protocol: 4}}
          7: {}
        """,
        tmp_path,
    )
    assert problems == [
        "modules.a.name: unknown key",
        "modules.a.address: unknown key",
        "modules.a.timeout: must be greater than 0",
        'modules.b.mqtt.protocol: unsupported MQTT protocol \'4\'; use "auto", "5" or "3.1.1"',
        "modules.b.tls.min_version: TLSv1.3 is higher than max_version TLSv1.2",
        "modules.7: module name must be a non-empty string",
    ]


# --------------------------------------------------------------------------------------------------
# Alerting settings: expiry thresholds (a duration or a share of the leaf's lifetime), chain retention


def test_expiry_thresholds_and_chain_retention_layer_from_defaults_to_brokers_and_modules(
    tmp_path: Path,
) -> None:
    config = parse(
        """
defaults:
  expiry_warning: 30d
  expiry_critical: 10d
  chain_retention: 2d
brokers:
  - {name: ninety-day, address: a.example:8883}
  - {name: seven-day, address: b.example:8883, expiry_warning: 40%, expiry_critical: 20%, chain_retention: 1h}
modules:
  short: {expiry_warning: 50%}
""",
        tmp_path,
    )
    ninety, seven = config.brokers
    assert (ninety.expiry_warning.seconds, ninety.expiry_critical.seconds) == (30 * 86400, 10 * 86400)
    assert ninety.chain_retention == 2 * 86400
    assert (seven.expiry_warning.share, seven.expiry_critical.share) == (0.4, 0.2)
    assert seven.expiry_warning.for_lifetime(7 * 86400) == pytest.approx(0.4 * 7 * 86400)
    assert seven.expiry_warning.for_lifetime(None) is None
    assert seven.chain_retention == 3600
    module = config.module("short")
    assert module is not None
    assert module.expiry_warning.share == 0.5 and module.expiry_critical.seconds == 10 * 86400


def test_builtin_thresholds_are_28_and_14_days_and_retention_7_days(tmp_path: Path) -> None:
    (broker,) = parse("brokers: [{name: a, address: a.example:8883}]", tmp_path).brokers
    assert broker.expiry_warning.seconds == 28 * 86400 and broker.expiry_critical.seconds == 14 * 86400
    assert broker.chain_retention == 7 * 86400


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("expiry_warning: 120%", "brokers[0].expiry_warning: a share of the certificate's lifetime must be"),
        ("expiry_warning: abc%", "brokers[0].expiry_warning: invalid share 'abc%'"),
        ("expiry_warning: 28", "brokers[0].expiry_warning: expected a duration like 10s, got a number"),
        (
            "expiry_critical: 30d",
            "brokers[0].expiry_critical: 30d must not be longer than expiry_warning 28d (the default)",
        ),
        ("chain_retention: 0s", "brokers[0].chain_retention: must be greater than 0"),
    ],
)
def test_bad_alerting_settings_are_named_with_their_path(tmp_path: Path, line: str, message: str) -> None:
    found = errors(f"brokers:\n  - name: a\n    address: a.example:8883\n    {line}\n", tmp_path)
    assert any(error.startswith(message) for error in found), found
