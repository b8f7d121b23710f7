from __future__ import annotations

import errno
import math
import os
import pickle
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_cert_exporter.config import (
    BrokerConfig,
    Config,
    ConfigError,
    ModuleConfig,
    MqttSettings,
    Secret,
    Target,
    TlsSettings,
    load_config,
    parse_address,
    parse_config,
    parse_duration,
)


def parse(text: str, base_dir: Path, env: Mapping[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), base_dir=str(base_dir), env=env or {})


def errors(text: str, base_dir: Path, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, base_dir, env)
    return caught.value.errors


def only_broker(config: Config) -> BrokerConfig:
    (broker,) = config.brokers
    return broker


# --- parse_duration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0s", 0.0),
        ("30s", 30.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1500000ns", 0.0015),
        ("250us", 0.00025),
        ("250µs", 0.00025),  # micro sign
        ("250μs", 0.00025),  # greek mu
        ("1m0.5s", 60.5),
        ("0.1s0.2s", 0.3),  # summed exactly, not as floats
        ("2h45m30s100ms", 9930.1),
        ("28d", 28 * 86400.0),  # Prometheus' units: certificate thresholds are counted in days
        ("2w", 14 * 86400.0),
    ],
)
def test_parse_duration_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("-5s", "must not be negative"),
        ("60", "add a unit, e.g. 60s"),
        ("1.5", "add a unit, e.g. 60s"),
        ("1h30", "missing unit after 30"),
        ("1y", "unknown unit 'y'"),
        ("5S", "unknown unit 'S'"),
        ("1h 30m", "unknown unit 'h '"),
        ("10 s", "unknown unit ' s'"),
        ("s", "expected a number"),
        (".s", "expected a number"),
        ("+5s", "expected a number"),
        ("1.2.3s", "malformed number"),
        ("9" * 40 + "s", "too many digits"),
        ("99999999999h", "too large"),
    ],
)
def test_parse_duration_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^.*" + message.replace(".", r"\.").replace("+", r"\+")):
        parse_duration(text)


UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
duration_parts = st.lists(
    st.tuples(
        # 6 * 10**5 h stays below the 292-year maximum (tested separately)
        st.integers(min_value=0, max_value=10**5),
        st.none() | st.integers(min_value=0, max_value=999),
        st.sampled_from(sorted(UNIT_SECONDS)),
    ),
    min_size=1,
    max_size=6,
)


@given(duration_parts)
def test_parse_duration_is_the_sum_of_its_parts(parts: list[tuple[int, int | None, str]]) -> None:
    text = "".join(f"{whole}{'' if frac is None else f'.{frac:03d}'}{unit}" for whole, frac, unit in parts)
    expected = sum((whole + (frac or 0) / 1000) * UNIT_SECONDS[unit] for whole, frac, unit in parts)
    assert math.isclose(parse_duration(text), expected, rel_tol=1e-12, abs_tol=1e-15)


@given(st.text() | st.text(alphabet="0123456789.-+nsuµμmh d"))
def test_parse_duration_only_raises_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(seconds)
    assert seconds >= 0


