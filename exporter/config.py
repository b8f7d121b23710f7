"""YAML configuration -> frozen dataclasses. Validation collects every error with its path."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import ssl
import stat
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import Any, NamedTuple, TypeVar

import yaml

from exporter.brokerkinds import BrokerKind


class Secret:
    """A value that must never be printed: repr/str show a placeholder."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('<hidden>')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    ca_file: str | None = None
    server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    intermediates_file: str | None = None
    #: "TLSv1.2" / "TLSv1.3" or None
    min_version: str | None = None
    max_version: str | None = None
    alpn: tuple[str, ...] = ()
    #: The certificate file the broker is configured with (compared with the served leaf every probe).
    served_cert_file: str | None = None


@dataclass(frozen=True, slots=True)
class RoundtripSettings:
    """``mqtt.roundtrip``: publish a message and receive it back, through the broker."""

    topic: str
    qos: int = 1
    #: the longest the round trip may take; None: what is left of the probe's timeout
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class MqttSettings:
    #: "auto" (learn what the broker speaks, without sending credentials), "5" or "3.1.1"
    protocol: str = "auto"
    client_id: str | None = None  # None: generated, unique per probe
    username: str | None = None
    password: Secret | None = None
    keepalive: int = 30
    roundtrip: RoundtripSettings | None = None


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """``proxy_url``: the TCP connection goes through this proxy."""

    #: "socks5" (we resolve names), "socks5h" (the proxy resolves names) or "http" (CONNECT)
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: Secret | None = None

    def __str__(self) -> str:
        """The URL without credentials (safe for logs)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def resolves_names(self) -> bool:
        """Whether the proxy resolves the broker's host name (else we resolve it and send the IP)."""
        return self.scheme in ("socks5h", "http")


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    #: "mqtts" (MQTT over TLS) or "wss" (MQTT over secure WebSockets)
    scheme: str = "mqtts"
    path: str = ""

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"{host}:{self.port}"
        return f"{self.scheme}://{base}{self.path}" if self.scheme != "mqtts" else base


@dataclass(frozen=True, slots=True)
class ExpiryThreshold:
    """How long before a certificate expires an alert starts: a fixed time, or a share of its lifetime.

    A share suits short-lived certificates: 33% of a 7-day certificate is about 2.3 days, of a 90-day
    one about 30 days, so one rule file serves both fleets.
    """

    seconds: float | None = None
    #: fraction of the certificate's lifetime (not_after - not_before), 0 < share < 1
    share: float | None = None

    def for_lifetime(self, lifetime: float | None) -> float | None:
        """The threshold in seconds; None for a share when the lifetime is unknown."""
        if self.share is None:
            return self.seconds
        return None if lifetime is None else self.share * lifetime

    def __str__(self) -> str:
        if self.share is not None:
            return f"{self.share * 100:g}%"
        seconds = self.seconds or 0.0
        return f"{seconds / 86400:g}d" if seconds % 86400 == 0 else f"{seconds:g}s"


DEFAULT_EXPIRY_WARNING = ExpiryThreshold(seconds=28 * 86400.0)
DEFAULT_EXPIRY_CRITICAL = ExpiryThreshold(seconds=14 * 86400.0)
#: How long the last chain seen stays exported while later probes receive none (the broker is down)
DEFAULT_CHAIN_RETENTION = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    name: str
    target: Target
    interval: float = 60.0
    timeout: float = 10.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    expiry_warning: ExpiryThreshold = DEFAULT_EXPIRY_WARNING
    expiry_critical: ExpiryThreshold = DEFAULT_EXPIRY_CRITICAL
    chain_retention: float = DEFAULT_CHAIN_RETENTION
    #: "first": probe one address of the name (the default); "all": every A/AAAA record, each labelled
    addresses: str = "first"
    #: "any" (IPv4 preferred, IPv6 as fallback), "ip4" or "ip6"
    ip_protocol: str = "any"
    proxy: ProxySettings | None = None
    #: "mosquitto", "rabbitmq", "emqx", "hivemq", "ejabberd", or "" (not said): the fixes suggested
    #: name that broker's settings (exporter.brokerkinds)
    broker_kind: str = ""

    @property
    def address(self) -> str:
        return str(self.target)

    @property
    def server_name(self) -> str:
        return self.tls.server_name or self.target.host


@dataclass(frozen=True, slots=True)
class ModuleConfig:
    """A named probe profile (reserved for probing ad-hoc targets): broker settings without name/address."""

    timeout: float = 10.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    expiry_warning: ExpiryThreshold = DEFAULT_EXPIRY_WARNING
    expiry_critical: ExpiryThreshold = DEFAULT_EXPIRY_CRITICAL


@dataclass(frozen=True, slots=True)
class Config:
    brokers: tuple[BrokerConfig, ...] = ()
    modules: tuple[tuple[str, ModuleConfig], ...] = ()

    def broker(self, name: str) -> BrokerConfig | None:
        return next((broker for broker in self.brokers if broker.name == name), None)

    def module(self, name: str) -> ModuleConfig | None:
        return next((module for module_name, module in self.modules if module_name == name), None)


class ConfigError(Exception):
    """Everything wrong with a configuration; each entry reads "path: message"."""

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        # The list (not the joined text) is the only arg, so the error survives pickling intact.
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --- durations ---------------------------------------------------------------------------------

