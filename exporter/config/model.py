"""The configuration every room reads: frozen dataclasses, built only by the loader (and by tests)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Literal

#: MQTT protocol versions the probe speaks; "auto": learn what the broker speaks, without credentials
MqttProtocol = Literal["auto", "5", "3.1.1"]
#: ``broker_kind``: whose settings the fixes name (exporter.report.brokerkinds)
BrokerKindName = Literal["mosquitto", "rabbitmq", "emqx", "hivemq", "ejabberd"]
TlsVersion = Literal["TLSv1.2", "TLSv1.3"]
#: "first": probe one address of the name (the default); "all": every A/AAAA record, each labelled
AddressSelection = Literal["first", "all"]
#: "any" (IPv4 preferred, IPv6 as fallback), "ip4" or "ip6"
IpProtocol = Literal["any", "ip4", "ip6"]
#: "socks5" (we resolve names), "socks5h" (the proxy resolves names) or "http" (CONNECT)
ProxyScheme = Literal["socks5", "socks5h", "http"]
#: "mqtts" (MQTT over TLS) or "wss" (MQTT over secure WebSockets)
TargetScheme = Literal["mqtts", "wss"]


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
    min_version: TlsVersion | None = None
    max_version: TlsVersion | None = None
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
    protocol: MqttProtocol = "auto"
    client_id: str | None = None  # None: generated, unique per probe
    username: str | None = None
    password: Secret | None = None
    keepalive: int = 30
    roundtrip: RoundtripSettings | None = None


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """``proxy_url``: the TCP connection goes through this proxy."""

    scheme: ProxyScheme
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
    scheme: TargetScheme = "mqtts"
    path: str = ""

    @property
    def authority(self) -> str:
        """``host:port`` or ``[v6]:port``: where the probe connects, without scheme or path."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        base = self.authority
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


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeSettings:
    """What a probe of any broker needs: set in ``defaults``, per broker and per ``/probe`` module.

    A new key allowed in both brokers and modules is a field here (and its declaration in keys.py).
    """

    timeout: float = 10.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    expiry_warning: ExpiryThreshold = DEFAULT_EXPIRY_WARNING
    expiry_critical: ExpiryThreshold = DEFAULT_EXPIRY_CRITICAL


@dataclass(frozen=True, slots=True)
class BrokerConfig(ProbeSettings):
    name: str
    target: Target
    interval: float = 60.0
    addresses: AddressSelection = "first"
    ip_protocol: IpProtocol = "any"
    proxy: ProxySettings | None = None
    chain_retention: float = DEFAULT_CHAIN_RETENTION
    #: "" when not said: the fixes then give every kind's settings, labelled
    broker_kind: BrokerKindName | Literal[""] = ""

    @property
    def address(self) -> str:
        return str(self.target)

    @property
    def server_name(self) -> str:
        return self.tls.server_name or self.target.host


@dataclass(frozen=True, slots=True)
class ModuleConfig(ProbeSettings):
    """A named probe profile (for probing ad-hoc targets): broker settings without name/address."""

    def broker_for(self, target: Target, *, name: str, timeout: float) -> BrokerConfig:
        """The broker a ``/probe`` of ``target`` with this module probes (every module setting kept)."""
        settings = {each.name: getattr(self, each.name) for each in fields(ProbeSettings)}
        return BrokerConfig(**{**settings, "timeout": timeout}, name=name, target=target)


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