# --- parse_address -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("mqtt.example.com", Target("mqtt.example.com", 8883)),
        ("mqtt.example.com:8884", Target("mqtt.example.com", 8884)),
        ("10.0.0.1:1", Target("10.0.0.1", 1)),
        ("broker:65535", Target("broker", 65535)),
        ("[2001:db8::1]:8883", Target("2001:db8::1", 8883)),
        ("[2001:db8::1]", Target("2001:db8::1", 8883)),
        ("2001:db8::1", Target("2001:db8::1", 8883)),
        ("::1", Target("::1", 8883)),
        ("[fe80::1%eth0]:9000", Target("fe80::1%eth0", 9000)),
        ("mqtts://broker", Target("broker", 8883)),
        ("mqtts://broker:1883", Target("broker", 1883)),
        ("mqtts://broker/", Target("broker", 8883)),
        ("ssl://broker:8000", Target("broker", 8000)),
        ("tls://broker", Target("broker", 8883)),
        ("MQTTS://broker", Target("broker", 8883)),
        ("mqtts://[::1]:8883", Target("::1", 8883)),
        ("wss://broker", Target("broker", 443, "wss", "/mqtt")),
        ("wss://broker:8443/ws", Target("broker", 8443, "wss", "/ws")),
        ("wss://[2001:db8::1]/mqtt/v2", Target("2001:db8::1", 443, "wss", "/mqtt/v2")),
    ],
)
def test_parse_address_valid(text: str, target: Target) -> None:
    assert parse_address(text) == target


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty address"),
        ("broker:0", "port must be 1-65535"),
        ("broker:65536", "port must be 1-65535"),
        ("broker:", "port must be 1-65535"),
        ("broker:http", "port must be 1-65535"),
        ("broker:-1", "port must be 1-65535"),
        ("[::1]:99999", "port must be 1-65535"),
        (":8883", "host must not be empty"),
        ("mqtts://", "host must not be empty"),
        ("mqtts://:8883", "host must not be empty"),
        ("2001:db8::1:99999", "must be bracketed when a port follows"),
        ("fe80::1::2:8883", "must be bracketed when a port follows"),
        ("[2001:db8::1", "missing ']'"),
        ("[broker]:8883", "brackets are only for IPv6"),
        ("[::1]8883", "expected ':port'"),
        ("mqtt://broker:1883", "TLS listeners only"),
        ("tcp://broker:1883", "TLS listeners only"),
        ("ws://broker/mqtt", "TLS listeners only"),
        ("https://broker", "unknown scheme https://"),
        ("://broker", "malformed scheme"),
        ("mqtts://broker/mqtt", "path is only allowed with wss://"),
        ("broker /x", "whitespace"),
        ("user:pass@broker", "credentials do not belong in the address"),
    ],
)
def test_parse_address_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_address(text)
    assert message in str(caught.value)


def test_parse_address_never_echoes_credentials() -> None:
    with pytest.raises(ValueError) as caught:
        parse_address("mqtts://user:hunter2@broker:8883")
    assert "hunter2" not in str(caught.value)


@given(st.text() | st.text(alphabet="abc.:/[]@0123456789ftpsqmw%"))
def test_parse_address_only_raises_value_error(text: str) -> None:
    try:
        target = parse_address(text)
    except ValueError:
        return
    assert target.host
    assert 1 <= target.port <= 65535


# --- ConfigError -------------------------------------------------------------------------------


def test_config_error_lists_one_error_per_line_and_pickles() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two"
    assert pickle.loads(pickle.dumps(error)).errors == ["a: one", "b: two"]


# --- loading: structure and defaults -----------------------------------------------------------


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real PEM files: the loader checks that OpenSSL can use the TLS files it is given."""
    from mqtt_cert_exporter.lab.pki import Pki

    pki = Pki(tmp_path_factory.mktemp("pems"))
    root = pki.root("Config Test CA")
    client = pki.leaf("client", root, client=True)
    key = client.key_path.read_bytes()
    return {
        "ca.pem": root.cert_path.read_bytes(),
        "chain.pem": root.cert_path.read_bytes(),
        "client.pem": client.cert_path.read_bytes() + key,  # certificate with its key: usable alone
        "client.key": key,
    }


def write_pems(directory: Path, pems: dict[str, bytes]) -> None:
    for name, content in pems.items():
        (directory / name).write_bytes(content)


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


# --- loading: errors ---------------------------------------------------------------------------


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          tls: {foo: 1}
        brokers:
          - {name: a, address: "a:99999"}
          - {name: b, address: b, timeout: [1]}
          - {name: c, address: c, interval: 60}
        """,
        tmp_path,
    )
    assert problems == [
        "defaults.tls.foo: unknown key",
        "brokers[0].address: port must be 1-65535",
        "brokers[1].timeout: expected a duration like 10s, got a list",
        "brokers[2].interval: expected a duration like 10s, got a number; add a unit, e.g. 60s",
    ]


