"""YAML configuration -> the model. Walks the document by the key declarations (keys.py), layers
defaults -> brokers / modules / discovery, expands ${ENV}, and collects every error with its path."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mqtt_cert_exporter.config.discovery import discovered_brokers, server_name_for
from mqtt_cert_exporter.config.discovery import load as load_mosquitto_conf
from mqtt_cert_exporter.config.document import MAX_CONFIG_BYTES, load_document, too_big
from mqtt_cert_exporter.config.files import certificate_names, readable_file_problem, tls_files_problem
from mqtt_cert_exporter.config.grammar import format_seconds, parse_address
from mqtt_cert_exporter.config.keys import (
    BY_NAME,
    DEFAULTS,
    IDENTITY,
    KEYS,
    SECTIONS,
    SLOT_SCOPES,
    TOP_LEVEL,
    Key,
    Scope,
)
from mqtt_cert_exporter.config.model import (
    BrokerConfig,
    Config,
    ConfigError,
    ModuleConfig,
    MqttSettings,
    ProbeSettings,
    Target,
    TlsSettings,
)
from mqtt_cert_exporter.config.values import (
    TLS_VERSION_ORDER,
    Invalid,
    address,
    kind,
    label_safe,
    nonempty_string,
    starts_earlier,
)

T = TypeVar("T")
_Built = TypeVar("_Built", bound=ProbeSettings)


def load_config(path: str, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; relative file paths in it are relative to its directory."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)  # never more: the file may be huge, or endless
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror or exc}"]) from None
    problem = too_big(len(data))
    if problem:
        raise ConfigError([f"{path}: {problem}"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not valid UTF-8"]) from None
    return parse_config(text, base_dir=os.path.dirname(os.path.abspath(path)), env=env)


def parse_config(text: str, *, base_dir: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate YAML config text; raises ConfigError listing every problem found.

    `env` (default: os.environ) supplies ${VAR} expansions.
    """
    document = load_document(text)
    walker = _Walker(os.path.abspath(base_dir), os.environ if env is None else env)
    config = walker.config(document)
    if walker.errors:
        raise ConfigError(walker.errors)
    return config


class _Reported(Exception):
    """The current value is unusable and its errors have already been recorded."""


@dataclass(frozen=True, slots=True)
class _Setting:
    value: Any
    #: where it was set, e.g. "defaults.tls.ca_file"; None for a built-in default
    path: str | None


#: The settings one config level (defaults, a broker, a module) sets explicitly, by slot.
_Layer = dict[str, _Setting]


def _get(layer: _Layer, slot: str) -> _Setting:
    """A setting of a merged layer, or the model's built-in default."""
    return layer.get(slot) or _Setting(DEFAULTS.get(slot), None)


