"""Where the daemon's memory goes at 10,000 brokers, in process, without a network.

    python -m bench.memory [--brokers 10000] [--rounds 2] [--top 25]      (tracemalloc, by file:line)
    python -m bench.memory --rss                                           (RSS alone, no tracemalloc)
    python -m bench.memory --baseline DIR    (--rss of an older checkout and this one, side by side)

The daemon's path after the probe, as it runs: the real ``Scheduler`` (one task per broker, admission,
the grid) with a prober that answers at once with results built as the probe builds them (``bench.format``'s
healthy / untrusted / refused mix; a chain's CA certificates one object per distinct certificate, as
``certs.parse`` keeps them), the store, ``daemon.log_state_change``, ``BrokerExposition.prepare``, and a
scrape as the /metrics handler makes it (render, encode, gzip at aiohttp's level). Not measured here: the
probe's own caches and connections in flight (``exporter/probe``), and the interpreter with its modules
(both in ``bench.compare``'s RSS of the real daemon).

Reports, after the first sweep and after ``--rounds`` steady rounds (every broker's next result: new objects
with equal facts, the chain's certificates the same ones): the memory traced (current), the peak during
the sweep and during a scrape, the top allocation sites; with ``--rss``, the process's RSS and its high-water
mark at the same points instead (tracemalloc's own bookkeeping would double them).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import generate_latest

from bench.format import healthy, refused, sides_of, successor, untrusted
from mqtt_cert_exporter import daemon, eventloop, memory
from mqtt_cert_exporter.collector import ChainDetail
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.exposition import BrokerExposition
from mqtt_cert_exporter.results import CertFacts, ProbeResult
from mqtt_cert_exporter.scheduler import Scheduler
from mqtt_cert_exporter.store import ResultStore
from mqtt_cert_exporter.web import openmetrics

INTERVAL = 3600.0


def shared(result: ProbeResult, certificates: dict[str, CertFacts]) -> ProbeResult:
    """The result with its CA certificates one object per distinct certificate (the probe's parsed cache)."""
    tls = result.tls
    if tls is None or len(tls.chain) < 2:
        return result
    chain = (tls.chain[0], *(certificates.setdefault(c.fingerprint_sha256, c) for c in tls.chain[1:]))
    anchor = tls.verdict.anchor
    if anchor is not None:
        anchor = certificates.setdefault(anchor.fingerprint_sha256, anchor)
    return replace(result, tls=replace(tls, chain=chain, verdict=replace(tls.verdict, anchor=anchor)))


class AnsweringProber:
    """What the scheduler needs of a prober: each broker's first result, then its successors."""

    def __init__(self, brokers: Iterable[BrokerConfig]) -> None:
        self._certificates: dict[str, CertFacts] = {}
        builders = (refused, untrusted) + (healthy,) * 8
        self._builders = {broker.name: builders[i % 10] for i, broker in enumerate(brokers)}
        #: each broker's latest result (the very object the store holds: nothing kept twice)
        self._latest: dict[str, ProbeResult] = {}
        self.probed = 0
        self.round_done: asyncio.Event = asyncio.Event()

    def configure(self, brokers: Iterable[BrokerConfig]) -> None:
        pass

    async def probe_group(
        self, broker: BrokerConfig, admit: Callable[[], Awaitable[None]]
    ) -> tuple[ProbeResult, ...]:
        latest = self._latest.get(broker.name)
        if latest is None:
            result = shared(self._builders[broker.name](broker.name), self._certificates)
        else:
            result = successor(latest, 1)
        if result.tls is not None:
            await admit()
        self._latest[broker.name] = result
        self.probed += 1
        if self.probed % len(self._builders) == 0:
            self.round_done.set()
        return (result,)


def scrape(exposition: BrokerExposition, registry: CollectorRegistry) -> int:
    """What the /metrics handler does (``web.app``) for Prometheus, which asks for OpenMetrics, gzip
    included: the compressed body's size. (``--baseline``: an older exposition without ``body``, whose
    handler converted the rendered text, then encoded it.)"""
    head = generate_latest(registry).decode()
    if hasattr(exposition, "body"):
        body = exposition.body(
            openmetrics.rewrite_headers(head), openmetrics.rewrite_headers, openmetrics.EOF
        )
    else:
        body = openmetrics.from_text_format(exposition.render(head)).encode()
    # the handler has returned (its text is gone) when aiohttp compresses the body
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return len(packer.compress(body) + packer.flush())


def rss() -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found["VmRSS"], found["VmHWM"]


class Report:
    def __init__(self, traced: bool, top: int) -> None:
        self.traced = traced
        self.top = top
        self.baseline: tracemalloc.Snapshot | None = None

    def point(self, label: str) -> None:
        gc.collect()
        if not self.traced:
            memory.trim()
            now, high = rss()
            print(f"{label:<34} RSS {now:7.1f} MB   high-water {high:7.1f} MB", flush=True)
            return
        current, peak = tracemalloc.get_traced_memory()
        print(f"{label:<34} traced {current / 2**20:7.1f} MB   peak {peak / 2**20:7.1f} MB", flush=True)
        tracemalloc.reset_peak()

    def sites(self, label: str) -> None:
        if not self.traced:
            return
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
        )
        print(f"\n{label}: top {self.top} allocation sites (alive)")
        for stat in snapshot.statistics("lineno")[: self.top]:
            frame = stat.traceback[0]
            where = f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"
            print(f"  {stat.size / 2**20:7.2f} MB {stat.count:>8} blocks  {where}")
        print()


