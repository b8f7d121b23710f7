"""Around the chain, after the probe proper: what none of it is allowed to change is ``probe_success``.

* the broker's certificate file (``tls.served_cert_file``) against the leaf it serves, every probe;
* the exporter's own client certificate (``tls.cert_file``);
* CRL revocation of the presented chain (fetched over HTTP, cached until nextUpdate);
* whether the broker still accepts TLS 1.0/1.1 (a second handshake, at most once per
  ``legacy_tls_interval`` per broker and address);
* the lints (``exporter.certs.lints``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.certs import files, lints, revocation
from mqtt_cert_exporter.certs.parse import Parsed
from mqtt_cert_exporter.certs.revocation import Crl
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.probe.draft import Around, Draft
from mqtt_cert_exporter.probe.lifecycle.crl import CrlFetcher
from mqtt_cert_exporter.probe.lifecycle.legacy import check_legacy_tls
from mqtt_cert_exporter.results import (
    CertFacts,
    LegacyTlsFacts,
    Reason,
    RevocationCheck,
    RevocationFacts,
    RevocationStatus,
    ServedFileFacts,
    Stage,
)

log = logs.get_logger("mqtt_cert_exporter.probe")

#: The TLS 1.0/1.1 check, when turned on (``--probe.legacy-tls-interval``), runs at most this often per
#: broker and address by default.
LEGACY_TLS_INTERVAL = 86400.0
#: ... and is retried this soon when it could not tell (connection failed, timeout).
LEGACY_TLS_RETRY = 300.0
LEGACY_TLS_TIMEOUT = 3.0
_MAX_LEGACY_ENTRIES = 100_000


@dataclass
class Lifecycle:
    """Shared by every probe of a Prober: the CRL cache, the legacy-TLS cache, what was last logged."""

    crl: CrlFetcher = field(default_factory=CrlFetcher)
    #: None: no TLS 1.0/1.1 check (the default: brokers log the refused handshake, some as an error)
    legacy_tls_interval: float | None = None
    #: (broker, ip, port, server name) -> (monotonic expiry, facts)
    _legacy: dict[tuple[str, str, int, str], tuple[float, LegacyTlsFacts]] = field(default_factory=dict)
    #: broker -> the served-file state last logged (log once per change, not every probe)
    _served_logged: dict[str, tuple[object, ...]] = field(default_factory=dict)

    async def complete(
        self,
        broker: BrokerConfig,
        draft: Draft,
        presented: Sequence[Parsed],
        *,
        deadline: float,
    ) -> Around:
        """The facts around the chain of ``draft`` (the probe proper); ``presented`` is its chain as
        parsed. Everything here shares the probe's deadline (monotonic): a broker costs at most its
        timeout.

        Usually everything comes from caches and nothing is awaited (this runs after every probe).
        """
        ip, tls, failure = draft.ip, draft.tls, draft.failure
        candidates = _revocation_candidates(presented)
        urls = _urls(candidates)
        crls = {url: hit for url in urls if (hit := self.crl.cached(url)) is not None}
        missing = [url for url in urls if url not in crls]
        # The legacy handshake only makes sense against a server that speaks TLS: it completed the
        # handshake, or refused ours (perhaps it speaks nothing newer than TLS 1.1).
        speaks_tls = tls is not None or (
            failure is not None and failure.stage is Stage.TLS and failure.reason is Reason.HANDSHAKE_FAILURE
        )
        legacy: LegacyTlsFacts | None = None
        legacy_due = False
        if ip and speaks_tls and self.legacy_tls_interval is not None and broker.proxy is None:
            # (a direct connection would bypass the proxy such a broker is reached through)
            legacy_due, legacy = self._legacy_cached(broker, ip)
        if missing and legacy_due:
            fetched, legacy = await asyncio.gather(
                self._fetch(missing, deadline), self._legacy_check(broker, ip, deadline)
            )
            crls.update(fetched)
        elif missing:
            crls.update(await self._fetch(missing, deadline))
        elif legacy_due:
            legacy = await self._legacy_check(broker, ip, deadline)
        chain = tls.chain if tls is not None else ()
        return Around(
            served_file=self._served_file(broker, chain),
            client_cert=_client_cert(broker),
            revocation=_revocation(broker, presented, candidates, crls) if presented else None,
            legacy_tls=legacy,
            lints=lints.lint(chain, now=time.time(), legacy=legacy),
        )

    # -- the certificate file -------------------------------------------------------------------
    def _served_file(self, broker: BrokerConfig, chain: Sequence[CertFacts]) -> ServedFileFacts | None:
        path = broker.tls.served_cert_file
        if not path:
            return None
        read = files.read_certificate_file(path)
        leaf = read.certificates[0].facts if read.certificates else None
        served = chain[0].fingerprint_sha256 if chain else ""
        matches = None if leaf is None or not served else leaf.fingerprint_sha256 == served
        facts = ServedFileFacts(
            path=path,
            resolved_path=read.resolved_path,
            leaf=leaf,
            modified=read.modified,
            matches=matches,
            served_fingerprint=served,
            error=read.error,
        )
        self._log_served_file(broker.name, facts)
        return facts

    def _log_served_file(self, name: str, facts: ServedFileFacts) -> None:
        leaf = facts.leaf
        state: tuple[object, ...] = (
            facts.error,
            facts.matches,
            leaf.fingerprint_sha256 if leaf else "",
            facts.served_fingerprint,
        )
        previous = self._served_logged.get(name)
        self._served_logged[name] = state
        if previous == state:
            return
        fields: dict[str, object] = {"broker": name, "file": facts.path}
        if facts.resolved_path and facts.resolved_path != facts.path:
            fields["resolved"] = facts.resolved_path
        if facts.error:
            log.error("cannot read the broker's certificate file", extra={**fields, "error": facts.error})
        elif facts.matches is False and leaf is not None:
            log.warning(
                "broker serves an outdated certificate: the file was renewed, reload the broker",
                extra={
                    **fields,
                    "renewed_on": _day(leaf.not_before),
                    "file_fingerprint_sha256": leaf.fingerprint_sha256,
                    "served_fingerprint_sha256": facts.served_fingerprint,
                },
            )
        elif facts.matches and previous is not None:
            log.info("broker serves its certificate file", extra=fields)

    # -- revocation -----------------------------------------------------------------------------
    async def _fetch(self, urls: Sequence[str], deadline: float) -> dict[str, tuple[Crl | None, str]]:
        if len(urls) == 1:
            return {urls[0]: await self.crl.fetch(urls[0], deadline - time.monotonic())}
        answers = await asyncio.gather(*(self.crl.fetch(url, deadline - time.monotonic()) for url in urls))
        return dict(zip(urls, answers, strict=True))

    # -- TLS 1.0/1.1 ----------------------------------------------------------------------------
    def _legacy_cached(self, broker: BrokerConfig, ip: str) -> tuple[bool, LegacyTlsFacts | None]:
        """(due, the last answer): due when the check should run now."""
        cached = self._legacy.get(_legacy_key(broker, ip))
        if cached is not None and cached[0] > time.monotonic():
            return False, cached[1]
        return True, cached[1] if cached is not None else None

    async def _legacy_check(self, broker: BrokerConfig, ip: str, deadline: float) -> LegacyTlsFacts | None:
        key = _legacy_key(broker, ip)
        cached = self._legacy.get(key)
        now = time.monotonic()
        left = min(LEGACY_TLS_TIMEOUT, deadline - now)
        if left <= 0.05:  # the probe used its whole deadline: try again at a later probe
            return cached[1] if cached is not None else None
        facts = await check_legacy_tls(
            ip,
            broker.target.port,
            broker.server_name,
            timeout=left,
            cert_file=broker.tls.cert_file,
            key_file=broker.tls.key_file,
        )
        if facts.accepted is None and cached is not None and cached[1].accepted is not None:
            # Could not tell this time: keep the last real answer (with its date) until the retry.
            facts = cached[1]
        interval = self.legacy_tls_interval or 0.0
        retry = interval if facts.accepted is not None else LEGACY_TLS_RETRY
        if len(self._legacy) >= _MAX_LEGACY_ENTRIES:
            self._legacy = {k: v for k, v in self._legacy.items() if v[0] > now}
        self._legacy[key] = (time.monotonic() + min(retry, interval), facts)
        if facts.accepted and (cached is None or not cached[1].accepted):
            log.warning(
                "broker still accepts a legacy TLS version",
                extra={"broker": broker.name, "address": broker.address, "version": facts.version},
            )
        return facts


def _legacy_key(broker: BrokerConfig, ip: str) -> tuple[str, str, int, str]:
    return (broker.name, ip, broker.target.port, broker.server_name)


def _revocation_candidates(presented: Sequence[Parsed]) -> list[tuple[int, Parsed]]:
    """The certificates whose revocation can be checked: parsed, with a CRL URL, not self-issued."""
    return [
        (position, cert)
        for position, cert in enumerate(presented)
        if cert.ok and cert.facts.crl_urls and not cert.facts.self_issued
    ]


def _urls(candidates: Sequence[tuple[int, Parsed]]) -> list[str]:
    return list(dict.fromkeys(url for _, cert in candidates for url in cert.facts.crl_urls))


def _revocation(
    broker: BrokerConfig,
    presented: Sequence[Parsed],
    candidates: Sequence[tuple[int, Parsed]],
    crls: Mapping[str, tuple[Crl | None, str]],
) -> RevocationFacts:
    if not candidates:
        return RevocationFacts()
    pool = list(presented)
    if broker.tls.intermediates_file:
        pool.extend(files.certificates_in(broker.tls.intermediates_file))
    store = files.trust_store(broker.tls.ca_file)
    now = time.time()
    checks: list[RevocationCheck] = []
    for position, cert in candidates:
        issuer = revocation.issuer_of(cert, pool, store)
        verdict: RevocationCheck | None = None
        for url in cert.facts.crl_urls:  # the first that gives an answer
            crl, error = crls.get(url, (None, "not fetched"))
            if crl is None:
                verdict = RevocationCheck(position, RevocationStatus.UNKNOWN, url, f"no CRL: {error}")
                continue
            verdict = revocation.check(cert, issuer, crl, position=position, url=url, now=now)
            if verdict.status is not RevocationStatus.UNKNOWN:
                break
        assert verdict is not None  # crl_urls is not empty
        checks.append(verdict)
    return RevocationFacts(
        checks=tuple(checks),
        fetch_success=all(check.status is not RevocationStatus.UNKNOWN for check in checks),
    )


def _client_cert(broker: BrokerConfig) -> CertFacts | None:
    if not broker.tls.cert_file:
        return None
    certificates = files.certificates_in(broker.tls.cert_file)
    return certificates[0].facts if certificates else None


def _day(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")