def test_config_error_str_is_one_error_per_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse("brokers: [{name: a}, {address: b}]", tmp_path)
    assert str(caught.value) == "brokers[0].address: required\nbrokers[1].name: required"


def test_unknown_keys_are_reported_with_their_path(tmp_path: Path) -> None:
    problems = errors(
        """
        discovery: {dns: _mqtt._tcp}
        defaults:
          retries: 3
          mqtt: {pasword: x}
        brokers:
          - name: a
            address: a
            labels: {site: x}
            tls: {cafile: x}
        modules:
          fast:
            interval: 5s
        """,
        tmp_path,
    )
    assert problems == [
        "discovery: unknown key",
        "defaults.retries: unknown key",
        "defaults.mqtt.pasword: unknown key",
        "brokers[0].labels: unknown key",
        "brokers[0].tls.cafile: unknown key",
        "modules.fast.interval: unknown key",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[]", "config: expected a mapping at the top level, got a list"),
        ("brokers: {a: 1}", "brokers: expected a list of brokers, got a mapping"),
        ("brokers: [mqtt.example.com]", "brokers[0]: expected a mapping with name and address, got a string"),
        ("defaults: [1]", "defaults: expected a mapping, got a list"),
        ("defaults: {tls: true}", "defaults.tls: expected a mapping, got a boolean"),
        ("defaults: {timeout: 0s}", "defaults.timeout: must be greater than 0"),
        ("defaults: {timeout: 10x}", "defaults.timeout: invalid duration '10x': unknown unit 'x'"),
        ("defaults: {timeout: -1s}", "defaults.timeout: invalid duration '-1s': must not be negative"),
        ("defaults: {interval: 2024-01-01}", "defaults.interval: expected a duration like 10s, got a date"),
        ("defaults: {mqtt: {username: 1234}}", "defaults.mqtt.username: expected a string, got a number"),
        ("defaults: {mqtt: {client_id: yes}}", "defaults.mqtt.client_id: expected a string, got a boolean"),
        ("defaults: {mqtt: {keepalive: 70000}}", "defaults.mqtt.keepalive: must be 0-65535 seconds"),
        ("defaults: {mqtt: {keepalive: 30s}}", "defaults.mqtt.keepalive: expected whole seconds"),
        ("defaults: {mqtt: {protocol: 3.1}}", "defaults.mqtt.protocol: unsupported MQTT protocol '3.1'"),
        ("defaults: {mqtt: {protocol: [5]}}", "defaults.mqtt.protocol: expected an MQTT protocol version"),
        ("defaults: {tls: {min_version: TLSv1.1}}", "defaults.tls.min_version: unsupported TLS version"),
        ("defaults: {tls: {alpn: mqtt}}", "defaults.tls.alpn: expected a list of protocol names"),
        ("defaults: {tls: {alpn: [mqtt, '']}}", "defaults.tls.alpn[1]: expected a protocol name"),
        ("defaults: {tls: {alpn: [mqtt, 5]}}", "defaults.tls.alpn[1]: expected a protocol name"),
        ("defaults: {tls: {server_name: ''}}", "defaults.tls.server_name: must not be empty"),
        ("brokers: [{name: '', address: a}]", "brokers[0].name: must not be empty"),
        (
            "brokers: [{name: 7, address: a}]",
            "brokers[0].name: expected a string, got a number; put it in quotes",
        ),
        ("brokers: [{name: a, address: 'mqtt://a'}]", "brokers[0].address: mqtt:// is not TLS"),
        ("modules: [a]", "modules: expected a mapping of module names to settings, got a list"),
        ("modules: {fast: 5s}", "modules.fast: expected a mapping, got a string"),
        ("a: [", "line 2, column 1: did not find expected node content"),
    ],
)
def test_error_messages(tmp_path: Path, text: str, expected: str) -> None:
    (problem,) = errors(text, tmp_path)
    assert problem.startswith(expected)


