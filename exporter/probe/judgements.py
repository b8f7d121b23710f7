"""What OpenSSL said of the chain each listener served at its last verifying handshake, so that the next
probe need not repeat it while nothing it rests on changed (the server name, the trust store, no date of
the chain passed, at most ``JUDGEMENT_TTL``):

* **accepted**: the next probe's handshake checks everything a verifying client checks but the chain (a
  context without a trust store, ``wire.tls.known_chain_context``). When the broker sends the chain
  OpenSSL accepted, the acceptance stands. The
  handshake's own signature is still checked: the broker still proves that it holds the leaf's key.
  Verifying the chain was a fifth of a healthy probe's CPU (measured against the lean prober's context).
* **rejected**: the next probe connects once, verifying nothing. While the broker sends the same chain,
  OpenSSL's rejection stands and the MQTT answer comes over that connection; a verifying handshake would
  only be rejected again, and a second connection would then ask whether the broker speaks MQTT.

Another chain: OpenSSL judges it, on a new connection. Pure: the probe does the I/O.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs.chain import first_date_after
from mqtt_cert_exporter.certs.parse import TrustStore
from mqtt_cert_exporter.probe.negotiation import Where
from mqtt_cert_exporter.results import CacheSize, CertFacts

#: OpenSSL's judgement of a chain is reused at most this long (and never past a date of the chain).
JUDGEMENT_TTL = 3600.0
JUDGEMENTS_MAX = 65536
JUDGEMENTS_MAX_BYTES = 16 << 20
#: What a remembered judgement holds (its chain by digest: the entries stay small, whatever a broker sends).
JUDGEMENT_BYTES = 512


def chain_digest(chain_der: Sequence[bytes]) -> bytes:
    """What identifies a chain as sent (each DER is self-delimiting, so their concatenation is unique)."""
    digest = hashlib.sha256()
    for der in chain_der:
        digest.update(der)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Judgement:
    """OpenSSL's ``verify`` (None: accepted; else the rejection's code and message) of the chain a
    listener served (``chain``: its ``chain_digest``) for ``server_name`` against ``store``."""

    server_name: str
    store: TrustStore
    verify: tuple[int, str] | None
    chain: bytes

    @property
    def accepted(self) -> bool:
        return self.verify is None


class Judgements:
    """Per listener, the last judgement while it still holds; bounded (``/probe`` strangers name
    listeners too)."""

    def __init__(self) -> None:
        self._cache: BoundedCache[Where, Judgement] = BoundedCache(
            "judgements", max_entries=JUDGEMENTS_MAX, max_bytes=JUDGEMENTS_MAX_BYTES
        )

    def recall(self, where: Where, server_name: str, store: TrustStore) -> Judgement | None:
        """The listener's last judgement, when it was for this server name and trust store."""
        judged = self._cache.get(where, time.time())
        if judged is None or judged.server_name != server_name or judged.store != store:
            return None
        return judged

    def remember(self, where: Where, judged: Judgement, chain: Iterable[CertFacts]) -> None:
        """``judged``, until the first date of ``chain`` (the certificates OpenSSL judged) passes."""
        now = time.time()
        until = first_date_after(now, chain, limit=now + JUDGEMENT_TTL)
        self._cache.put(where, judged, size=JUDGEMENT_BYTES, expires=until)

    def forget(self, where: Where) -> None:
        self._cache.pop(where)

    def size(self) -> CacheSize:
        return self._cache.size()
