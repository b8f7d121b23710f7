"""A cache an outsider can grow, bounded by entries AND bytes, least recently used first out.

A certificate chooses its CRL and caIssuers URLs: every new URL is a new entry, and a broker (or a
``/probe`` caller) can name as many as it likes; a broker that rotates its certificate on every
connection makes every probe a new parsed certificate, signature check and chain verdict. Each entry
may also expire (a CRL at its nextUpdate, a verdict at the next date of a certificate it rests on).
Thread-safe: certificates are also parsed in the reload thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

from mqtt_cert_exporter.results import CacheSize

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """Entries expire at their own time; the least recently used go first when either bound is hit.

    ``size`` is what the caller says an entry costs (bytes); an entry larger than ``max_bytes`` alone
    is not kept at all.
    """

    def __init__(self, name: str, *, max_entries: int, max_bytes: int) -> None:
        self.name = name
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[K, tuple[float, V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: K, now: float) -> V | None:
        """The value while it is fresh (``now`` before its expiry, monotonic); None otherwise."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: K, value: V, *, size: int, expires: float) -> None:
        with self._lock:
            if key in self._entries:
                self._drop(key)
            if size > self.max_bytes:
                return
            self._entries[key] = (expires, value, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def pop(self, key: K) -> None:
        with self._lock:
            if key in self._entries:
                self._drop(key)

    def size(self) -> CacheSize:
        with self._lock:
            return CacheSize(self.name, len(self._entries), self._bytes)

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: K) -> None:
        self._bytes -= self._entries.pop(key)[2]
