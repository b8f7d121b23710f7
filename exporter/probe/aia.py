"""Fetch missing intermediates from a certificate's AIA caIssuers URL (to tell an incomplete chain
from an unknown CA). Bounded in time and size, cached, and only used when a chain did not verify."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from exporter import logs
from exporter.probe.chain import Parsed, load_pem_bundle
from exporter.probe.fetch import fetch_bounded

log = logs.get_logger(__name__)

MAX_BODY = 64 * 1024
SUCCESS_TTL = 24 * 3600.0
FAILURE_TTL = 300.0


@dataclass
class AiaFetcher:
    """Caches by URL; one in-flight request per URL however many brokers share it."""

    enabled: bool = True
    _cache: dict[str, tuple[float, tuple[Parsed, ...]]] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Task[tuple[Parsed, ...]]] = field(default_factory=dict)

    async def fetch(self, url: str, timeout: float) -> tuple[Parsed, ...]:
        if not self.enabled or not url.lower().startswith(("http://", "https://")):
            return ()
        cached = self._cache.get(url)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(self._download(url, timeout))
            self._inflight[url] = task
            task.add_done_callback(lambda _: self._inflight.pop(url, None))
        try:
            return await asyncio.shield(task)
        except Exception as exc:  # best effort: any failure only means "no intermediate from AIA"
            log.debug("AIA fetch of %s failed: %s", url, exc)
            self._cache[url] = (time.monotonic() + FAILURE_TTL, ())
            return ()

    async def _download(self, url: str, timeout: float) -> tuple[Parsed, ...]:
        body = await fetch_bounded(url, timeout, MAX_BODY)
        certs = tuple(load_pem_bundle(body))
        self._cache[url] = (time.monotonic() + SUCCESS_TTL, certs)
        return certs