def test_duplicate_names_are_reported_on_the_later_entries(tmp_path: Path) -> None:
    problems = errors(
        """
        brokers:
          - {name: plant-a, address: a}
          - {name: plant-b, address: b}
          - {name: plant-a, address: c}
          - {name: plant-a, address: d}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[2].name: duplicate name 'plant-a', already used by brokers[0]",
        "brokers[3].name: duplicate name 'plant-a', already used by brokers[0]",
    ]


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


# --- issue 8: addresses, ip_protocol, proxy_url, mqtt.roundtrip ---------------------------------


def test_reaching_a_broker_defaults(tmp_path: Path) -> None:
    broker = only_broker(parse("brokers: [{name: a, address: 'wss://b.example:8084/ws'}]", tmp_path))
    assert (broker.addresses, broker.ip_protocol, broker.proxy, broker.mqtt.roundtrip) == (
        "first",
        "any",
        None,
        None,
    )
    assert broker.target == Target("b.example", 8084, scheme="wss", path="/ws")


def test_reaching_a_broker_settings_and_inheritance(tmp_path: Path) -> None:
    from mqtt_cert_exporter.config import ProxySettings, RoundtripSettings

    config = parse(
        """
        defaults:
          timeout: 5s
          addresses: all
          ip_protocol: IP6
          proxy_url: socks5h://monitor:p%40ss@proxy.example.com
          mqtt:
            roundtrip: {topic: "probe/${SITE}", qos: "0", timeout: 2s}
        brokers:
          - {name: a, address: a}
          - name: b
            address: b
            addresses: first
            ip_protocol: any
            proxy_url: http://[2001:db8::1]:3128/
            mqtt: {roundtrip: {topic: probe/b}}
        """,
        tmp_path,
        env={"SITE": "plant-a"},
    )
    a, b = config.brokers
    assert (a.addresses, a.ip_protocol) == ("all", "ip6")
    assert a.proxy == ProxySettings("socks5h", "proxy.example.com", 1080, "monitor", Secret("p@ss"))
    assert a.mqtt.roundtrip == RoundtripSettings("probe/plant-a", qos=0, timeout=2.0)
    assert (b.addresses, b.ip_protocol) == ("first", "any")
    assert b.proxy == ProxySettings("http", "2001:db8::1", 3128)
    assert b.mqtt.roundtrip == RoundtripSettings("probe/b", qos=1, timeout=None)
    assert str(a.proxy) == "socks5h://proxy.example.com:1080"  # never the credentials
    assert str(b.proxy) == "http://[2001:db8::1]:3128"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("defaults: {addresses: some}", "defaults.addresses: unsupported addresses 'some'; use first or all"),
        (
            "defaults: {addresses: [all]}",
            "defaults.addresses: unsupported addresses a list; use first or all",
        ),
        (
            "defaults: {ip_protocol: ipv4}",
            "defaults.ip_protocol: unsupported ip_protocol 'ipv4'; use any or ip4 or ip6",
        ),
        ("defaults: {proxy_url: 1080}", "defaults.proxy_url: expected a string, got a number"),
        ("defaults: {proxy_url: proxy:1080}", "defaults.proxy_url: expected a proxy URL"),
        (
            "defaults: {proxy_url: 'socks4://p:1080'}",
            "defaults.proxy_url: unsupported proxy scheme socks4://",
        ),
        ("defaults: {proxy_url: 'https://p:3128'}", "defaults.proxy_url: unsupported proxy scheme https://"),
        ("defaults: {proxy_url: 'http://p'}", "defaults.proxy_url: an http:// proxy URL needs a port"),
        ("defaults: {proxy_url: 'socks5://p:99999'}", "defaults.proxy_url: port must be 1-65535"),
        ("defaults: {proxy_url: 'socks5://p:1080/x'}", "defaults.proxy_url: a proxy URL has no path"),
        (
            "defaults: {proxy_url: 'socks5://:pw@p'}",
            "defaults.proxy_url: the proxy URL has credentials without",
        ),
        ("defaults: {mqtt: {roundtrip: probe/x}}", "defaults.mqtt.roundtrip: expected a mapping with topic"),
        ("defaults: {mqtt: {roundtrip: {qos: 1}}}", "defaults.mqtt.roundtrip.topic: required"),
        (
            "defaults: {mqtt: {roundtrip: {topic: 'a/#'}}}",
            "defaults.mqtt.roundtrip.topic: must be a topic name",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: 'a/+/b'}}}",
            "defaults.mqtt.roundtrip.topic: must be a topic name",
        ),
        ("defaults: {mqtt: {roundtrip: {topic: ''}}}", "defaults.mqtt.roundtrip.topic: must not be empty"),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, qos: 2}}}",
            "defaults.mqtt.roundtrip.qos: qos must be 0 or 1",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, qos: true}}}",
            "defaults.mqtt.roundtrip.qos: qos must be 0 or 1",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, timeout: 5}}}",
            "defaults.mqtt.roundtrip.timeout: expected a duration",
        ),
        (
            "defaults: {mqtt: {roundtrip: {topic: t, retain: true}}}",
            "defaults.mqtt.roundtrip.retain: unknown key",
        ),
    ],
)
def test_reaching_a_broker_errors(tmp_path: Path, text: str, expected: str) -> None:
    problems = errors(text, tmp_path)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_roundtrip_timeout_must_fit_in_the_probe_timeout(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          timeout: 2s
        brokers:
          - {name: a, address: a, mqtt: {roundtrip: {topic: t, timeout: 3s}}}
          - {name: b, address: b, timeout: 5s, mqtt: {roundtrip: {topic: t, timeout: 3s}}}
          - {name: c, address: c, mqtt: {roundtrip: {topic: t, timeout: 15s}}, timeout: 20s, interval: 30s}
          - {name: d, address: d, mqtt: {roundtrip: {topic: t, timeout: 15s}}, interval: 30s}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[0].mqtt.roundtrip.timeout: 3s must not exceed the probe timeout 2s (from defaults.timeout)",
        "brokers[3].mqtt.roundtrip.timeout: 15s must not exceed the probe timeout 2s (from defaults.timeout)",
    ]


def test_ip_protocol_must_reach_a_literal_address(tmp_path: Path) -> None:
    problems = errors(
        """
        brokers:
          - {name: a, address: '[::1]:8883', ip_protocol: ip4}
          - {name: b, address: '127.0.0.1:8883', ip_protocol: ip6}
          - {name: c, address: '127.0.0.1:8883', ip_protocol: ip4}
          - {name: d, address: 'mqtt.example.com:8883', ip_protocol: ip6}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[0].ip_protocol: ip4 cannot reach the IPv6 address of brokers[0].address",
        "brokers[1].ip_protocol: ip6 cannot reach the IPv4 address of brokers[1].address",
    ]


