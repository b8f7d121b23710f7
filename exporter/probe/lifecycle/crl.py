"""Fetch CRLs from CRL distribution points over HTTP: bounded in time and size, cached until the CRL's
nextUpdate in a cache bounded by entries and bytes, one request in flight per URL however many brokers
share it. The analysis is pure, in ``exporter.certs.revocation``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs.fields import http_url
from mqtt_cert_exporter.certs.revocation import Crl, parse_crl
from mqtt_cert_exporter.probe.lifecycle.fetch import fetch_bounded
from mqtt_cert_exporter.results import CacheSize

log = logs.get_logger(__name__)

#: Public CAs shard their CRLs into files of a few MB at most; anything larger is refused.
MAX_BODY = 16 * 1024 * 1024
#: Bodies larger than this are parsed in a thread, so a big CRL does not stall the probes.
PARSE_IN_THREAD = 256 * 1024
#: A CRL is re-fetched at its nextUpdate, but not more often than this (stale or too-soon nextUpdate)...
MIN_TTL = 60.0
#: ... and at least this often (a nextUpdate months away, or none at all).
MAX_TTL = 24 * 3600.0
DEFAULT_TTL = 3600.0
FAILURE_TTL = 300.0
#: The cache's bounds (docs/reliability.md). Bytes are the memory a parsed CRL holds, estimated as
#: ``MEMORY_PER_BODY_BYTE`` times its body (measured: 3.3 for a 736 KB CRL of 16,000 entries), so the
#: largest CRL accepted still fits alone.
MAX_ENTRIES = 1000
MEMORY_PER_BODY_BYTE = 4
MAX_BYTES = MEMORY_PER_BODY_BYTE * MAX_BODY
#: what a cached failure (its URL and error) is counted as
FAILURE_BYTES = 512

#: a CRL, or None and why there is none
Answer = tuple[Crl | None, str]


@dataclass
class CrlFetcher:
    enabled: bool = True
    #: bound of one download; a probe may stop waiting sooner (``fetch(wait=...)``) and the download
    #: then goes on in the background, for the next probe to find in the cache
    download_timeout: float = 10.0
    max_body: int = MAX_BODY
    #: url -> the answer, until it expires (monotonic)
    cache: BoundedCache[str, Answer] = field(
        default_factory=lambda: BoundedCache("crl", max_entries=MAX_ENTRIES, max_bytes=MAX_BYTES)
    )
    _inflight: dict[str, asyncio.Task[Crl]] = field(default_factory=dict)

    def cached(self, url: str) -> Answer | None:
        """The cached answer for ``url`` while it is fresh (a CRL, or None and the error); else None."""
        if not self.enabled:
            return None, "CRL checks are disabled"
        return self.cache.get(url, time.monotonic())

    def size(self) -> CacheSize:
        return self.cache.size()

    async def fetch(self, url: str, wait: float) -> Answer:
        """The CRL at ``url`` (from the cache while it is fresh), or None and why not; waits at most
        ``wait`` seconds for a download."""
        if not self.enabled:
            return None, "CRL checks are disabled"
        if not http_url(url):
            return None, f"unsupported CRL URL {url}"
        cached = self.cache.get(url, time.monotonic())
        if cached is not None:
            return cached
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(self._download(url, self.download_timeout))
            self._inflight[url] = task
            task.add_done_callback(lambda _: self._inflight.pop(url, None))
        try:
            async with asyncio.timeout(max(0.0, wait)):
                crl = await asyncio.shield(task)
        except TimeoutError:
            if not task.done():  # the probe's deadline, not the download's: no verdict on the URL yet
                return None, f"{url} did not answer before the probe's deadline (still fetching)"
            return self._failed(url, f"no answer from {url} within {self.download_timeout:g} s")
        except aiohttp.ClientResponseError as exc:
            return self._failed(url, f"{url} answered HTTP {exc.status}")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(url, f"cannot fetch {url}: {exc or type(exc).__name__}")
        except ValueError as exc:  # TooLarge included
            return self._failed(url, f"{url} did not return a CRL: {exc}")
        return crl, ""

    def _failed(self, url: str, error: str) -> tuple[None, str]:
        log.debug("CRL fetch failed", extra={"url": url, "error": error})
        self.cache.put(url, (None, error), size=FAILURE_BYTES, expires=time.monotonic() + FAILURE_TTL)
        return None, error

    async def _download(self, url: str, timeout: float) -> Crl:
        body = await fetch_bounded(url, timeout, self.max_body)
        crl = await asyncio.to_thread(parse_crl, body) if len(body) > PARSE_IN_THREAD else parse_crl(body)
        expires = time.monotonic() + ttl(crl, time.time())
        self.cache.put(url, (crl, ""), size=MEMORY_PER_BODY_BYTE * len(body), expires=expires)
        return crl


def ttl(crl: Crl, now: float) -> float:
    """Seconds to keep a CRL: until its nextUpdate, within [MIN_TTL, MAX_TTL]."""
    if crl.next_update is None:
        return DEFAULT_TTL
    return min(MAX_TTL, max(MIN_TTL, crl.next_update - now))
