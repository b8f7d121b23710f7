"""The cached fleet exposition says exactly what collector.broker_families says, at any scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import broker_families
from exporter.exposition import BrokerExposition
from exporter.probe import Prober
from exporter.results import ProbeResult, Reason, Stage
from exporter.store import ResultStore
from tests.conftest import Lab

Sample = tuple[str, tuple[tuple[str, str], ...], float]


def samples(text: str) -> list[Sample]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), round(s.value, 6))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    )


def reference(store: ResultStore, now: float) -> str:
    class Reference:
        def collect(self) -> list[Metric]:
            return broker_families(store.latest(), store.failure_counts, store.intervals, now)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Reference())  # type: ignore[arg-type]
    return generate_latest(registry).decode()


async def probed_store(lab: Lab, *scenarios: str) -> ResultStore:
    store = ResultStore()
    store.configure({name: 60.0 for name in scenarios})
    prober = Prober()
    for name in scenarios:
        store.publish(await prober.probe(lab.broker(name)))
    return store


async def test_same_series_as_the_collector_at_any_time(lab: Lab) -> None:
    store = await probed_store(lab, "good", "expired", "expired_wrong_host", "closed", "password_wrong")
    clock = [1_000_000.0]
    exposition = BrokerExposition(store, clock=lambda: clock[0])
    for now in (1_000_000.0, 2_000_000_000.0):  # the second scrape reuses the cached text
        clock[0] = now
        assert samples(exposition.render()) == samples(reference(store, now))


async def test_new_results_counters_and_removals_show_up(lab: Lab) -> None:
    store = await probed_store(lab, "good", "closed")
    exposition = BrokerExposition(store, clock=lambda: 5.0)
    first = exposition.render()
    assert 'mqtt_broker_probe_failures_total{broker="closed",stage="connect",reason="refused"} 1.0' in first
    replaced: ProbeResult = await Prober().probe(lab.broker("closed"))
    store.publish(replaced)
    second = exposition.render()
    assert 'mqtt_broker_probe_failures_total{broker="closed",stage="connect",reason="refused"} 2.0' in second
    timestamp = ("mqtt_broker_probe_timestamp_seconds", (("broker", "closed"),), round(replaced.finished, 6))
    assert timestamp in samples(second)
    store.configure({"good": 60.0})
    third = exposition.render()
    assert 'broker="closed"' not in third and 'broker="good"' in third
    assert samples(third) == samples(reference(store, 5.0))
    assert (Stage.CONNECT, Reason.REFUSED) not in {key[1:3] for key in store.failure_counts}
