"""Fetch missing intermediates from a certificate's AIA caIssuers URL (to tell an incomplete chain
from an unknown CA). Bounded in time and size, cached in a cache bounded by entries and bytes, and only
used when a chain did not verify."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs.fields import http_url
from mqtt_cert_exporter.certs.parse import Parsed, load_pem_bundle
from mqtt_cert_exporter.probe.lifecycle.fetch import fetch_bounded
from mqtt_cert_exporter.results import CacheSize

log = logs.get_logger(__name__)

MAX_BODY = 64 * 1024
SUCCESS_TTL = 24 * 3600.0
FAILURE_TTL = 300.0
#: The cache's bounds (docs/reliability.md); bytes estimated as for CRLs (``crl.MEMORY_PER_BODY_BYTE``).
MAX_ENTRIES = 1000
MEMORY_PER_BODY_BYTE = 4
MAX_BYTES = 16 * 1024 * 1024
#: what a cached failure (its URL) is counted as
FAILURE_BYTES = 512


@dataclass
class AiaFetcher:
    """Caches by URL; one in-flight request per URL however many brokers share it."""

    enabled: bool = True
    cache: BoundedCache[str, tuple[Parsed, ...]] = field(
        default_factory=lambda: BoundedCache("aia", max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES)
    )
    _inflight: dict[str, asyncio.Task[tuple[Parsed, ...]]] = field(default_factory=dict)

    def size(self) -> CacheSize:
        return self.cache.size()

    async def fetch(self, url: str, timeout: float) -> tuple[Parsed, ...]:
        if not self.enabled or not http_url(url):
            return ()
        cached = self.cache.get(url, time.monotonic())
        if cached is not None:
            return cached
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(self._download(url, timeout))
            self._inflight[url] = task
            task.add_done_callback(lambda _: self._inflight.pop(url, None))
        try:
            return await asyncio.shield(task)
        except Exception as exc:  # best effort: any failure only means "no intermediate from AIA"
            log.debug("AIA fetch of %s failed: %s", url, exc)
            self.cache.put(url, (), size=FAILURE_BYTES, expires=time.monotonic() + FAILURE_TTL)
            return ()

    async def _download(self, url: str, timeout: float) -> tuple[Parsed, ...]:
        body = await fetch_bounded(url, timeout, MAX_BODY)
        certs = tuple(load_pem_bundle(body))
        expires = time.monotonic() + SUCCESS_TTL
        self.cache.put(url, certs, size=MEMORY_PER_BODY_BYTE * len(body), expires=expires)
        return certs
