"""Validators of single config values, pure: each takes what YAML gave and returns the model's value,
or raises Invalid saying why (never quoting the value when it may be a secret)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any, get_args

from mqtt_cert_exporter.config.grammar import (
    parse_address,
    parse_duration,
    parse_proxy_url,
    preview,
)
from mqtt_cert_exporter.config.model import (
    ExpiryThreshold,
    MqttProtocol,
    ProxySettings,
    RoundtripSettings,
    Secret,
    Target,
    TlsVersion,
)

#: MQTT strings and binary data carry a two-byte length: anything longer cannot be sent in a CONNECT.
MQTT_FIELD_MAX_BYTES = 65535


class Invalid(Exception):
    """A validator's complaint about a value; `suffix` extends the path (e.g. "[2]" for a list item)."""

    def __init__(self, message: str, suffix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.suffix = suffix


def kind(value: object) -> str:
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


def string(value: object) -> str:
    if isinstance(value, str):
        return value
    # YAML 1.1 reads yes/no/on/off as booleans and 0123 as octal; quoting keeps the text as written.
    hint = "; put it in quotes" if isinstance(value, int | float | datetime.date) else ""
    raise Invalid(f"expected a string, got {kind(value)}{hint}")


def nonempty_string(value: object) -> str:
    text = string(value)
    if not text.strip():
        raise Invalid("must not be empty")
    return text


def mqtt_string(value: object) -> str:
    """A string sent in a CONNECT (client id, user name)."""
    return _fits_mqtt(string(value))


def password(value: object) -> Secret:
    return Secret(_fits_mqtt(string(value)))


def expiry_threshold(value: object) -> ExpiryThreshold:
    """A duration (28d) or a share of the certificate's lifetime (33%)."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = float(value[:-1])
        except ValueError:
            raise Invalid(f"invalid share {preview(value)}; expected a percentage like 33%") from None
        if not 0 < percent < 100:
            raise Invalid("a share of the certificate's lifetime must be between 0% and 100%")
        return ExpiryThreshold(share=percent / 100)
    return ExpiryThreshold(seconds=duration(value))


def starts_earlier(critical: ExpiryThreshold, warning: ExpiryThreshold) -> bool:
    """Whether the critical threshold would start before the warning one (comparable kinds only)."""
    if critical.share is not None and warning.share is not None:
        return critical.share > warning.share
    if critical.seconds is not None and warning.seconds is not None:
        return critical.seconds > warning.seconds
    return False


def _fits_mqtt(text: str) -> str:
    if len(text.encode("utf-8", "surrogatepass")) > MQTT_FIELD_MAX_BYTES:
        raise Invalid(f"must be at most {MQTT_FIELD_MAX_BYTES} bytes (MQTT's limit)")
    return text


def address(value: object) -> Target:
    try:
        return parse_address(string(value))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def duration(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise Invalid("expected a duration like 10s, got a number; add a unit, e.g. 60s")
    if not isinstance(value, str):
        raise Invalid(f"expected a duration like 10s, got {kind(value)}")
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if seconds <= 0:
        raise Invalid("must be greater than 0")
    return seconds


_TLS_VERSIONS: Mapping[str, TlsVersion] = {
    **dict.fromkeys(("tlsv1.2", "tls1.2", "tls12", "1.2"), "TLSv1.2"),
    **dict.fromkeys(("tlsv1.3", "tls1.3", "tls13", "1.3"), "TLSv1.3"),
}
TLS_VERSION_ORDER: tuple[TlsVersion, ...] = get_args(TlsVersion)
_PROTOCOLS: Mapping[str, MqttProtocol] = {
    **dict.fromkeys(("5", "5.0", "v5"), "5"),
    **dict.fromkeys(("3.1.1", "311", "v3.1.1", "v311"), "3.1.1"),
    "auto": "auto",
}


def tls_version(value: object) -> TlsVersion:
    # Unquoted 1.2 is a YAML float; str(1.2) == "1.2".
    if isinstance(value, str | float) and not isinstance(value, bool):
        version = _TLS_VERSIONS.get(str(value).strip().lower())
        if version is not None:
            return version
        raise Invalid(f"unsupported TLS version {preview(str(value))}; use TLSv1.2 or TLSv1.3")
    raise Invalid(f"expected a TLS version like TLSv1.2, got {kind(value)}")


def protocol(value: object) -> MqttProtocol:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        version = _PROTOCOLS.get(str(value).strip().lower())
        if version is not None:
            return version
        raise Invalid(f'unsupported MQTT protocol {preview(str(value))}; use "auto", "5" or "3.1.1"')
    raise Invalid(f'expected an MQTT protocol version ("auto", "5" or "3.1.1"), got {kind(value)}')


def keepalive(value: object) -> int:
    # Digit strings are accepted because ${VAR} expansion always produces a string.
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value <= 65535:
            return value
        raise Invalid("must be 0-65535 seconds")
    raise Invalid(f"expected whole seconds, e.g. 30, got {kind(value)}")


def alpn(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of protocol names, e.g. [mqtt], got {kind(value)}")
    for index, item in enumerate(value):
        # ssl.SSLContext.set_alpn_protocols encodes names as ASCII, 1-255 bytes each.
        if not isinstance(item, str) or not item.isascii() or not 1 <= len(item) <= 255:
            raise Invalid("expected a protocol name of 1-255 ASCII characters", suffix=f"[{index}]")
    return tuple(value)


def choice_of(what: str, literal: Any) -> Callable[[object], Any]:
    """A validator accepting the values of a ``Literal`` type (case-insensitively)."""
    choices: tuple[str, ...] = get_args(literal)

    def choose(value: object) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        shown = preview(value) if isinstance(value, str) else kind(value)
        raise Invalid(f"unsupported {what} {shown}; use {' or '.join(choices)}")

    return choose


def proxy_url(value: object) -> ProxySettings:
    try:
        return parse_proxy_url(string(value))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def qos(value: object) -> int:
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    raise Invalid("qos must be 0 or 1")


def topic(value: object) -> str:
    name = nonempty_string(value)
    if "+" in name or "#" in name:
        raise Invalid("must be a topic name, without the wildcards + and #")
    if "\0" in name:
        raise Invalid("must not contain NUL characters")
    if len(name.encode()) > MQTT_FIELD_MAX_BYTES:
        raise Invalid(f"must be at most {MQTT_FIELD_MAX_BYTES} bytes")
    return name


_ROUNDTRIP_FIELDS: Mapping[str, Callable[[object], Any]] = {"topic": topic, "qos": qos, "timeout": duration}


def roundtrip(value: object) -> RoundtripSettings:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping with topic (and optionally qos, timeout), got {kind(value)}")
    for key in value:
        if key not in _ROUNDTRIP_FIELDS:
            raise Invalid("unknown key", suffix=f".{key}")
    settings: dict[str, Any] = {}
    for key, validate in _ROUNDTRIP_FIELDS.items():
        if value.get(key) is None:
            continue
        try:
            settings[key] = validate(value[key])
        except Invalid as exc:
            raise Invalid(exc.message, suffix=f".{key}{exc.suffix}") from None
    if "topic" not in settings:
        raise Invalid("required", suffix=".topic")
    return RoundtripSettings(**settings)


def label_safe(value: object) -> str:
    text = nonempty_string(value)
    if any(c.isspace() or not c.isprintable() for c in text):
        raise Invalid("must not contain spaces or control characters")
    return text
