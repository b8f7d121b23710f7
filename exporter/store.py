"""The latest result of every broker, and failure counts: what a scrape renders.

Written only by the scheduler (one asyncio loop), read by the collector: each publish replaces one
immutable ProbeResult, so a scrape always sees whole results, never a half-finished probe.

Brokers with ``addresses: all`` publish a *group*: one result per address of their name, replaced as a
whole (an address that left the DNS answer leaves the store with it). Their failure counts are keyed by
address too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from exporter.config import DEFAULT_CHAIN_RETENTION, BrokerConfig
from exporter.results import ProbeResult, Reason, Stage, chain_seen

#: (broker, stage, reason), or (broker, stage, reason, address) for brokers with ``addresses: all``
FailureKey = tuple[str, Stage, Reason] | tuple[str, Stage, Reason, str]


@dataclass
class ResultStore:
    results: dict[str, ProbeResult] = field(default_factory=dict)
    failure_counts: dict[FailureKey, int] = field(default_factory=dict)
    #: broker name -> probe interval in seconds (for staleness alerts)
    intervals: dict[str, float] = field(default_factory=dict)
    #: broker name -> its configuration (what /metrics says about a broker before any probe)
    brokers: dict[str, BrokerConfig] = field(default_factory=dict)
    #: broker name -> its latest results, one per address (brokers with ``addresses: all``)
    groups: dict[str, tuple[ProbeResult, ...]] = field(default_factory=dict)
    #: bumped by every change of the results (publish, forget, configure): readers that kept up with
    #: every change need not look at every broker again
    revision: int = 0

    def publish(self, result: ProbeResult) -> ProbeResult | None:
        """Store a result; returns the one it replaces."""
        previous = self.results.get(result.broker)
        result = self._retain(result, previous)
        self.results[result.broker] = result
        self.revision += 1
        self._count(result)
        return previous

    def publish_group(
        self, name: str, results: Iterable[ProbeResult]
    ) -> list[tuple[ProbeResult, ProbeResult | None]]:
        """Replace the group of an ``addresses: all`` broker; returns (result, the one it replaces) pairs."""
        before = {result.address_label: result for result in self.groups.get(name, ())}
        group = tuple(self._retain(result, before.get(result.address_label)) for result in results)
        self.groups[name] = group
        self.revision += 1
        addresses = {result.address_label for result in group}
        gone = [k for k in self.failure_counts if k[0] == name and len(k) == 4 and k[-1] not in addresses]
        for stale in gone:
            del self.failure_counts[stale]  # an address gone from the name takes its counters along
        for result in group:
            self._count(result)
        return [(result, before.get(result.address_label)) for result in group]

    def _retain(self, result: ProbeResult, previous: ProbeResult | None) -> ProbeResult:
        """Keep the last chain seen on a result that received none, for the broker's chain_retention.

        An expired or untrusted certificate must not look fixed because its broker also went down.
        """
        if previous is None or (result.tls is not None and result.tls.chain):
            return result
        seen = chain_seen(previous)
        broker = self.brokers.get(result.broker)
        retention = DEFAULT_CHAIN_RETENTION if broker is None else broker.chain_retention
        if seen is None or result.finished - seen.seen > retention:
            return result
        return replace(result, retained=seen)

    def _count(self, result: ProbeResult) -> None:
        if result.failure is None:
            return
        key: FailureKey = (result.broker, result.failure.stage, result.failure.reason)
        if result.address_label:
            key = (*key, result.address_label)
        self.failure_counts[key] = self.failure_counts.get(key, 0) + 1

    def latest(self) -> list[ProbeResult]:
        """Every result a scrape renders: one per broker, one per address for grouped brokers."""
        return [*self.results.values(), *(result for group in self.groups.values() for result in group)]

    def configure(self, brokers: Mapping[str, BrokerConfig]) -> None:
        """Adopt the configured brokers: removed brokers' results and counters vanish."""
        self.brokers = dict(brokers)
        self.intervals = {name: broker.interval for name, broker in brokers.items()}
        keep = set(brokers)
        self.forget(name for name in [*self.results, *self.groups] if name not in keep)
        for key in [key for key in self.failure_counts if key[0] not in keep]:
            del self.failure_counts[key]

    def forget(self, names: Iterable[str]) -> None:
        self.revision += 1
        for name in names:
            self.results.pop(name, None)
            self.groups.pop(name, None)
