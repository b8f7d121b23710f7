"""How the loader says what is wrong: ``ConfigError`` (one error a line, and it pickles), every problem
of a document at once, each with its path (unknown keys, wrong types, bad values, broker names used
twice), each message in a table, and a property: whatever the YAML document, the loader answers with a
Config or with a ConfigError whose errors all name their place. The loader's hardening against hostile
documents (aliases, size, duplicate keys) is in tests/test_config_loading.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtt_cert_exporter.config import ConfigError, parse_config
from tests.config_helpers import errors, parse

# --- ConfigError -------------------------------------------------------------------------------


def test_config_error_lists_one_error_per_line_and_pickles() -> None:
    error = ConfigError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two"
    assert pickle.loads(pickle.dumps(error)).errors == ["a: one", "b: two"]


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
