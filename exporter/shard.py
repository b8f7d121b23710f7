"""Static sharding: ``--shard=i/n`` makes one of n exporter processes probe about 1/n of the brokers.

A broker belongs to exactly one shard, chosen by a stable hash of its name: SHA-256 (not Python's
``hash()``, which is salted per process), so every process, host and Python version agrees, and adding
or removing one broker never moves another. The last 8 bytes of the digest are used; the scheduler's
grid offset uses the first 8, so a shard's brokers stay spread over the whole interval.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from mqtt_cert_exporter.config import BrokerConfig

Shard = tuple[int, int]  # (index, count), 0 <= index < count


def parse_shard(text: str) -> Shard:
    """``"1/4"`` -> ``(1, 4)``; ValueError when it is not ``i/n`` with ``0 <= i < n``."""
    index_text, sep, count_text = text.strip().partition("/")
    if not sep or not index_text.strip().isdigit() or not count_text.strip().isdigit():
        raise ValueError(f"shard {text!r}: expected i/n, e.g. 0/2")
    index, count = int(index_text), int(count_text)
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need 0 <= i < n, e.g. 0/{max(count, 2)}")
    return index, count


def shard_of(name: str, count: int) -> int:
    """The shard (0..count-1) the broker ``name`` belongs to."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[-8:], "big") % count


def in_shard(name: str, shard: Shard) -> bool:
    """Whether shard ``(i, n)`` probes the broker ``name``; every name is in exactly one of n shards."""
    index, count = shard
    return shard_of(name, count) == index


def select(brokers: Iterable[BrokerConfig], shard: Shard | None) -> tuple[BrokerConfig, ...]:
    """The brokers this shard probes, in configuration order; all of them when ``shard`` is None."""
    if shard is None:
        return tuple(brokers)
    return tuple(broker for broker in brokers if in_shard(broker.name, shard))
