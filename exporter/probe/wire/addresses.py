"""Which addresses of a name a probe connects to (``ip_protocol``, ``addresses``). Pure."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

IP_PROTOCOLS = ("any", "ip4", "ip6")


def select_addresses(candidates: Iterable[str], ip_protocol: str = "any") -> list[str]:
    """The addresses to probe, best first, each once.

    ``ip4``/``ip6`` keep only that family. ``any`` puts IPv4 first and IPv6 after it: the first
    address is then IPv4 when the name has one (what works on a v4-only host, e.g. Docker's default
    network) and IPv6 otherwise. Within a family the resolver's order is kept. Anything that is not an
    IP address is dropped.
    """
    if ip_protocol not in IP_PROTOCOLS:
        raise ValueError(f"unknown ip_protocol {ip_protocol!r}")
    v4: list[str] = []
    v6: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            continue
        text = str(address)
        if text in seen:
            continue
        seen.add(text)
        (v4 if address.version == 4 else v6).append(text)
    if ip_protocol == "ip4":
        return v4
    if ip_protocol == "ip6":
        return v6
    return v4 + v6


def family_name(ip_protocol: str) -> str:
    """How messages name what ``ip_protocol`` allows."""
    return {"ip4": "IPv4", "ip6": "IPv6"}.get(ip_protocol, "IP")


@functools.lru_cache(maxsize=65536)
def literal_ip(host: str) -> str | None:
    """The normalised IP when ``host`` is an IP literal, else None (cached: asked on every probe)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None
