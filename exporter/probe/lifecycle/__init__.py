"""Around the chain, never part of ``probe_success``: the checks (``checks``), the CRL and AIA fetchers
with their bounded caches (``crl``, ``aia``, ``fetch``; the cache is ``exporter.cache``) and the TLS
1.0/1.1 handshake (``legacy``)."""

from mqtt_cert_exporter.probe.lifecycle.checks import LEGACY_TLS_INTERVAL, Lifecycle

__all__ = ["LEGACY_TLS_INTERVAL", "Lifecycle"]