_DURATION_UNITS: Mapping[str, Fraction] = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),  # U+00B5 MICRO SIGN
    "μs": Fraction(1, 10**6),  # U+03BC GREEK SMALL LETTER MU (Go accepts both)
    "ms": Fraction(1, 10**3),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    # Prometheus' units beyond Go's: certificate lifetimes and thresholds are counted in days
    "d": Fraction(86400),
    "w": Fraction(7 * 86400),
}
_DURATION_PART = re.compile(r"(?P<number>[0-9]*(?:\.[0-9]*)?)(?P<unit>[^0-9.]*)")
_PLAIN_NUMBER = re.compile(r"[0-9]*\.?[0-9]*")
_MAX_DURATION = Fraction(2**63 - 1, 10**9)  # Go's time.Duration limit, about 292 years
_MAX_NUMBER_LENGTH = 32


def parse_duration(text: str) -> float:
    """Parse a Go-style duration ("1h30m", "1.5s", "500ms", and Prometheus' "28d", "2w") into seconds."""

    def invalid(reason: str) -> ValueError:
        return ValueError(f"invalid duration {_preview(text)}: {reason}")

    if not text:
        raise ValueError("empty duration; expected something like 10s")
    if text.startswith("-"):
        raise invalid("must not be negative")
    if _PLAIN_NUMBER.fullmatch(text) and any(c.isdigit() for c in text):
        raise invalid("missing unit; add a unit, e.g. 60s")

    # Summed as exact fractions so "0.1s0.2s" is exactly 0.3 and huge inputs cannot overflow a float.
    total = Fraction(0)
    pos = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        assert match is not None  # both groups may be empty, so the pattern always matches
        number, unit = match["number"], match["unit"]
        if number.strip(".") == "":
            raise invalid("expected a number followed by a unit, e.g. 1h30m")
        if not unit:
            if match.end() == len(text):
                raise invalid(f"missing unit after {number}")
            raise invalid("malformed number")
        if len(number) > _MAX_NUMBER_LENGTH:
            raise invalid("number has too many digits")
        if unit not in _DURATION_UNITS:
            raise invalid(f"unknown unit {_preview(unit)}; use ns, us, ms, s, m, h, d or w")
        total += Fraction(Decimal(number)) * _DURATION_UNITS[unit]
        if total > _MAX_DURATION:
            raise invalid("too large")
        pos = match.end()
    return float(total)


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


# --- addresses ---------------------------------------------------------------------------------

_TLS_SCHEMES: Mapping[str, str] = {"mqtts": "mqtts", "ssl": "mqtts", "tls": "mqtts", "wss": "wss"}
_PLAINTEXT_SCHEMES = frozenset({"mqtt", "tcp", "ws"})
_DEFAULT_PORTS: Mapping[str, int] = {"mqtts": 8883, "wss": 443}
_DEFAULT_WSS_PATH = "/mqtt"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(r"[^\s/?#@\[\]:]+")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_address(text: str) -> Target:
    """Parse "host", "host:port", "[v6]:port", "mqtts://host:port" or "wss://host:port/path"."""
    if not text:
        raise ValueError("empty address")
    if any(c.isspace() for c in text):
        raise ValueError("address must not contain whitespace")

    scheme, rest = "mqtts", text
    if match := _SCHEME.match(text):
        given = match[1].lower()
        if given in _PLAINTEXT_SCHEMES:
            raise ValueError(
                f"{given}:// is not TLS; this exporter probes TLS listeners only (use mqtts:// or wss://)"
            )
        if given not in _TLS_SCHEMES:
            raise ValueError(f"unknown scheme {given}://; use mqtts:// (or ssl://, tls://) or wss://")
        scheme, rest = _TLS_SCHEMES[given], text[match.end() :]
    elif "://" in text:
        raise ValueError("malformed scheme; use mqtts:// or wss://")

    authority, slash, path = rest.partition("/")
    if "@" in authority:
        # Never echo this part of the address: it is probably a password.
        raise ValueError("credentials do not belong in the address; use mqtt.username and mqtt.password")
    host, port_text = _split_host_port(authority)
    port = _DEFAULT_PORTS[scheme] if port_text is None else _parse_port(port_text)

    path = slash + path
    if scheme == "wss":
        path = path or _DEFAULT_WSS_PATH
    elif path in ("", "/"):
        path = ""
    else:
        raise ValueError("a path is only allowed with wss://")
    return Target(host=host, port=port, scheme=scheme, path=path)


_PROXY_SCHEMES = ("socks5", "socks5h", "http")
_DEFAULT_PROXY_PORTS: Mapping[str, int] = {"socks5": 1080, "socks5h": 1080}


