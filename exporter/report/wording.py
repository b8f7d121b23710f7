"""How a report says things: certificate and broker names, dates, distances in days. Pure."""

from __future__ import annotations

import datetime as dt
import re

from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.results import CertFacts, ProbeResult, ServedFileFacts

_RDN_SEPARATOR = re.compile(r"(?<!\\),")


def display_name(rfc4514: str) -> str:
    """The CN of an RFC 4514 name ("CN=Lab Root CA,O=Lab" -> "Lab Root CA"), else the whole name."""
    for part in _RDN_SEPARATOR.split(rfc4514):
        attribute, _, value = part.partition("=")
        if attribute.strip().upper() == "CN" and value:
            return re.sub(r"\\(.)", r"\1", value)
    return rfc4514


def names_covered(cert: CertFacts) -> tuple[str, ...]:
    return cert.dns_names + cert.ip_addresses or ((cert.common_name,) if cert.common_name else ())


def subject_name(cert: CertFacts) -> str:
    return cert.common_name or cert.subject or cert.fingerprint_sha256[:16]


def cert_label(position: int, cert: CertFacts) -> str:
    return f"certificate {position} ({subject_name(cert)})"


def chain_label(result: ProbeResult, position: int) -> str:
    chain = result.tls.chain if result.tls else ()
    return cert_label(position, chain[position]) if 0 <= position < len(chain) else f"certificate {position}"


def trust_store_name(broker: BrokerConfig) -> str:
    return f"the CA file {broker.tls.ca_file}" if broker.tls.ca_file else "the system trust store"


def utc_date(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


def utc_date_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def iso8601(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def host_port(broker: BrokerConfig) -> str:
    host = broker.target.host
    return f"[{host}]:{broker.target.port}" if ":" in host else f"{host}:{broker.target.port}"


def relative_days(left: float) -> str:
    return f"in {left:.1f} days" if left >= 0 else f"{-left:.1f} days ago"


def file_name(served: ServedFileFacts) -> str:
    if served.resolved_path and served.resolved_path != served.path:
        return f"{served.path} (-> {served.resolved_path})"
    return served.path
