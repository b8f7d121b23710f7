"""The value grammars of a configuration, pure: durations, broker addresses, proxy URLs, and which
host names a certificate's names cover (RFC 6125, as OpenSSL checks them for Python clients)."""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Iterable, Mapping
from decimal import Decimal
from fractions import Fraction
from typing import get_args

from mqtt_cert_exporter.config.model import ProxyScheme, ProxySettings, Secret, Target, TargetScheme


def preview(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, shortened (never used for secrets)."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


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


def parse_duration(text: str) -> float:  # noqa: C901 - debt: one grammar, one branch per malformed form; split by unit and number
    """Parse a Go-style duration ("1h30m", "1.5s", "500ms", and Prometheus' "28d", "2w") into seconds."""

    def invalid(reason: str) -> ValueError:
        return ValueError(f"invalid duration {preview(text)}: {reason}")

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
            raise invalid(f"unknown unit {preview(unit)}; use ns, us, ms, s, m, h, d or w")
        total += Fraction(Decimal(number)) * _DURATION_UNITS[unit]
        if total > _MAX_DURATION:
            raise invalid("too large")
        pos = match.end()
    return float(total)


# --- addresses ---------------------------------------------------------------------------------

_TLS_SCHEMES: Mapping[str, TargetScheme] = {"mqtts": "mqtts", "ssl": "mqtts", "tls": "mqtts", "wss": "wss"}
_PLAINTEXT_SCHEMES = frozenset({"mqtt", "tcp", "ws"})
_DEFAULT_PORTS: Mapping[TargetScheme, int] = {"mqtts": 8883, "wss": 443}
_DEFAULT_WSS_PATH = "/mqtt"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
#: A DNS name (letters, digits, '-', '_' and dots; 253 at most) or an IPv4 literal: nothing a resolver
#: would cut short (a NUL) or read differently from the allow-list (/probe matches host:port).
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?")
_IPV6_ZONE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: A WebSocket path: visible ASCII only (it goes into the HTTP request line).
_WSS_PATH = re.compile(r"/[!-~]*")
_PORT = re.compile(r"[0-9]{1,5}")


def parse_address(text: str) -> Target:  # noqa: C901 - debt: schemes, brackets and ports in one pass
    """Parse "host", "host:port", "[v6]:port", "mqtts://host:port" or "wss://host:port/path"."""
    if not text:
        raise ValueError("empty address")
    if has_control_characters(text):
        # A NUL ends the name at the resolver: "127.0.0.1\0.example.com" would connect to 127.0.0.1.
        raise ValueError("address must not contain control characters")
    if any(c.isspace() for c in text):
        raise ValueError("address must not contain whitespace")

    scheme: TargetScheme = "mqtts"
    rest = text
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
        if not _WSS_PATH.fullmatch(path):
            raise ValueError("a wss:// path must be printable ASCII (percent-encode the rest)")
    elif path in ("", "/"):
        path = ""
    else:
        raise ValueError("a path is only allowed with wss://")
    return Target(host=host, port=port, scheme=scheme, path=path)


_PROXY_SCHEMES: tuple[ProxyScheme, ...] = get_args(ProxyScheme)
_DEFAULT_PROXY_PORTS: Mapping[ProxyScheme, int] = {"socks5": 1080, "socks5h": 1080}


def parse_proxy_url(text: str) -> ProxySettings:  # noqa: C901 - debt: one branch per malformed proxy URL part
    """Parse "socks5://[user:password@]host[:port]", "socks5h://..." or "http://[user:password@]host:port".

    Messages never quote the URL or its user part: it may hold a password.
    """
    if not text or any(c.isspace() for c in text):
        raise ValueError("expected a proxy URL like socks5://proxy.example.com:1080 (no whitespace)")
    match = _SCHEME.match(text)
    if match is None:
        raise ValueError("expected a proxy URL like socks5://proxy.example.com:1080 or http://proxy:3128")
    scheme = next((known for known in _PROXY_SCHEMES if known == match[1].lower()), None)
    if scheme is None:
        raise ValueError(
            f"unsupported proxy scheme {match[1].lower()}://; use socks5://, socks5h:// or http://"
        )
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


def _split_host_port(authority: str) -> tuple[str, str | None]:  # noqa: C901 - debt: IPv6 brackets and port forms in one pass
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise ValueError("missing ']' after IPv6 address")
        host, after = authority[1:end], authority[end + 1 :]
        if not _is_ipv6(host):
            raise ValueError("brackets are only for IPv6 addresses, e.g. [2001:db8::1]:8883")
        _check_ipv6_zone(host)
        if not after:
            return host, None
        if not after.startswith(":"):
            raise ValueError("expected ':port' after ']'")
        return host, after[1:]
    if authority.count(":") > 1:
        # A bare IPv6 address is accepted only without a port: "2001:db8::1" is the whole host.
        if _is_ipv6(authority):
            _check_ipv6_zone(authority)
            return authority, None
        raise ValueError("IPv6 address must be bracketed when a port follows, e.g. [2001:db8::1]:8883")
    host, colon, port = authority.partition(":")
    if not host:
        raise ValueError("host must not be empty")
    if not host.isascii():
        raise ValueError(f"invalid host {preview(host)}: write international names in their xn-- form")
    if not _HOST.fullmatch(host):
        raise ValueError(f"invalid host {preview(host)}: expected a DNS name or an IP address")
    if _is_odd_ipv4(host):
        raise ValueError(f"invalid host {preview(host)}: write IPv4 addresses as four decimal numbers")
    return host, port if colon else None


def _is_odd_ipv4(host: str) -> bool:
    """True for what resolvers read as IPv4 but is not dotted decimal (``127.1``, ``0x7f000001``)."""
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


def _check_ipv6_zone(host: str) -> None:
    _, percent, zone = host.partition("%")
    if percent and not _IPV6_ZONE.fullmatch(zone):
        raise ValueError("an IPv6 zone is an interface name or number, e.g. [fe80::1%eth0]:8883")


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


def has_control_characters(text: str) -> bool:
    """C0 controls (NUL, CR, LF, ESC...), DEL and C1 controls: never part of a host name or a path."""
    return _CONTROL_CHARACTER.search(text) is not None


_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


# --- names a certificate covers ----------------------------------------------------------------


def certificate_covers(
    server_name: str, dns_names: Iterable[str], ip_addresses: Iterable[str], common_name: str
) -> bool:
    """RFC 6125 matching as OpenSSL does it for Python clients (no partial wildcards, CN fallback)."""
    name = server_name.rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        return any(_same_ip(ip, candidate) for candidate in ip_addresses)
    candidates = tuple(dns_names) or ((common_name,) if common_name else ())
    return any(_dns_match(pattern.rstrip(".").lower(), name) for pattern in candidates)


def _same_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, candidate: str) -> bool:
    try:
        return ipaddress.ip_address(candidate) == ip
    except ValueError:
        return False


def _dns_match(pattern: str, name: str) -> bool:
    if not pattern:
        return False
    if not pattern.startswith("*."):
        return pattern == name
    suffix = pattern[1:]  # ".example.com"
    if suffix.count(".") < 2:  # "*.com" is never valid
        return False
    head, _, rest = name.partition(".")
    return bool(head) and "." + rest == suffix
