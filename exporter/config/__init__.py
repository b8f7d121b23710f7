"""The configuration: YAML -> frozen dataclasses every room reads. Validation collects every error with
its path.

model.py      the dataclasses (and ConfigError)
grammar.py    durations, addresses, proxy URLs, certificate name matching (pure)
values.py     validators of single values (pure)
keys.py       every setting key declared once: validation, where it may appear, the field it fills
document.py   YAML text -> document: size cap, no aliases, no duplicate keys
loader.py     document -> model: ${ENV}, defaults -> brokers / modules / discovery, errors with paths
discovery.py  mosquitto.conf -> brokers
files.py      file stamps, TLS-file checks, password files, a certificate file's names
"""

from mqtt_cert_exporter.config.files import file_stamp, read_password_file, tls_files_problem
from mqtt_cert_exporter.config.grammar import parse_address, parse_duration, parse_proxy_url
from mqtt_cert_exporter.config.loader import load_config, parse_config
from mqtt_cert_exporter.config.model import (
    DEFAULT_CHAIN_RETENTION,
    DEFAULT_EXPIRY_CRITICAL,
    DEFAULT_EXPIRY_WARNING,
    AddressSelection,
    BrokerConfig,
    Config,
    ConfigError,
    ExpiryThreshold,
    IpProtocol,
    ModuleConfig,
    MqttProtocol,
    MqttSettings,
    ProbeSettings,
    ProxyScheme,
    ProxySettings,
    RoundtripSettings,
    Secret,
    Target,
    TargetScheme,
    TlsSettings,
    TlsVersion,
)

__all__ = [
    "DEFAULT_CHAIN_RETENTION",
    "DEFAULT_EXPIRY_CRITICAL",
    "DEFAULT_EXPIRY_WARNING",
    "AddressSelection",
    "BrokerConfig",
    "Config",
    "ConfigError",
    "ExpiryThreshold",
    "IpProtocol",
    "ModuleConfig",
    "MqttProtocol",
    "MqttSettings",
    "ProbeSettings",
    "ProxyScheme",
    "ProxySettings",
    "RoundtripSettings",
    "Secret",
    "Target",
    "TargetScheme",
    "TlsSettings",
    "TlsVersion",
    "file_stamp",
    "load_config",
    "parse_address",
    "parse_config",
    "parse_duration",
    "parse_proxy_url",
    "read_password_file",
    "tls_files_problem",
]
