"""Probing a broker from the outside: the orchestrator (``prober``), the wire protocols it speaks
(``wire``), the checks around the chain (``lifecycle``) and the optional round trip (``roundtrip``).

The pure certificate analysis the probe relies on lives in ``exporter.certs``.
"""

from mqtt_cert_exporter.probe.prober import Prober, Resolver, getaddrinfo_resolver

__all__ = ["Prober", "Resolver", "getaddrinfo_resolver"]
