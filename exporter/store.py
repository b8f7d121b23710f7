"""The latest result of every broker, and failure counts: what a scrape renders.

Written only by the scheduler (one asyncio loop), read by the collector: each publish replaces one
immutable ProbeResult, so a scrape always sees whole results, never a half-finished probe.

Brokers with ``addresses: all`` publish a *group*: one result per address of their name, replaced as a
whole (an address that left the DNS answer leaves the store with it). Their failure counts are keyed by
address too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.results import ProbeResult, Reason, Stage

#: (broker, stage, reason), or (broker, stage, reason, address) for brokers with ``addresses: all``
FailureKey = tuple[str, Stage, Reason] | tuple[str, Stage, Reason, str]


@dataclass
class ResultStore:
    results: dict[str, ProbeResult] = field(default_factory=dict)
    failure_counts: dict[FailureKey, int] = field(default_factory=dict)
    #: broker name -> probe interval in seconds (for staleness alerts)
    intervals: dict[str, float] = field(default_factory=dict)
    #: broker name -> its latest results, one per address (brokers with ``addresses: all``)
    groups: dict[str, tuple[ProbeResult, ...]] = field(default_factory=dict)
    #: bumped by every change of the results (publish, forget, configure): readers that kept up with
    #: every change need not look at every broker again
    revision: int = 0

    def publish(self, result: ProbeResult) -> ProbeResult | None:
        """Store a result; returns the one it replaces."""
        previous = self.results.get(result.broker)
        self.results[result.broker] = result
        self.revision += 1
        self._count(result)
        return previous

    def publish_group(
        self, name: str, results: Iterable[ProbeResult]
    ) -> list[tuple[ProbeResult, ProbeResult | None]]:
        """Replace the group of an ``addresses: all`` broker; returns (result, the one it replaces) pairs."""
        group = tuple(results)
        before = {result.address_label: result for result in self.groups.get(name, ())}
        self.groups[name] = group
        self.revision += 1
        addresses = {result.address_label for result in group}
        gone = [k for k in self.failure_counts if k[0] == name and len(k) == 4 and k[-1] not in addresses]
        for stale in gone:
            del self.failure_counts[stale]  # an address gone from the name takes its counters along
        for result in group:
            self._count(result)
        return [(result, before.get(result.address_label)) for result in group]

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

    def configure(self, intervals: Mapping[str, float]) -> None:
        """Adopt the configured brokers: removed brokers' results and counters vanish."""
        self.intervals = dict(intervals)
        keep = set(intervals)
        self.forget(name for name in [*self.results, *self.groups] if name not in keep)
        for key in [key for key in self.failure_counts if key[0] not in keep]:
            del self.failure_counts[key]

    def forget(self, names: Iterable[str]) -> None:
        self.revision += 1
        for name in names:
            self.results.pop(name, None)
            self.groups.pop(name, None)
