"""Issue 18 (loader hardening) and issue 15 (each key declared once): what a careless operator or a
hostile config file can no longer do, and the declarations the loader walks by."""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mqtt_cert_exporter.config import (
    BrokerConfig,
    ConfigError,
    ModuleConfig,
    MqttSettings,
    Target,
    TlsSettings,
    load_config,
    parse_address,
    parse_config,
    read_password_file,
)
from mqtt_cert_exporter.config import document as yaml_document
from mqtt_cert_exporter.config.keys import DEFAULTS, KEYS, Scope
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.probe.wire import tls as probe_tls
from tests.config_helpers import errors

# --- YAML: aliases, size, duplicate keys ---------------------------------------------------------


def test_an_alias_bomb_is_refused_before_it_is_walked(tmp_path: Path) -> None:
    # 9 levels of 9 aliases: 9**9 strings once expanded (the 3 GiB out-of-memory reload).
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    lines.append("brokers: *l9")
    problems = errors("\n".join(lines), tmp_path)
    assert problems[0] == (
        "line 1, column 5: the node anchored here is used again through an alias; "
        "YAML aliases are not allowed (put shared settings in defaults)"
    )
    assert len(problems) == 10  # one per anchored node, never one per expansion


def test_even_a_harmless_alias_is_refused_with_its_place(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          tls: &shared {min_version: TLSv1.3}
        brokers:
          - {name: a, address: a, tls: *shared}
        """,
        tmp_path,
    )
    assert problems == [
        "line 3, column 8: the node anchored here is used again through an alias; "
        "YAML aliases are not allowed (put shared settings in defaults)"
    ]


def test_anchors_without_aliases_are_fine(tmp_path: Path) -> None:
    config = parse_config("brokers: [&first {name: a, address: a}]", base_dir=str(tmp_path), env={})
    assert [broker.name for broker in config.brokers] == ["a"]


def test_a_config_larger_than_the_cap_is_refused_unread(tmp_path: Path) -> None:
    huge = "#" * yaml_document.MAX_CONFIG_BYTES + "\n"
    assert errors(huge, tmp_path) == ["config: larger than 4 MiB; a configuration is far smaller"]
    path = tmp_path / "huge.yaml"
    path.write_text(huge)
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.errors == [f"{path}: larger than 4 MiB; a configuration is far smaller"]
    # just under the cap: loaded
    path.write_text("#" * (yaml_document.MAX_CONFIG_BYTES - 1) + "\n")
    assert load_config(str(path)).brokers == ()


def test_duplicate_keys_are_refused_with_their_path(tmp_path: Path) -> None:
    problems = errors(
        """
        defaults:
          timeout: 5s
          timeout: 50s
        brokers:
          - name: a
            address: a
            mqtt:
              password: first
              username: monitor
              password: second
        defaults: {}
        """,
        tmp_path,
    )
    assert problems == [  # in document order
        "defaults.timeout: duplicate key at line 4 (already set at line 3)",
        "brokers[0].mqtt.password: duplicate key at line 11 (already set at line 9)",
        "defaults: duplicate key at line 12 (already set at line 2)",
    ]
    assert "second" not in "".join(problems)


def test_the_libyaml_loader_is_used_when_pyyaml_has_it() -> None:
    if not hasattr(yaml, "CSafeLoader"):
        pytest.skip("PyYAML was built without libyaml here")
    loader: object = yaml_document._Loader  # noqa: SLF001 - which YAML loader class is in use
    assert loader is yaml.CSafeLoader


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True


_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
_documents = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@given(_documents)
def test_the_refusing_loader_reads_every_alias_free_document_as_pyyaml_does(document: object) -> None:
    text = yaml.dump(document, Dumper=_NoAliasDumper)
    assert yaml_document.load_document(text) == yaml.safe_load(text)


# --- fields an MQTT CONNECT cannot carry ---------------------------------------------------------


def test_mqtt_strings_over_65535_bytes_are_refused_with_their_path(tmp_path: Path) -> None:
    long = "x" * 65536
    fits = "é" * (65535 // 2)  # bytes, not characters, count
    problems = errors(
        f"""
        brokers:
          - {{name: a, address: a, mqtt: {{username: {long}, client_id: {long}, password: {long}}}}}
          - {{name: b, address: b, mqtt: {{username: {fits}, client_id: "{fits}é"}}}}
        """,
        tmp_path,
    )
    assert problems == [
        "brokers[0].mqtt.username: must be at most 65535 bytes (MQTT's limit)",
        "brokers[0].mqtt.client_id: must be at most 65535 bytes (MQTT's limit)",
        "brokers[0].mqtt.password: must be at most 65535 bytes (MQTT's limit)",
        "brokers[1].mqtt.client_id: must be at most 65535 bytes (MQTT's limit)",
    ]


# --- password files that are not password files --------------------------------------------------


def test_password_files_that_cannot_be_passwords(tmp_path: Path) -> None:
    (tmp_path / "shadow").write_text("root:$y$j9T$abc:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    (tmp_path / "huge").write_text("p" * 70_000)
    (tmp_path / "longest").write_text("p" * 65535 + "\r\n")
    problems = errors(
        """
        brokers:
          - {name: a, address: a, mqtt: {password_file: shadow}}
          - {name: b, address: b, mqtt: {password_file: huge}}
          - {name: c, address: c, mqtt: {password_file: longest}}
        """,
        tmp_path,
    )
    assert problems == [
        f"brokers[0].mqtt.password_file: {tmp_path}/shadow: holds several lines; "
        "a password file holds the password alone",
        f"brokers[1].mqtt.password_file: {tmp_path}/huge: larger than a password can be (65535 bytes)",
    ]
    assert "j9T" not in "".join(problems)


def test_read_password_file_refuses_devices_and_fifos_without_blocking(tmp_path: Path) -> None:
    # check --password-file reads through this function directly (no loader in front of it)
    with pytest.raises(ValueError, match=r"^/dev/null: not a regular file$"):
        read_password_file("/dev/null")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome: list[str] = []

    def read() -> None:
        try:
            read_password_file(str(fifo))
        except ValueError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30)  # a bound for a hang, not a measurement: it returns at once or never
    if reader.is_alive():  # unblock the reader so the test process can end
        with open(fifo, "w"):
            pass
    assert outcome == [f"{fifo}: not a regular file"]


# --- addresses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["127.0.0.1\0.example.com:8883", "broker\x1b[2J:8883", "wss://b:1/x\x7f"])
def test_control_characters_in_an_address_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"^address must not contain control characters$"):
        parse_address(text)


def test_a_nul_in_a_configured_address_is_a_config_error_with_its_path(tmp_path: Path) -> None:
    problems = errors('brokers: [{name: a, address: "127.0.0.1\\0.example.com:8883"}]', tmp_path)
    assert problems == ["brokers[0].address: address must not contain control characters"]


# --- each key declared once ----------------------------------------------------------------------


def _settable_fields() -> set[str]:
    slots = {f"tls.{each.name}" for each in dataclasses.fields(TlsSettings)}
    slots |= {f"mqtt.{each.name}" for each in dataclasses.fields(MqttSettings)}
    slots |= {each.name for each in dataclasses.fields(BrokerConfig) if each.name not in ("tls", "mqtt")}
    return slots - {"name", "target"}  # a broker's identity, not settings


def test_every_model_field_is_declared_as_a_key_and_every_key_fills_a_field() -> None:
    assert {key.slot for key in KEYS} == _settable_fields()


def test_module_keys_are_exactly_the_module_fields() -> None:
    module_slots = {key.slot for key in KEYS if Scope.MODULE in key.where and not key.section}
    assert module_slots == {each.name for each in dataclasses.fields(ModuleConfig)} - {"tls", "mqtt"}


def test_built_in_defaults_come_from_the_model() -> None:
    assert DEFAULTS["interval"] == BrokerConfig("a", Target("a", 1)).interval
    assert DEFAULTS["mqtt.keepalive"] == MqttSettings().keepalive


def test_a_module_keeps_every_setting_when_it_probes_a_target() -> None:
    module = ModuleConfig(timeout=3.0, tls=TlsSettings(server_name="x"), mqtt=MqttSettings(username="u"))
    broker = module.broker_for(Target("b", 8883), name="b:8883", timeout=2.0)
    assert (broker.tls, broker.mqtt, broker.timeout, broker.name) == (module.tls, module.mqtt, 2.0, "b:8883")


# --- the probe's TLS context: no tls.* setting dropped on the way ---------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    root = pki.root("Context Test CA")
    client = pki.leaf("client", root, client=True)
    return {
        "ca_file": str(root.cert_path),
        "cert_file": str(client.cert_path),
        "key_file": str(client.key_path),
    }


def test_every_tls_setting_shapes_the_cached_context_unless_it_is_per_connection(
    tls_files: dict[str, str],
) -> None:
    base = TlsSettings(ca_file=tls_files["ca_file"])
    changes: dict[str, dict[str, object]] = {
        "ca_file": {"ca_file": tls_files["cert_file"]},  # also a PEM certificate: another trust store
        "server_name": {"server_name": "other.example"},
        "cert_file": {"cert_file": tls_files["cert_file"], "key_file": tls_files["key_file"]},
        "intermediates_file": {"intermediates_file": tls_files["ca_file"]},
        "min_version": {"min_version": "TLSv1.3"},
        "max_version": {"max_version": "TLSv1.2"},
        "alpn": {"alpn": ("mqtt",)},
        "served_cert_file": {"served_cert_file": tls_files["cert_file"]},
    }
    changed_fields = {name for change in changes.values() for name in change}
    assert changed_fields == {each.name for each in dataclasses.fields(TlsSettings)}, "a new field: add it"
    context = probe_tls.client_context(base, verify=True)
    for what, change in changes.items():
        changed = dataclasses.replace(base, **change)  # type: ignore[arg-type]
        shares = probe_tls.client_context(changed, verify=True) is context
        assert shares == (what in ("server_name", "intermediates_file", "served_cert_file")), what