def parse_proxy_url(text: str) -> ProxySettings:
    """Parse "socks5://[user:password@]host[:port]", "socks5h://..." or "http://[user:password@]host:port".

    Messages never quote the URL or its user part: it may hold a password.
    """
    if not text or any(c.isspace() for c in text):
        raise ValueError("expected a proxy URL like socks5://proxy.example.com:1080 (no whitespace)")
    match = _SCHEME.match(text)
    if match is None:
        raise ValueError("expected a proxy URL like socks5://proxy.example.com:1080 or http://proxy:3128")
    scheme = match[1].lower()
    if scheme not in _PROXY_SCHEMES:
        raise ValueError(f"unsupported proxy scheme {scheme}://; use socks5://, socks5h:// or http://")
    authority, _, path = text[match.end() :].partition("/")
    if path:
        raise ValueError("a proxy URL has no path")
    userinfo, at, hostport = authority.rpartition("@")
    username: str | None = None
    password: Secret | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = urllib.parse.unquote(user)
        if not username:
            raise ValueError("the proxy URL has credentials without a user name")
        if colon:
            password = Secret(urllib.parse.unquote(secret))
        if scheme.startswith("socks5") and (
            len(username.encode()) > 255 or (password is not None and len(password.reveal().encode()) > 255)
        ):
            raise ValueError("SOCKS5 user names and passwords are limited to 255 bytes")
    host, port_text = _split_host_port(hostport)
    if port_text is not None:
        port = _parse_port(port_text)
    elif scheme in _DEFAULT_PROXY_PORTS:
        port = _DEFAULT_PROXY_PORTS[scheme]
    else:
        raise ValueError("an http:// proxy URL needs a port, e.g. http://proxy.example.com:3128")
    return ProxySettings(scheme=scheme, host=host, port=port, username=username, password=password)


def _split_host_port(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise ValueError("missing ']' after IPv6 address")
        host, after = authority[1:end], authority[end + 1 :]
        if not _is_ipv6(host):
            raise ValueError("brackets are only for IPv6 addresses, e.g. [2001:db8::1]:8883")
        if not after:
            return host, None
        if not after.startswith(":"):
            raise ValueError("expected ':port' after ']'")
        return host, after[1:]
    if authority.count(":") > 1:
        # A bare IPv6 address is accepted only without a port: "2001:db8::1" is the whole host.
        if _is_ipv6(authority):
            return authority, None
        raise ValueError("IPv6 address must be bracketed when a port follows, e.g. [2001:db8::1]:8883")
    host, colon, port = authority.partition(":")
    if not host:
        raise ValueError("host must not be empty")
    if not _HOST.fullmatch(host):
        raise ValueError(f"invalid host {_preview(host)}")
    return host, port if colon else None


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _parse_port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise ValueError("port must be 1-65535")
    return int(text)


# --- loading -----------------------------------------------------------------------------------


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; relative file paths in it are relative to its directory."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not valid UTF-8"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror or exc}"]) from None
    return parse_config(text, base_dir=os.path.dirname(os.path.abspath(path)), env=env)


