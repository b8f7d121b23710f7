"""The latest result of every broker, and failure counts: what a scrape renders.

Written only by the scheduler (one asyncio loop), read by the collector: each publish replaces one
immutable ProbeResult, so a scrape always sees whole results, never a half-finished probe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exporter.results import ProbeResult, Reason, Stage

FailureKey = tuple[str, Stage, Reason]


@dataclass
class ResultStore:
    results: dict[str, ProbeResult] = field(default_factory=dict)
    failure_counts: dict[FailureKey, int] = field(default_factory=dict)
    #: broker name -> probe interval in seconds (for staleness alerts)
    intervals: dict[str, float] = field(default_factory=dict)

    def publish(self, result: ProbeResult) -> ProbeResult | None:
        """Store a result; returns the one it replaces."""
        previous = self.results.get(result.broker)
        self.results[result.broker] = result
        if result.failure is not None:
            key = (result.broker, result.failure.stage, result.failure.reason)
            self.failure_counts[key] = self.failure_counts.get(key, 0) + 1
        return previous

    def configure(self, intervals: Mapping[str, float]) -> None:
        """Adopt the configured brokers: removed brokers' results and counters vanish."""
        self.intervals = dict(intervals)
        keep = set(intervals)
        self.forget(name for name in list(self.results) if name not in keep)
        for key in [key for key in self.failure_counts if key[0] not in keep]:
            del self.failure_counts[key]

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            self.results.pop(name, None)
