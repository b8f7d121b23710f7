"""The latest results of every broker, and failure counts: what a scrape renders.

Written only by the scheduler (one asyncio loop), read by the collector and the exposition. A broker's
results are one value: a tuple of immutable ProbeResults, one for most brokers, one per address of the
name for ``addresses: all`` (each labelled with its address). A publish replaces that value whole, so a
scrape always sees whole results, never a half-finished probe, and an address that left the DNS answer
leaves the store with it.

A result that received no certificate keeps the last chain seen at its address (``retained``) for the
broker's ``chain_retention``: a certificate problem must not look fixed because the broker went down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from mqtt_cert_exporter.config import DEFAULT_CHAIN_RETENTION, BrokerConfig
from mqtt_cert_exporter.results import ProbeResult, Reason, Stage, chain_seen

#: A broker's results: one, or one per address (``addresses: all``).
BrokerResults = tuple[ProbeResult, ...]
#: (broker, address label, stage, reason); the address label is "" unless the result has one
FailureKey = tuple[str, str, Stage, Reason]


@dataclass
class ResultStore:
    #: broker name -> its latest results
    results: dict[str, BrokerResults] = field(default_factory=dict)
    failure_counts: dict[FailureKey, int] = field(default_factory=dict)
    #: broker name -> probe interval in seconds (for staleness alerts)
    intervals: dict[str, float] = field(default_factory=dict)
    #: broker name -> its configuration (what /metrics says about a broker before any probe)
    brokers: dict[str, BrokerConfig] = field(default_factory=dict)
    #: bumped by every change of the results (publish, forget, configure): readers that kept up with
    #: every change need not look at every broker again
    revision: int = 0
    #: broker name -> its counters' keys that carry an address label (``addresses: all``): what an
    #: address gone from the name takes along, found without scanning the fleet's counters
    _labelled: dict[str, set[FailureKey]] = field(default_factory=dict)

    def publish(self, results: Sequence[ProbeResult]) -> list[tuple[ProbeResult, ProbeResult | None]]:
        """Replace a broker's results (never none); returns (result, the one it replaces at the same
        address) pairs."""
        name = results[0].broker
        previous = self.results.get(name)
        before = {result.address_label: result for result in previous or ()}
        published = tuple(self._retain(result, before.get(result.address_label)) for result in results)
        self.results[name] = published
        self.revision += 1
        labelled = self._labelled.get(name)
        if labelled:
            addresses = {result.address_label for result in published}
            for stale in [key for key in labelled if key[1] not in addresses]:
                del self.failure_counts[stale]  # an address gone from the name takes its counters along
                labelled.discard(stale)
        for result in published:
            if result.failure is not None:
                key = (name, result.address_label, result.failure.stage, result.failure.reason)
                self.failure_counts[key] = self.failure_counts.get(key, 0) + 1
                if result.address_label:
                    self._labelled.setdefault(name, set()).add(key)
        return [(result, before.get(result.address_label)) for result in published]

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

    def configure(self, brokers: Mapping[str, BrokerConfig]) -> None:
        """Adopt the configured brokers: removed brokers' results and counters vanish."""
        self.brokers = dict(brokers)
        self.intervals = {name: broker.interval for name, broker in brokers.items()}
        keep = set(brokers)
        self.forget(name for name in self.results if name not in keep)
        for key in [key for key in self.failure_counts if key[0] not in keep]:
            del self.failure_counts[key]
        for name in [name for name in self._labelled if name not in keep]:
            del self._labelled[name]

    def forget(self, names: Iterable[str]) -> None:
        self.revision += 1
        for name in list(names):
            self.results.pop(name, None)