def parse_config(text: str, *, base_dir: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML config text; raises ConfigError listing every problem found.

    `env` (default: os.environ) supplies ${VAR} expansions.
    """
    try:
        document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        # `from None`: PyYAML's own message quotes the offending line, which may hold a password.
        raise ConfigError([_describe_yaml_error(exc)]) from None
    parser = _Parser(os.path.abspath(base_dir), os.environ if env is None else env)
    config = parser.parse(document)
    if parser.errors:
        raise ConfigError(parser.errors)
    return config


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    # Built from the parts that carry no document content (no snippet of the line).
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(exc, yaml.reader.ReaderError):
        return f"character {exc.position}: {exc.reason}"
    return f"invalid YAML ({type(exc).__name__})"


class _Invalid(Exception):
    """A validator's complaint about a value; `suffix` extends the path (e.g. "[2]" for a list item)."""

    def __init__(self, message: str, suffix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.suffix = suffix


class _Reported(Exception):
    """The current value is unusable and its errors have already been recorded."""


class _Setting(NamedTuple):
    value: Any
    #: where it was set, e.g. "defaults.tls.ca_file"; None for a built-in default
    path: str | None


@dataclass
class _Layer:
    """The settings one config level (defaults, a broker, a module) sets explicitly."""

    top: dict[str, _Setting] = field(default_factory=dict)  # interval, timeout
    tls: dict[str, _Setting] = field(default_factory=dict)
    mqtt: dict[str, _Setting] = field(default_factory=dict)

    def overridden_by(self, other: _Layer) -> _Layer:
        return _Layer(
            top={**self.top, **other.top},
            tls={**self.tls, **other.tls},
            mqtt={**self.mqtt, **other.mqtt},
        )


_BUILTIN_INTERVAL = _Setting(BrokerConfig.__dataclass_fields__["interval"].default, None)
_BUILTIN_TIMEOUT = _Setting(BrokerConfig.__dataclass_fields__["timeout"].default, None)
_BUILTIN_ADDRESSES = _Setting(BrokerConfig.__dataclass_fields__["addresses"].default, None)
_BUILTIN_IP_PROTOCOL = _Setting(BrokerConfig.__dataclass_fields__["ip_protocol"].default, None)
_BUILTIN_EXPIRY_WARNING = _Setting(DEFAULT_EXPIRY_WARNING, None)
_BUILTIN_EXPIRY_CRITICAL = _Setting(DEFAULT_EXPIRY_CRITICAL, None)
_BUILTIN_CHAIN_RETENTION = _Setting(DEFAULT_CHAIN_RETENTION, None)
_TOP_LEVEL_KEYS = frozenset({"defaults", "brokers", "modules", "discover"})
_THRESHOLD_KEYS = frozenset({"expiry_warning", "expiry_critical"})
_DEFAULTS_KEYS = frozenset(
    {
        "interval",
        "timeout",
        "tls",
        "mqtt",
        "addresses",
        "ip_protocol",
        "proxy_url",
        "chain_retention",
        "broker_kind",
    }
    | _THRESHOLD_KEYS
)
_BROKER_KEYS = _DEFAULTS_KEYS | {"name", "address"}
_MODULE_KEYS = frozenset({"timeout", "tls", "mqtt"} | _THRESHOLD_KEYS)
#: Config keys that fill the same setting; setting both in one section is an error.
_ALIASES: Mapping[str, str] = {"password_file": "password"}

_Validator = Callable[[object], Any]
T = TypeVar("T")


class _Parser:
    def __init__(self, base_dir: str, env: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.env = env
        self.errors: list[str] = []
        self._reported: set[str] = set()
        self._tls_fields: Mapping[str, _Validator] = {
            "ca_file": self._file,
            "server_name": _nonempty_string,
            "cert_file": self._file,
            "key_file": self._file,
            "intermediates_file": self._file,
            "min_version": _tls_version,
            "max_version": _tls_version,
            "alpn": _alpn,
            "served_cert_file": self._file,
        }
        self._top_fields: Mapping[str, _Validator] = {
            "interval": _duration,
            "timeout": _duration,
            "addresses": _addresses,
            "ip_protocol": _ip_protocol,
            "proxy_url": _proxy_url,
            "expiry_warning": _expiry_threshold,
            "expiry_critical": _expiry_threshold,
            "chain_retention": _duration,
            "broker_kind": _broker_kind,
        }
        self._mqtt_fields: Mapping[str, _Validator] = {
            "protocol": _protocol,
            "client_id": _string,
            "username": _string,
            "password": _password,
            "password_file": self._password_file,
            "keepalive": _keepalive,
            "roundtrip": _roundtrip,
        }

    def error(self, path: str, message: str) -> None:
        line = f"{path}: {message}"
        # A problem inherited from `defaults` is found once per broker but reported once.
        if line not in self._reported:
            self._reported.add(line)
            self.errors.append(line)

    def parse(self, document: object) -> Config:
        if document is None:
            return Config()
        if not isinstance(document, dict):
            self.error("config", f"expected a mapping at the top level, got {_kind(document)}")
            return Config()
        for key in document:
            if key not in _TOP_LEVEL_KEYS:
                self.error(str(key), "unknown key")

        defaults = _Layer()
        raw_defaults = document.get("defaults")
        if raw_defaults is not None:
            if isinstance(raw_defaults, dict):
                defaults = self._layer(raw_defaults, "defaults", _DEFAULTS_KEYS)
            else:
                self.error("defaults", f"expected a mapping, got {_kind(raw_defaults)}")
        brokers = self._brokers(document.get("brokers"), defaults)
        modules = self._modules(document.get("modules"), defaults)
        brokers += self._discover(document.get("discover"), defaults, brokers)
        return Config(brokers=brokers, modules=modules)

    def _brokers(self, raw: object, defaults: _Layer) -> tuple[BrokerConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error("brokers", f"expected a list of brokers, got {_kind(raw)}")
            return ()
        brokers: list[BrokerConfig] = []
        first_use: dict[str, str] = {}
        for index, item in enumerate(raw):
            path = f"brokers[{index}]"
            if not isinstance(item, dict):
                self.error(path, f"expected a mapping with name and address, got {_kind(item)}")
                continue
            name = self._required(item, path, "name", _nonempty_string)
            if name is not None:
                if name in first_use:
                    self.error(f"{path}.name", f"duplicate name {name!r}, already used by {first_use[name]}")
                else:
                    first_use[name] = path
            target = self._required(item, path, "address", _address)
            layer = defaults.overridden_by(self._layer(item, path, _BROKER_KEYS, skip=("name", "address")))
            self._check_consistency(layer, path, has_interval=True)
            if target is not None:
                self._check_target(layer, target, path)
            if name is not None and target is not None:
                tls_problem = tls_files_problem(_values(layer.tls))
                if tls_problem:
                    self.error(f"{path}.tls", tls_problem)
                brokers.append(
                    BrokerConfig(
                        name=name,
                        target=target,
                        interval=layer.top.get("interval", _BUILTIN_INTERVAL).value,
                        timeout=layer.top.get("timeout", _BUILTIN_TIMEOUT).value,
                        tls=TlsSettings(**_values(layer.tls)),
                        mqtt=MqttSettings(**_values(layer.mqtt)),
                        addresses=layer.top.get("addresses", _BUILTIN_ADDRESSES).value,
                        ip_protocol=layer.top.get("ip_protocol", _BUILTIN_IP_PROTOCOL).value,
                        proxy=layer.top.get("proxy_url", _Setting(None, None)).value,
                        expiry_warning=layer.top.get("expiry_warning", _BUILTIN_EXPIRY_WARNING).value,
                        expiry_critical=layer.top.get("expiry_critical", _BUILTIN_EXPIRY_CRITICAL).value,
                        chain_retention=layer.top.get("chain_retention", _BUILTIN_CHAIN_RETENTION).value,
                        broker_kind=layer.top.get("broker_kind", _Setting("", None)).value,
                    )
                )
        return tuple(brokers)

    def _modules(self, raw: object, defaults: _Layer) -> tuple[tuple[str, ModuleConfig], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.error("modules", f"expected a mapping of module names to settings, got {_kind(raw)}")
            return ()
        modules: list[tuple[str, ModuleConfig]] = []
        for name, item in raw.items():
            path = f"modules.{name}"
            if not isinstance(name, str) or not name.strip():
                self.error(path, "module name must be a non-empty string")
                continue
            if item is not None and not isinstance(item, dict):
                self.error(path, f"expected a mapping, got {_kind(item)}")
                continue
            layer = defaults.overridden_by(self._layer(item or {}, path, _MODULE_KEYS))
            self._check_consistency(layer, path, has_interval=False)
            module = ModuleConfig(
                timeout=layer.top.get("timeout", _BUILTIN_TIMEOUT).value,
                tls=TlsSettings(**_values(layer.tls)),
                mqtt=MqttSettings(**_values(layer.mqtt)),
                expiry_warning=layer.top.get("expiry_warning", _BUILTIN_EXPIRY_WARNING).value,
                expiry_critical=layer.top.get("expiry_critical", _BUILTIN_EXPIRY_CRITICAL).value,
            )
            modules.append((name, module))
        return tuple(modules)

    def _layer(
        self, mapping: dict[Any, Any], path: str, allowed: frozenset[str], skip: tuple[str, ...] = ()
    ) -> _Layer:
        layer = _Layer()
        for key, raw in mapping.items():
            key_path = f"{path}.{key}"
            if key in skip:
                continue
            if key not in allowed:
                self.error(key_path, "unknown key")
            elif raw is None:
                continue  # an empty key inherits, like an absent one
            elif key == "tls":
                layer.tls = self._fields(raw, key_path, self._tls_fields)
            elif key == "mqtt":
                layer.mqtt = self._fields(raw, key_path, self._mqtt_fields)
            else:
                self._set(layer.top, key, raw, key_path, self._top_fields[key])
        return layer

    def _fields(self, raw: object, path: str, validators: Mapping[str, _Validator]) -> dict[str, _Setting]:
        fields: dict[str, _Setting] = {}
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping, got {_kind(raw)}")
            return fields
        for key, value in raw.items():
            key_path = f"{path}.{key}"
            validate = validators.get(key)
            if validate is None:
                self.error(key_path, "unknown key")
                continue
            if value is None:
                continue
            name = _ALIASES.get(key, key)
            if name != key and raw.get(name) is not None:
                self.error(key_path, f"cannot be combined with {name}; set only one of them")
                continue
            self._set(fields, name, value, key_path, validate)
        return fields

    def _set(
        self, into: dict[str, _Setting], name: str, raw: object, path: str, validate: _Validator
    ) -> None:
        with contextlib.suppress(_Reported):
            into[name] = _Setting(self._check(raw, path, validate), path)

    def _required(
        self, mapping: dict[Any, Any], path: str, key: str, validate: Callable[[object], T]
    ) -> T | None:
        raw = mapping.get(key)
        if raw is None:
            self.error(f"{path}.{key}", "required")
            return None
        try:
            return self._check(raw, f"{path}.{key}", validate)
        except _Reported:
            return None

    def _check(self, raw: object, path: str, validate: Callable[[object], T]) -> T:
        try:
            return validate(self._expand(raw, path))
        except _Invalid as exc:
            self.error(path + exc.suffix, exc.message)
            raise _Reported from None

    # ${VAR} expansion happens value by value as the schema is walked (not over the whole document), so
    # YAML alias bombs and unknown keys are never traversed.
    def _expand(self, raw: object, path: str) -> object:
        if isinstance(raw, str):
            return self._expand_string(raw, path)
        if isinstance(raw, list):
            items: list[object] = []
            failed = False
            for index, item in enumerate(raw):
                try:
                    items.append(self._expand(item, f"{path}[{index}]") if isinstance(item, str) else item)
                except _Reported:
                    failed = True
            if failed:
                raise _Reported
            return items
        if isinstance(raw, dict):  # a nested setting (mqtt.roundtrip): expand its values
            mapping: dict[object, object] = {}
            broken = False
            for key, item in raw.items():
                try:
                    mapping[key] = self._expand(item, f"{path}.{key}")
                except _Reported:
                    broken = True
            if broken:
                raise _Reported
            return mapping
        return raw

    def _expand_string(self, text: str, path: str) -> str:
        if "$" not in text:
            return text
        problems: list[str] = []

        def substitute(match: re.Match[str]) -> str:
            if match[0] == "$${":
                return "${"
            name = match["name"]
            # The text around a bad reference is never quoted: it may be part of a password.
            if not match["close"] or not _ENV_NAME.fullmatch(name):
                problems.append("invalid ${...} reference; use ${NAME}, or $${ for a literal ${")
                return ""
            if name not in self.env:
                problems.append(f"environment variable {name} is not set")
                return ""
            return self.env[name]

        expanded = _ENV_REFERENCE.sub(substitute, text)
        for problem in problems:
            self.error(path, problem)
        if problems:
            raise _Reported
        return expanded

    def _check_consistency(self, layer: _Layer, prefix: str, *, has_interval: bool) -> None:
        """Checks across settings, run on a merged layer; `prefix` is the broker or module path."""
        if has_interval:
            timeout = layer.top.get("timeout", _BUILTIN_TIMEOUT)
            interval = layer.top.get("interval", _BUILTIN_INTERVAL)
            if timeout.value > interval.value:
                t, i = _format_seconds(timeout.value), _format_seconds(interval.value)
                self._conflict(
                    prefix,
                    (timeout, f"{t} must not exceed interval {i}"),
                    (interval, f"{i} is shorter than timeout {t}"),
                )
        warning = layer.top.get("expiry_warning", _BUILTIN_EXPIRY_WARNING)
        critical = layer.top.get("expiry_critical", _BUILTIN_EXPIRY_CRITICAL)
        if _earlier(critical.value, warning.value):
            w, c = warning.value, critical.value
            self._conflict(
                prefix,
                (critical, f"{c} must not be longer than expiry_warning {w}"),
                (warning, f"{w} is shorter than expiry_critical {c}"),
            )
        low, high = layer.tls.get("min_version"), layer.tls.get("max_version")
        if (
            low is not None
            and high is not None
            and _TLS_ORDER.index(low.value) > _TLS_ORDER.index(high.value)
        ):
            self._conflict(
                prefix,
                (low, f"{low.value} is higher than max_version {high.value}"),
                (high, f"{high.value} is lower than min_version {low.value}"),
            )
        key_file = layer.tls.get("key_file")
        if key_file is not None and key_file.path is not None and "cert_file" not in layer.tls:
            self.error(key_file.path, "requires cert_file")
        roundtrip = layer.mqtt.get("roundtrip")
        if roundtrip is not None and roundtrip.value.timeout is not None:
            timeout = layer.top.get("timeout", _BUILTIN_TIMEOUT)
            if roundtrip.value.timeout > timeout.value:
                r, t = _format_seconds(roundtrip.value.timeout), _format_seconds(timeout.value)
                where = "the default" if timeout.path is None else f"from {timeout.path}"
                self.error(
                    f"{roundtrip.path}.timeout", f"{r} must not exceed the probe timeout {t} ({where})"
                )

    def _check_target(self, layer: _Layer, target: Target, prefix: str) -> None:
        """An IP-literal address must be reachable with the configured ip_protocol."""
        ip_protocol = layer.top.get("ip_protocol")
        if ip_protocol is None or ip_protocol.path is None:
            return
        try:
            version = ipaddress.ip_address(target.host).version
        except ValueError:
            return  # a name: its records decide at probe time
        if (ip_protocol.value, version) in (("ip4", 6), ("ip6", 4)):
            self.error(
                ip_protocol.path,
                f"{ip_protocol.value} cannot reach the IPv{version} address of {prefix}.address",
            )

    def _conflict(self, prefix: str, first: tuple[_Setting, str], second: tuple[_Setting, str]) -> None:
        """Report two settings that contradict each other at the one set closest to `prefix`."""

        def closeness(setting: _Setting) -> int:
            if setting.path is None:
                return 0
            return 2 if setting.path.startswith(prefix + ".") else 1

        if closeness(second[0]) > closeness(first[0]):
            first, second = second, first
        (at, message), (other, _) = first, second
        assert at.path is not None, "built-in defaults never conflict"
        if other.path is None:
            message += " (the default)"
        elif other.path.rpartition(".")[0] != at.path.rpartition(".")[0]:
            message += f" (from {other.path})"
        self.error(at.path, message)

    def _file(self, value: object) -> str:
        path = os.path.normpath(os.path.join(self.base_dir, _nonempty_string(value)))
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise _Invalid(f"{path}: not a regular file")
            with open(path, "rb"):  # opened (not read) because os.access() lies for root and ACLs
                pass
        except FileNotFoundError:
            raise _Invalid(f"{path}: no such file") from None
        except OSError as exc:
            raise _Invalid(f"{path}: {exc.strerror or 'cannot be read'}") from None
        return path

    def _password_file(self, value: object) -> Secret:
        try:
            return read_password_file(self._file(value))
        except ValueError as exc:
            raise _Invalid(str(exc)) from None

    def _discover(
        self, raw: object, defaults: _Layer, brokers: tuple[BrokerConfig, ...]
    ) -> tuple[BrokerConfig, ...]:
        """``discover``: every TLS listener of a mosquitto.conf becomes a broker (see exporter.discover).

        Re-read at every (re)load. The brokers get ``defaults``, then the settings given in ``discover``
        itself; ``tls.served_cert_file`` is the listener's certfile, and ``tls.server_name`` (unless set)
        the first DNS name of that certificate when it does not cover the probed address.
        """
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.error("discover", f"expected a mapping with mosquitto_conf, got {_kind(raw)}")
            return ()
        from exporter import discover
        from exporter.probe.files import read_certificate_file

        conf_path = self._required(raw, "discover", "mosquitto_conf", self._file)
        prefix = "mosquitto"
        if raw.get("name_prefix") is not None:
            with contextlib.suppress(_Reported):
                prefix = self._check(raw["name_prefix"], "discover.name_prefix", _label_safe)
        allowed = _DEFAULTS_KEYS | {"mosquitto_conf", "name_prefix"}
        own = self._layer(raw, "discover", allowed, skip=("mosquitto_conf", "name_prefix"))
        if "served_cert_file" in own.tls:
            self.error("discover.tls.served_cert_file", "not allowed here: each listener's certfile is used")
        layer = defaults.overridden_by(own)
        self._check_consistency(layer, "discover", has_interval=True)
        if conf_path is None:
            return ()
        try:
            conf = discover.load(conf_path)
        except OSError as exc:
            self.error("discover.mosquitto_conf", f"{conf_path}: {exc.strerror or exc}")
            return ()
        for problem in conf.errors:
            self.error("discover.mosquitto_conf", problem)
        taken = {broker.name: index for index, broker in enumerate(brokers)}
        found: list[BrokerConfig] = []
        for item in discover.discovered_brokers(conf, prefix=prefix):
            listener = item.listener
            if item.name in taken:
                self.error(
                    "discover",
                    f"the listener at {listener.source} would become broker {item.name!r}, a name "
                    f"brokers[{taken[item.name]}] already uses; rename that broker or set discover.name_prefix",
                )
                continue
            try:
                target = parse_address(item.address)
            except ValueError as exc:
                self.error(
                    "discover.mosquitto_conf", f"{listener.source}: cannot probe {item.address}: {exc}"
                )
                continue
            tls = _values(layer.tls)
            tls["served_cert_file"] = item.served_cert_file
            if "server_name" not in tls:
                certificates = read_certificate_file(item.served_cert_file).certificates
                name = discover.server_name_for(certificates[0].facts if certificates else None, target.host)
                if name is not None:
                    tls["server_name"] = name
            found.append(
                BrokerConfig(
                    name=item.name,
                    target=target,
                    interval=layer.top.get("interval", _BUILTIN_INTERVAL).value,
                    timeout=layer.top.get("timeout", _BUILTIN_TIMEOUT).value,
                    tls=TlsSettings(**tls),
                    mqtt=MqttSettings(**_values(layer.mqtt)),
                    addresses=layer.top.get("addresses", _BUILTIN_ADDRESSES).value,
                    ip_protocol=layer.top.get("ip_protocol", _BUILTIN_IP_PROTOCOL).value,
                    proxy=layer.top.get("proxy_url", _Setting(None, None)).value,
                    expiry_warning=layer.top.get("expiry_warning", _BUILTIN_EXPIRY_WARNING).value,
                    expiry_critical=layer.top.get("expiry_critical", _BUILTIN_EXPIRY_CRITICAL).value,
                    chain_retention=layer.top.get("chain_retention", _BUILTIN_CHAIN_RETENTION).value,
                    broker_kind=layer.top.get(
                        "broker_kind", _Setting(BrokerKind.MOSQUITTO.value, None)
                    ).value,
                )
            )
        return tuple(found)


_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\}?)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TLS_VERSIONS: Mapping[str, str] = {
    **dict.fromkeys(("tlsv1.2", "tls1.2", "tls12", "1.2"), "TLSv1.2"),
    **dict.fromkeys(("tlsv1.3", "tls1.3", "tls13", "1.3"), "TLSv1.3"),
}
_TLS_ORDER = ("TLSv1.2", "TLSv1.3")
_PROTOCOLS: Mapping[str, str] = {
    **dict.fromkeys(("5", "5.0", "v5"), "5"),
    **dict.fromkeys(("3.1.1", "311", "v3.1.1", "v311"), "3.1.1"),
    "auto": "auto",
}


def _values(fields: Mapping[str, _Setting]) -> dict[str, Any]:
    return {name: setting.value for name, setting in fields.items()}


def _kind(value: object) -> str:
    """What a YAML value is, for messages; never the value itself (it may be a secret)."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, datetime.date):
        return "a date"
    return f"a {type(value).__name__}"


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _string(value: object) -> str:
    if isinstance(value, str):
        return value
    # YAML 1.1 reads yes/no/on/off as booleans and 0123 as octal; quoting keeps the text as written.
    hint = "; put it in quotes" if isinstance(value, int | float | datetime.date) else ""
    raise _Invalid(f"expected a string, got {_kind(value)}{hint}")


def _nonempty_string(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _password(value: object) -> Secret:
    return Secret(_string(value))


def _address(value: object) -> Target:
    try:
        return parse_address(_string(value))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _earlier(critical: ExpiryThreshold, warning: ExpiryThreshold) -> bool:
    """Whether the critical threshold would start before the warning one (comparable kinds only)."""
    if critical.share is not None and warning.share is not None:
        return critical.share > warning.share
    if critical.seconds is not None and warning.seconds is not None:
        return critical.seconds > warning.seconds
    return False


def _expiry_threshold(value: object) -> ExpiryThreshold:
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            raise _Invalid(f"invalid share {_preview(value)}; expected a percentage like 33%") from None
        if not 0 < percent < 100:
            raise _Invalid("a share of the certificate's lifetime must be between 0% and 100%")
        return ExpiryThreshold(share=percent / 100)
    return ExpiryThreshold(seconds=_duration(value))


def _duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _Invalid("expected a duration like 10s, got a number; add a unit, e.g. 60s")
    if not isinstance(value, str):
        raise _Invalid(f"expected a duration like 10s, got {_kind(value)}")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    if seconds <= 0:
        raise _Invalid("must be greater than 0")
    return seconds


def _tls_version(value: object) -> str:
    # Unquoted 1.2 is a YAML float; str(1.2) == "1.2".
    if isinstance(value, str | float) and not isinstance(value, bool):
        version = _TLS_VERSIONS.get(str(value).strip().lower())
        if version is not None:
            return version
        raise _Invalid(f"unsupported TLS version {_preview(str(value))}; use TLSv1.2 or TLSv1.3")
    raise _Invalid(f"expected a TLS version like TLSv1.2, got {_kind(value)}")


def _protocol(value: object) -> str:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        protocol = _PROTOCOLS.get(str(value).strip().lower())
        if protocol is not None:
            return protocol
        raise _Invalid(f'unsupported MQTT protocol {_preview(str(value))}; use "auto", "5" or "3.1.1"')
    raise _Invalid(f'expected an MQTT protocol version ("auto", "5" or "3.1.1"), got {_kind(value)}')


def _keepalive(value: object) -> int:
    # Digit strings are accepted because ${VAR} expansion always produces a string.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 65535:
            return value
        raise _Invalid("must be 0-65535 seconds")
    raise _Invalid(f"expected whole seconds, e.g. 30, got {_kind(value)}")


def _alpn(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of protocol names, e.g. [mqtt], got {_kind(value)}")
    for index, item in enumerate(value):
        # ssl.SSLContext.set_alpn_protocols encodes names as ASCII, 1-255 bytes each.
        if not isinstance(item, str) or not item.isascii() or not 1 <= len(item) <= 255:
            raise _Invalid("expected a protocol name of 1-255 ASCII characters", suffix=f"[{index}]")
    return tuple(value)


_ADDRESSES = ("first", "all")
_IP_PROTOCOLS = ("any", "ip4", "ip6")
_ROUNDTRIP_KEYS = ("topic", "qos", "timeout")


def _choice(value: object, choices: tuple[str, ...], what: str) -> str:
    if isinstance(value, str) and value.strip().lower() in choices:
        return value.strip().lower()
    shown = _preview(value) if isinstance(value, str) else _kind(value)
    raise _Invalid(f"unsupported {what} {shown}; use {' or '.join(choices)}")


def _broker_kind(value: object) -> str:
    return _choice(value, tuple(kind.value for kind in BrokerKind), "broker_kind")


def _addresses(value: object) -> str:
    return _choice(value, _ADDRESSES, "addresses")


def _ip_protocol(value: object) -> str:
    return _choice(value, _IP_PROTOCOLS, "ip_protocol")


def _proxy_url(value: object) -> ProxySettings:
    try:
        return parse_proxy_url(_string(value))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _qos(value: object) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    raise _Invalid("qos must be 0 or 1")


def _topic(value: object) -> str:
    topic = _nonempty_string(value)
    if "+" in topic or "#" in topic:
        raise _Invalid("must be a topic name, without the wildcards + and #")
    if "\0" in topic:
        raise _Invalid("must not contain NUL characters")
    if len(topic.encode()) > 65535:
        raise _Invalid("must be at most 65535 bytes")
    return topic


def _roundtrip(value: object) -> RoundtripSettings:
    if not isinstance(value, dict):
        raise _Invalid(f"expected a mapping with topic (and optionally qos, timeout), got {_kind(value)}")
    for key in value:
        if key not in _ROUNDTRIP_KEYS:
            raise _Invalid("unknown key", suffix=f".{key}")
    settings: dict[str, Any] = {}
    for key, validate in (("topic", _topic), ("qos", _qos), ("timeout", _duration)):
        if value.get(key) is None:
            continue
        try:
            settings[key] = validate(value[key])
        except _Invalid as exc:
            raise _Invalid(exc.message, suffix=f".{key}{exc.suffix}") from None
    if "topic" not in settings:
        raise _Invalid("required", suffix=".topic")
    return RoundtripSettings(**settings)


def _label_safe(value: object) -> str:
    text = _nonempty_string(value)
    if any(c.isspace() or not c.isprintable() for c in text):
        raise _Invalid("must not contain spaces or control characters")
    return text


def file_stamp(path: str) -> tuple[int, int]:
    """(mtime_ns, size) of a file, (0, 0) when it cannot be stat'ed: a cache key that changes with it."""
    try:
        status = os.stat(path)
    except OSError:
        return (0, 0)
    return (status.st_mtime_ns, status.st_size)


def tls_files_problem(tls: Mapping[str, Any]) -> str | None:
    """Why OpenSSL cannot use these CA / client certificate files (None when it can).

    Builds the very context the probe will use (and caches it for the probe), so what the loader
    accepts is what a probe can load.
    """
    from exporter.probe.tls import client_context  # here: exporter.probe imports this module

    ca_file, cert_file, key_file = tls.get("ca_file"), tls.get("cert_file"), tls.get("key_file")
    try:
        # An empty password: an encrypted key fails here instead of prompting on the terminal.
        client_context(TlsSettings(ca_file=ca_file, cert_file=cert_file, key_file=key_file), verify=True)
        return None
    except (ssl.SSLError, OSError, ValueError) as exc:
        problem = exc
    try:  # which file was it?
        client_context(TlsSettings(ca_file=ca_file), verify=True)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"ca_file {ca_file}: not a usable PEM certificate bundle ({exc})"
    return f"cert_file/key_file: cannot load the client certificate and its (unencrypted) key ({problem})"


def read_password_file(path: str, shown: str | None = None) -> Secret:
    """The password in ``path`` without one trailing newline. ValueError says why not, naming the file
    as ``shown`` (default: ``path``) and never quoting its content."""
    name = shown or path
    try:
        with open(path, encoding="utf-8", newline="") as file:
            content = file.read()
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not valid UTF-8") from None
    except OSError as exc:
        raise ValueError(f"{name}: {exc.strerror or 'cannot be read'}") from None
    for newline in ("\r\n", "\n"):
        if content.endswith(newline):
            content = content.removesuffix(newline)
            break
    if not content:
        raise ValueError(f"{name}: file is empty")
    return Secret(content)
