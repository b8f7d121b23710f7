"""What the status page costs for a big fleet, next to a /metrics scrape of the same fleet.

    python -m bench.status [--brokers 10000] [--repeat 5]

No network: one result per broker, built by hand (bench.format's healthy, untrusted and refused
results, in turn), published the way the daemon publishes them. Times, per request, what the handlers
of ``/`` (first page, and a text filter), ``/api/v1/brokers`` (every broker) and ``/broker/<name>`` do,
and ``BrokerExposition.render()`` (a /metrics scrape) for scale. Timings belong here, never in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from collections.abc import Callable

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from bench.format import BUILDERS, NOW
from mqtt_cert_exporter import eventloop, memory
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.exposition import BrokerExposition
from mqtt_cert_exporter.report import DEFAULT_WARN_DAYS
from mqtt_cert_exporter.store import ResultStore
from mqtt_cert_exporter.web.app import WebState, build_app
from mqtt_cert_exporter.web.status.broker_page import broker_page
from mqtt_cert_exporter.web.status.fleet import Assessor, assess_fleet, fleet_document, parse_query, select
from mqtt_cert_exporter.web.status.fleet_page import ProbeHelp, fleet_page
from mqtt_cert_exporter.web.status.routes import StatusSource, json_text, latest_results, status_routes


def timed(action: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` runs (garbage collection tuned as the daemon tunes it)."""
    durations = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        durations.append(time.perf_counter() - started)
    return statistics.median(durations)


async def loop_lag_during_get(brokers: list[BrokerConfig], store: ResultStore) -> tuple[float, float]:
    """GET / of a fresh app (nothing assessed yet) while a ticker measures how late the loop wakes it."""
    source = StatusSource(
        brokers=lambda: brokers, results=lambda: latest_results(store), clock=lambda: NOW + 5
    )
    app = build_app(CollectorRegistry(), WebState(), pages=status_routes(source))
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.005)
            worst = max(worst, time.perf_counter() - before - 0.005)

    async with TestClient(TestServer(app)) as client:
        ticking = asyncio.create_task(ticker())
        started = time.perf_counter()
        response = await client.get("/")
        await response.read()
        took = time.perf_counter() - started
        done.set()
        await ticking
    return worst, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    memory.tune_garbage_collector()  # as the daemon does before its first probe
    kinds = itertools.cycle(BUILDERS.values())
    brokers = [
        BrokerConfig(name=f"broker-{index:05d}", target=Target(f"broker-{index:05d}.example.com", 8883))
        for index in range(args.brokers)
    ]
    store = ResultStore()
    exposition = BrokerExposition(store)
    for broker in brokers:
        store.publish([next(kinds)(broker.name)])
        exposition.prepare(broker.name)
    store.configure({broker.name: broker for broker in brokers})
    help_ = ProbeHelp(False)
    now = NOW + 5

    assessor = Assessor(warn_days=DEFAULT_WARN_DAYS)

    def page(params: dict[str, str], *, reuse: bool = False) -> str:
        if reuse:  # what the daemon does: assessments of unchanged results are reused
            rows = assessor.rows(brokers, latest_results(store), now=now)
        else:
            rows = assess_fleet(brokers, latest_results(store), now=now, warn_days=DEFAULT_WARN_DAYS)
        view = select(rows, parse_query(params, paged=True))
        return fleet_page(view, params, warn_days=DEFAULT_WARN_DAYS, now=now, probe=help_)

    def half_changed() -> None:
        """Half the fleet probed again since the previous page (30 s refresh, 60 s interval)."""
        for broker in brokers[::2]:
            store.publish([next(kinds)(broker.name)])

    def api() -> str:
        rows = assessor.rows(brokers, latest_results(store), now=now)
        view = select(rows, parse_query({}, paged=False))
        return json_text(fleet_document(view, now=now, warn_days=DEFAULT_WARN_DAYS))

    def one() -> str:
        name = brokers[len(brokers) // 2].name
        found = [result for result in latest_results(store) if result.broker == name]
        rows = assess_fleet([brokers[len(brokers) // 2]], found, now=now, warn_days=DEFAULT_WARN_DAYS)
        return broker_page(name, rows, now=now, probe=False)

    def changed_then_page() -> float:
        half_changed()
        started = time.perf_counter()
        page({}, reuse=True)
        return time.perf_counter() - started

    page({}, reuse=True)
    measured = {
        "/ assessing every result (cold)": timed(lambda: page({}), args.repeat),
        "/ nothing changed since the previous page": timed(lambda: page({}, reuse=True), args.repeat),
        "/ half the fleet probed since the previous page": statistics.median(
            changed_then_page() for _ in range(args.repeat)
        ),
        "/?q=expired&page=2 (warm)": timed(
            lambda: page({"q": "expired", "page": "2"}, reuse=True), args.repeat
        ),
        "/api/v1/brokers, all brokers (warm)": timed(api, args.repeat),
        "/broker/<name>": timed(one, args.repeat),
        "/metrics (BrokerExposition.render)": timed(exposition.render, args.repeat),
    }
    sizes = {
        "/ nothing changed since the previous page": len(page({}, reuse=True).encode()),
        "/api/v1/brokers, all brokers (warm)": len(api().encode()),
    }
    lag, took = eventloop.run(loop_lag_during_get(brokers, store))
    scrape = measured["/metrics (BrokerExposition.render)"]
    print(f"{args.brokers} brokers, median of {args.repeat} runs each")
    for name, seconds in measured.items():
        size = f", {sizes[name] / 1024:.0f} KiB" if name in sizes else ""
        print(f"  {name:50s} {seconds * 1000:8.1f} ms  ({seconds / scrape:5.1f} x a scrape{size})")
    print(
        f"  GET / through the daemon's handler (cold) took {took * 1000:.0f} ms; the event loop's longest "
        f"stall meanwhile: {lag * 1000:.0f} ms (rendering runs in a worker thread)"
    )


if __name__ == "__main__":
    main()