def _build(model: type[_Built], scope: Scope, layer: _Layer, **identity: Any) -> _Built:
    """The one place a BrokerConfig or ModuleConfig is made from settings."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {"tls": {}, "mqtt": {}}
    for slot, setting in layer.items():
        if scope in SLOT_SCOPES[slot]:
            section, _, name = slot.rpartition(".")
            (sections[section] if section else top)[name] = setting.value
    top.update(identity, tls=TlsSettings(**sections["tls"]), mqtt=MqttSettings(**sections["mqtt"]))
    return model(**top)


_ENV_REFERENCE = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\}?)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Walker:
    def __init__(self, base_dir: str, env: Mapping[str, str]) -> None:
        self.base_dir = base_dir
        self.env = env
        self.errors: list[str] = []
        self._reported: set[str] = set()

    def error(self, path: str, message: str) -> None:
        line = f"{path}: {message}"
        # A problem inherited from `defaults` is found once per broker but reported once.
        if line not in self._reported:
            self._reported.add(line)
            self.errors.append(line)

    def config(self, document: object) -> Config:
        if document is None:
            return Config()
        if not isinstance(document, dict):
            self.error("config", f"expected a mapping at the top level, got {kind(document)}")
            return Config()
        for key in document:
            if key not in TOP_LEVEL:
                self.error(str(key), "unknown key")
        defaults: _Layer = {}
        raw_defaults = document.get("defaults")
        if raw_defaults is not None:
            if isinstance(raw_defaults, dict):
                defaults = self._layer(raw_defaults, "defaults", Scope.DEFAULTS)
            else:
                self.error("defaults", f"expected a mapping, got {kind(raw_defaults)}")
        brokers = self._brokers(document.get("brokers"), defaults)
        modules = self._modules(document.get("modules"), defaults)
        brokers += self._discover(document.get("discover"), defaults, brokers)
        return Config(brokers=brokers, modules=modules)

    # -- the scopes -----------------------------------------------------------------------------

    def _brokers(self, raw: object, defaults: _Layer) -> tuple[BrokerConfig, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.error("brokers", f"expected a list of brokers, got {kind(raw)}")
            return ()
        brokers: list[BrokerConfig] = []
        first_use: dict[str, str] = {}
        for index, item in enumerate(raw):
            path = f"brokers[{index}]"
            if not isinstance(item, dict):
                self.error(path, f"expected a mapping with name and address, got {kind(item)}")
                continue
            name = self._required(item, path, "name", nonempty_string)
            if name is not None:
                if name in first_use:
                    self.error(f"{path}.name", f"duplicate name {name!r}, already used by {first_use[name]}")
                else:
                    first_use[name] = path
            target = self._required(item, path, "address", address)
            layer = defaults | self._layer(item, path, Scope.BROKER)
            self._check_consistency(layer, path, has_interval=True)
            if target is not None:
                self._check_target(layer, target, path)
            if name is not None and target is not None:
                brokers.append(self._broker(layer, path, Scope.BROKER, name, target))
        return tuple(brokers)

    def _broker(self, layer: _Layer, path: str, scope: Scope, name: str, target: Target) -> BrokerConfig:
        broker = _build(BrokerConfig, scope, layer, name=name, target=target)
        tls_problem = tls_files_problem(broker.tls)
        if tls_problem:
            self.error(f"{path}.tls", tls_problem)
        return broker

    def _modules(self, raw: object, defaults: _Layer) -> tuple[tuple[str, ModuleConfig], ...]:
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.error("modules", f"expected a mapping of module names to settings, got {kind(raw)}")
            return ()
        modules: list[tuple[str, ModuleConfig]] = []
        for name, item in raw.items():
            path = f"modules.{name}"
            if not isinstance(name, str) or not name.strip():
                self.error(path, "module name must be a non-empty string")
                continue
            if item is not None and not isinstance(item, dict):
                self.error(path, f"expected a mapping, got {kind(item)}")
                continue
            layer = defaults | self._layer(item or {}, path, Scope.MODULE)
            self._check_consistency(layer, path, has_interval=False)
            modules.append((name, _build(ModuleConfig, Scope.MODULE, layer)))
        return tuple(modules)

    def _discover(  # noqa: C901 - debt: the discover: block's checks and its brokers in one method
        self, raw: object, defaults: _Layer, brokers: tuple[BrokerConfig, ...]
    ) -> tuple[BrokerConfig, ...]:
        """``discover``: every TLS listener of a mosquitto.conf becomes a broker (see discovery.py).

        Re-read at every (re)load. The brokers get ``defaults``, then the settings given in ``discover``
        itself; ``tls.served_cert_file`` is the listener's certfile, and ``tls.server_name`` (unless set)
        the first DNS name of that certificate when it does not cover the probed address.
        """
        if raw is None:
            return ()
        if not isinstance(raw, dict):
            self.error("discover", f"expected a mapping with mosquitto_conf, got {kind(raw)}")
            return ()
        conf_path = self._required(raw, "discover", "mosquitto_conf", self._file)
        prefix = "mosquitto"
        if raw.get("name_prefix") is not None:
            with contextlib.suppress(_Reported):
                prefix = self._check(raw["name_prefix"], "discover.name_prefix", label_safe)
        layer = defaults | self._layer(raw, "discover", Scope.DISCOVER)
        self._check_consistency(layer, "discover", has_interval=True)
        if conf_path is None:
            return ()
        try:
            conf = load_mosquitto_conf(conf_path)
        except OSError as exc:
            self.error("discover.mosquitto_conf", f"{conf_path}: {exc.strerror or exc}")
            return ()
        for problem in conf.errors:
            self.error("discover.mosquitto_conf", problem)
        taken = {broker.name: index for index, broker in enumerate(brokers)}
        found: list[BrokerConfig] = []
        for item in discovered_brokers(conf, prefix=prefix):
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
            own = {"tls.served_cert_file": _Setting(item.served_cert_file, None)}
            if "broker_kind" not in layer:
                own["broker_kind"] = _Setting("mosquitto", None)  # what discovery found
            if "tls.server_name" not in layer:
                leaf = certificate_names(item.served_cert_file)
                name = server_name_for(leaf, target.host)
                if name is not None:
                    own["tls.server_name"] = _Setting(name, None)
            found.append(_build(BrokerConfig, Scope.BROKER, layer | own, name=item.name, target=target))
        return tuple(found)

    # -- walking settings by their declarations -------------------------------------------------

    def _layer(self, mapping: dict[Any, Any], path: str, scope: Scope) -> _Layer:
        layer: _Layer = {}
        identity = IDENTITY.get(scope, ())
        for name, raw in mapping.items():
            key_path = f"{path}.{name}"
            if name in identity:
                continue
            if name in SECTIONS and scope in SECTIONS[name]:
                if raw is not None:
                    layer |= self._section(raw, key_path, name, scope)
                continue
            key = BY_NAME.get(name) if isinstance(name, str) else None
            if key is None or key.section:
                self.error(key_path, "unknown key")
            elif scope not in key.where:
                self.error(key_path, key.refused.get(scope, "unknown key"))
            elif raw is not None:  # an empty key inherits, like an absent one
                self._set(layer, key, raw, key_path)
        return layer

    def _section(self, raw: object, path: str, section: str, scope: Scope) -> _Layer:
        layer: _Layer = {}
        if not isinstance(raw, dict):
            self.error(path, f"expected a mapping, got {kind(raw)}")
            return layer
        for name, value in raw.items():
            key_path = f"{path}.{name}"
            key = BY_NAME.get(f"{section}.{name}")
            if key is None:
                self.error(key_path, "unknown key")
            elif scope not in key.where:
                self.error(key_path, key.refused.get(scope, "unknown key"))
            elif value is None:
                continue
            elif other := self._also_set(key, raw):
                self.error(key_path, f"cannot be combined with {other}; set only one of them")
            else:
                self._set(layer, key, value, key_path)
        return layer

    @staticmethod
    def _also_set(key: Key, mapping: dict[Any, Any]) -> str | None:
        """Another key of ``mapping`` filling the same field (password and password_file)."""
        if not key.fills:
            return None
        section = key.section + "." if key.section else ""
        return next(
            (
                other.name.removeprefix(section)
                for other in KEYS
                if other is not key
                and other.slot == key.slot
                and mapping.get(other.name.removeprefix(section)) is not None
            ),
            None,
        )

    def _set(self, layer: _Layer, key: Key, raw: object, path: str) -> None:
        validate: Callable[[object], Any] = key.validate
        if key.path:
            validate = self._file_then(key.validate)
        with contextlib.suppress(_Reported):
            layer[key.slot] = _Setting(self._check(raw, path, validate), path)

    def _file(self, value: object) -> str:
        path = os.path.normpath(os.path.join(self.base_dir, nonempty_string(value)))
        problem = readable_file_problem(path)
        if problem:
            raise Invalid(problem)
        return path

    def _file_then(self, validate: Callable[[object], T]) -> Callable[[object], T]:
        return lambda value: validate(self._file(value))

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
        except Invalid as exc:
            self.error(path + exc.suffix, exc.message)
            raise _Reported from None

    # ${VAR} expansion happens value by value as the schema is walked (not over the whole document), so
    # unknown keys are never traversed.
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

    # -- checks across settings -----------------------------------------------------------------

    def _check_consistency(self, layer: _Layer, prefix: str, *, has_interval: bool) -> None:
        """Checks across settings, run on a merged layer; `prefix` is the broker or module path."""
        timeout = _get(layer, "timeout")
        if has_interval:
            interval = _get(layer, "interval")
            if timeout.value > interval.value:
                t, i = format_seconds(timeout.value), format_seconds(interval.value)
                self._conflict(
                    prefix,
                    (timeout, f"{t} must not exceed interval {i}"),
                    (interval, f"{i} is shorter than timeout {t}"),
                )
        warning, critical = _get(layer, "expiry_warning"), _get(layer, "expiry_critical")
        if starts_earlier(critical.value, warning.value):
            w, c = warning.value, critical.value
            self._conflict(
                prefix,
                (critical, f"{c} must not be longer than expiry_warning {w}"),
                (warning, f"{w} is shorter than expiry_critical {c}"),
            )
        low, high = layer.get("tls.min_version"), layer.get("tls.max_version")
        if (
            low is not None
            and high is not None
            and TLS_VERSION_ORDER.index(low.value) > TLS_VERSION_ORDER.index(high.value)
        ):
            self._conflict(
                prefix,
                (low, f"{low.value} is higher than max_version {high.value}"),
                (high, f"{high.value} is lower than min_version {low.value}"),
            )
        key_file = layer.get("tls.key_file")
        if key_file is not None and key_file.path is not None and "tls.cert_file" not in layer:
            self.error(key_file.path, "requires cert_file")
        roundtrip = layer.get("mqtt.roundtrip")
        if (
            roundtrip is not None
            and roundtrip.value.timeout is not None
            and roundtrip.value.timeout > timeout.value
        ):
            r, t = format_seconds(roundtrip.value.timeout), format_seconds(timeout.value)
            where = "the default" if timeout.path is None else f"from {timeout.path}"
            self.error(f"{roundtrip.path}.timeout", f"{r} must not exceed the probe timeout {t} ({where})")

    def _check_target(self, layer: _Layer, target: Target, prefix: str) -> None:
        """An IP-literal address must be reachable with the configured ip_protocol."""
        ip_protocol = layer.get("ip_protocol")
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
