"""Every setting key, declared once: its validation, where it may appear, and the model field it fills.

The model field (in model.py) gives the type and the default; the declaration here gives the rest.
The loader walks YAML by these declarations only, so a new key is its field and its line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any

from mqtt_cert_exporter.config.files import read_password_file
from mqtt_cert_exporter.config.model import (
    AddressSelection,
    BrokerConfig,
    BrokerKindName,
    IpProtocol,
    MqttSettings,
    Secret,
    TlsSettings,
)
from mqtt_cert_exporter.config.values import (
    Invalid,
    alpn,
    choice_of,
    duration,
    expiry_threshold,
    keepalive,
    mqtt_string,
    nonempty_string,
    password,
    protocol,
    proxy_url,
    roundtrip,
    string,
    tls_version,
)


class Scope(StrEnum):
    """The places of a config file where settings are given."""

    DEFAULTS = "defaults"
    BROKER = "brokers"
    MODULE = "modules"
    DISCOVER = "discover"


EVERYWHERE = frozenset(Scope)
#: everything that becomes a scheduled broker (modules are /probe profiles)
BROKERS = frozenset({Scope.DEFAULTS, Scope.BROKER, Scope.DISCOVER})


@dataclass(frozen=True, slots=True)
class Key:
    #: as written in the config: "interval", "tls.ca_file", "mqtt.password_file"
    name: str
    #: the YAML value (after ${ENV} expansion) -> the model's value; raises Invalid
    validate: Callable[[object], Any]
    where: frozenset[Scope] = EVERYWHERE
    #: the model field it fills (default: the last part of the name); two keys may fill one field
    fills: str = ""
    #: a file path: made absolute against the config file's directory before ``validate`` sees it
    path: bool = False
    #: what to say where the key is known but not allowed (default: "unknown key")
    refused: Mapping[Scope, str] = field(default_factory=dict)

    #: "" for a top-level setting, else "tls" or "mqtt"
    section: str = field(init=False)
    #: where the value lands in a layer of settings: "interval", "tls.ca_file", "mqtt.password"
    slot: str = field(init=False)

    def __post_init__(self) -> None:
        section, _, last = self.name.rpartition(".")
        field_name = self.fills or last
        object.__setattr__(self, "section", section)
        object.__setattr__(self, "slot", f"{section}.{field_name}" if section else field_name)


def password_file(path: object) -> Secret:
    try:
        return read_password_file(string(path))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


KEYS: tuple[Key, ...] = (
    Key("interval", duration, where=BROKERS),
    Key("timeout", duration),
    Key("addresses", choice_of("addresses", AddressSelection), where=BROKERS),
    Key("ip_protocol", choice_of("ip_protocol", IpProtocol), where=BROKERS),
    Key("proxy_url", proxy_url, where=BROKERS, fills="proxy"),
    Key("expiry_warning", expiry_threshold),
    Key("expiry_critical", expiry_threshold),
    Key("chain_retention", duration, where=BROKERS),
    Key("broker_kind", choice_of("broker_kind", BrokerKindName), where=BROKERS),
    Key("tls.ca_file", string, path=True),
    Key("tls.server_name", nonempty_string),
    Key("tls.cert_file", string, path=True),
    Key("tls.key_file", string, path=True),
    Key("tls.intermediates_file", string, path=True),
    Key("tls.min_version", tls_version),
    Key("tls.max_version", tls_version),
    Key("tls.alpn", alpn),
    Key(
        "tls.served_cert_file",
        string,
        path=True,
        where=EVERYWHERE - {Scope.DISCOVER},
        refused={Scope.DISCOVER: "not allowed here: each listener's certfile is used"},
    ),
    Key("mqtt.protocol", protocol),
    Key("mqtt.client_id", mqtt_string),
    Key("mqtt.username", mqtt_string),
    Key("mqtt.password", password),
    Key("mqtt.password_file", password_file, path=True, fills="password"),
    Key("mqtt.keepalive", keepalive),
    Key("mqtt.roundtrip", roundtrip),
)

BY_NAME: Mapping[str, Key] = {key.name: key for key in KEYS}
#: The keys that hold a mapping of keys.
SECTIONS: Mapping[str, frozenset[Scope]] = {
    section: frozenset().union(*(key.where for key in KEYS if key.section == section))
    for section in ("tls", "mqtt")
}
#: The keys of a scope that are not settings: what a broker or a discovery is.
IDENTITY: Mapping[Scope, tuple[str, ...]] = {
    Scope.BROKER: ("name", "address"),
    Scope.DISCOVER: ("mosquitto_conf", "name_prefix"),
}
TOP_LEVEL = frozenset(Scope)
#: slot -> the scopes whose model has it
SLOT_SCOPES: Mapping[str, frozenset[Scope]] = {
    key.slot: frozenset().union(*(other.where for other in KEYS if other.slot == key.slot)) for key in KEYS
}

_MODEL_OF_SECTION: Mapping[str, type] = {"": BrokerConfig, "tls": TlsSettings, "mqtt": MqttSettings}


def _defaults() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for section, model in _MODEL_OF_SECTION.items():
        for each in fields(model):
            if each.default is not MISSING:
                found[f"{section}.{each.name}" if section else each.name] = each.default
    return found


#: slot -> the model's default (built-in settings that cross-field checks compare against)
DEFAULTS: Mapping[str, Any] = _defaults()