async def run(brokers: int, rounds: int, report: Report) -> None:
    names = [f"broker-{i:05d}" for i in range(brokers)]
    configs = [BrokerConfig(name, Target(f"{name}.example", 8883), interval=INTERVAL) for name in names]
    prober = AnsweringProber(configs)
    store = ResultStore()
    exposition = BrokerExposition(store, chain=ChainDetail.LEAF_EARLIEST)
    registry = CollectorRegistry(auto_describe=False)
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)

    def on_result(result: ProbeResult, previous: ProbeResult | None) -> None:
        daemon.log_state_change(result, previous)
        exposition.prepare(result.broker)

    scheduler = Scheduler(prober, store, on_result=on_result)  # type: ignore[arg-type]
    report.point("start")
    scheduler.apply(configs)
    await prober.round_done.wait()
    await asyncio.sleep(0)
    report.point("first sweep published")
    scrape(exposition, registry)
    report.point("after the first scrape")
    report.sites("after the first sweep and scrape")
    for step in range(rounds):  # a steady round: every broker's next result (its task sleeps meanwhile)
        for broker in configs:
            for pair in store.publish(await prober.probe_group(broker, _admitted)):
                on_result(*pair)
        report.point(f"steady round {step + 1} published")
    scrape(exposition, registry)
    report.point("after a steady scrape")
    report.sites("steady state")
    await scheduler.stop()


async def _admitted() -> None:
    pass


def against(baseline: Path, brokers: int, rounds: int, runs: int = 2) -> None:
    """RSS and high-water mark at each point, this checkout's and ``baseline``'s (an older checkout), in
    alternating subprocesses; the lowest of ``runs`` each."""
    found: dict[str, dict[str, tuple[float, float]]] = {"before": {}, "after": {}}
    with sides_of(baseline) as sides:
        for _ in range(runs):
            for side, run in sides.items():
                command = ["-m", "bench.memory", "--rss", "--brokers", str(brokers), "--rounds", str(rounds)]
                for line in run(command).splitlines():
                    label, _, figures = line.partition(" RSS ")
                    now, high = (float(figures.split()[i]) for i in (0, 3))
                    seen = found[side].get(label.strip(), (math.inf, math.inf))
                    found[side][label.strip()] = (min(seen[0], now), min(seen[1], high))
    print(f"{brokers} brokers: RSS / high-water MB, before ({baseline}) and after (this checkout)")
    for label, (now, high) in found["after"].items():
        was, was_high = found["before"][label]
        print(f"{label:<34} {was:7.1f} -> {now:7.1f}   high-water {was_high:7.1f} -> {high:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--brokers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rss", action="store_true", help="RSS and its high-water mark, no tracemalloc")
    parser.add_argument("--baseline", type=Path, help="an older checkout: --rss of both, side by side")
    options = parser.parse_args()
    if options.baseline:
        against(options.baseline, options.brokers, options.rounds)
        return
    logging.getLogger("mqtt_cert_exporter").setLevel(logging.CRITICAL)
    if not options.rss:
        tracemalloc.start()
    eventloop.run(run(options.brokers, options.rounds, Report(not options.rss, options.top)))


if __name__ == "__main__":
    main()
