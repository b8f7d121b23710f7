"""Fetch CRLs from CRL distribution points over HTTP: bounded in time and size, cached until the CRL's
nextUpdate, one request in flight per URL however many brokers share it. The analysis is pure, in
``exporter.probe.revocation``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import aiohttp

from exporter import logs
from exporter.probe.fetch import fetch_bounded
from exporter.probe.revocation import Crl, parse_crl

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


@dataclass
class CrlFetcher:
    enabled: bool = True
    #: bound of one download; a probe may stop waiting sooner (``fetch(wait=...)``) and the download
    #: then goes on in the background, for the next probe to find in the cache
    download_timeout: float = 10.0
    #: url -> (monotonic expiry, the CRL or None, the error when None)
    _cache: dict[str, tuple[float, Crl | None, str]] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Task[Crl]] = field(default_factory=dict)

    def cached(self, url: str) -> tuple[Crl | None, str] | None:
        """The cached answer for ``url`` while it is fresh (a CRL, or None and the error); else None."""
        if not self.enabled:
            return None, "CRL checks are disabled"
        hit = self._cache.get(url)
        if hit is None or hit[0] <= time.monotonic():
            return None
        return hit[1], hit[2]

    async def fetch(self, url: str, wait: float) -> tuple[Crl | None, str]:
        """The CRL at ``url`` (from the cache while it is fresh), or None and why not; waits at most
        ``wait`` seconds for a download."""
        if not self.enabled:
            return None, "CRL checks are disabled"
        if not url.lower().startswith(("http://", "https://")):
            return None, f"unsupported CRL URL {url}"
        cached = self._cache.get(url)
        if cached and cached[0] > time.monotonic():
            return cached[1], cached[2]
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
        except ValueError as exc:
            return self._failed(url, f"{url} did not return a CRL: {exc}")
        return crl, ""

    def _failed(self, url: str, error: str) -> tuple[None, str]:
        log.debug("CRL fetch failed", extra={"url": url, "error": error})
        self._cache[url] = (time.monotonic() + FAILURE_TTL, None, error)
        return None, error

    async def _download(self, url: str, timeout: float) -> Crl:
        body = await fetch_bounded(url, timeout, MAX_BODY)
        crl = await asyncio.to_thread(parse_crl, body) if len(body) > PARSE_IN_THREAD else parse_crl(body)
        self._cache[url] = (time.monotonic() + ttl(crl, time.time()), crl, "")
        return crl


def ttl(crl: Crl, now: float) -> float:
    """Seconds to keep a CRL: until its nextUpdate, within [MIN_TTL, MAX_TTL]."""
    if crl.next_update is None:
        return DEFAULT_TTL
    return min(MAX_TTL, max(MIN_TTL, crl.next_update - now))