def test_proxy_credentials_never_leak(tmp_path: Path) -> None:
    secret = "Sup3r-s3cret-proxy-pw"
    for url in (
        f"socks5://monitor:{secret}@p:99999",
        f"ftp://monitor:{secret}@p:1",
        f"http://monitor:{secret}@p",
        f"socks5://monitor:{secret}@p:1080/path",
    ):
        problems = errors(f"defaults: {{proxy_url: '{url}'}}", tmp_path)
        assert problems and not any(secret in problem or "monitor" in problem for problem in problems), (
            problems
        )
    config = parse(f"brokers: [{{name: a, address: a, proxy_url: 'socks5://monitor:{secret}@p'}}]", tmp_path)
    assert secret not in repr(config)


# --- properties: whatever the document, the loader answers with a Config or a ConfigError -----------

_yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.text(max_size=12),
    st.sampled_from(["5s", "3.1.1", "h:1"]),
)
_yaml_values = st.recursive(
    _yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(
            st.sampled_from(
                ["name", "address", "tls", "mqtt", "interval", "timeout", "ca_file", "protocol", "x"]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(["defaults", "brokers", "modules", "bogus"]), _yaml_values, max_size=3)
)
def test_any_document_gives_a_config_or_a_config_error(document: dict[str, object]) -> None:
    import yaml

    try:
        parse_config(yaml.safe_dump(document), base_dir="/nonexistent", env={})
    except ConfigError as exc:
        assert exc.errors and all(": " in error for error in exc.errors)


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
