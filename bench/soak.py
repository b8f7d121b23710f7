"""Soak: a few hundred brokers, a quarter misbehaving, probed at a short interval for minutes while
/metrics is scraped concurrently. Reports open fds, asyncio tasks and RSS after warm-up and at the end,
and the slowest scrape.

    python -m bench.soak [--brokers 300] [--minutes 3] [--interval 2s] [--timeout 1s]

The test suite runs a short version of the same function (tests/test_soak.py) with bounds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Pki
from tests.lab.hostile import (
    BlackHole,
    HostileServer,
    after_tls,
    endless,
    garbage,
    reset_mid_handshake,
    silent,
    slow_bytes,
)
from tests.lab.process import start_exporter_process

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    at: float
    fds: float
    tasks: float
    rss_mb: float


@dataclass
class SoakReport:
    brokers: int
    misbehaving: int
    seconds: float
    scrapes: int
    slowest_scrape: float
    #: the slowest after warm-up (the first sweep queues every broker's first probe at once)
    slowest_scrape_after_warmup: float
    after_warmup: Sample
    at_end: Sample
    failed_probes: float

    def lines(self) -> list[str]:
        return [
            f"brokers {self.brokers} ({self.misbehaving} misbehaving), {self.seconds:.0f} s, "
            f"{self.failed_probes:.0f} failed probes classified",
            f"scrapes {self.scrapes}, slowest {self.slowest_scrape * 1000:.0f} ms, "
            f"slowest after warm-up {self.slowest_scrape_after_warmup * 1000:.0f} ms",
            f"open fds after warm-up {self.after_warmup.fds:.0f}, at end {self.at_end.fds:.0f}",
            f"asyncio tasks after warm-up {self.after_warmup.tasks:.0f}, at end {self.at_end.tasks:.0f}",
            f"RSS after warm-up {self.after_warmup.rss_mb:.1f} MB, at end {self.at_end.rss_mb:.1f} MB",
        ]


@contextlib.contextmanager
def fleet(directory: Path, brokers: int) -> Iterator[list[tuple[str, str, str | None]]]:
    """(name, address, ca_file) for ``brokers`` brokers, a quarter of them misbehaving."""
    pki = Pki(directory / "pki")
    root = pki.root("Soak Root")
    bad = brokers // 4
    good = brokers - bad
    leaves = [pki.leaf(f"soak-{i}", root) for i in range(good)]
    mosquitto = Mosquitto(
        [Listener(f"b{i}", cert=leaf.cert_path, key=leaf.key_path) for i, leaf in enumerate(leaves)],
        directory / "mosquitto",
    )
    mosquitto.start(timeout=60)
    cert, key = leaves[0].cert_path, leaves[0].key_path
    servers = [
        HostileServer(silent),
        HostileServer(garbage()),
        HostileServer(slow_bytes(interval=0.5)),
        HostileServer(reset_mid_handshake),
        HostileServer(endless(), cert=cert, key=key),
        HostileServer(after_tls(lambda _: None), cert=cert, key=key),
        HostileServer(after_tls(lambda _: b"\x20\x03\x00\x00\x00"), cert=cert, key=key),
    ]
    for server in servers:
        server.start()
    holes = [BlackHole()]
    addresses = [server.address for server in servers] + [hole.address for hole in holes]
    try:
        entries: list[tuple[str, str, str | None]] = [
            (f"b{i}", mosquitto.address(f"b{i}"), str(root.cert_path)) for i in range(good)
        ]
        entries += [(f"bad{i}", addresses[i % len(addresses)], str(root.cert_path)) for i in range(bad)]
        yield entries
    finally:
        mosquitto.stop()
        for server in servers:
            server.stop()
        for hole in holes:
            hole.close()


def _scrape(url: str) -> tuple[float, dict[str, float]]:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    elapsed = time.monotonic() - started
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
            elif sample.name == "mqtt_broker_probe_failures_total":
                values["failures"] = values.get("failures", 0.0) + sample.value
    return elapsed, values


def run_soak(brokers: int, seconds: float, interval: str, timeout: str, warmup: float) -> SoakReport:
    with tempfile.TemporaryDirectory() as tmp, fleet(Path(tmp), brokers) as entries:
        config = Path(tmp) / "config.yaml"
        lines = [f"defaults: {{interval: {interval}, timeout: {timeout}}}", "brokers:"]
        for name, address, ca in entries:
            lines.append(
                f"  - {{name: {name}, address: '{address}', tls: {{ca_file: '{ca}', server_name: localhost}}}}"
            )
        config.write_text("\n".join(lines) + "\n")
        process, base = start_exporter_process(config, Path(tmp) / "exporter.log", cwd=ROOT)
        url = base + "/metrics"
        try:
            scrapes: list[tuple[float, float]] = []
            started = time.monotonic()
            samples: list[tuple[float, dict[str, float]]] = []
            stop = threading.Event()

            def scraper() -> None:  # a second client scraping concurrently, as Prometheus HA pairs do
                while not stop.is_set():
                    scrapes.append((time.monotonic() - started, _scrape(url)[0]))
                    time.sleep(0.2)

            thread = threading.Thread(target=scraper, daemon=True)
            thread.start()
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                elapsed, values = _scrape(url)
                scrapes.append((time.monotonic() - started, elapsed))
                samples.append((time.monotonic() - started, values))
                time.sleep(0.5)
            stop.set()
            thread.join(15)
            # Open fds and tasks move with the probes in flight at the moment of a sample; a leak
            # raises the floor. So each side is the lowest of a window, not one moment.
            window = min(5.0, (seconds - warmup) / 3)
            warm = _floor([v for t, v in samples if warmup <= t < warmup + window])
            end = _floor([v for t, v in samples if t >= samples[-1][0] - window])
            return SoakReport(
                brokers=len(entries),
                misbehaving=brokers // 4,
                seconds=seconds,
                scrapes=len(scrapes),
                slowest_scrape=max(elapsed for _, elapsed in scrapes),
                slowest_scrape_after_warmup=max(elapsed for at, elapsed in scrapes if at >= warmup),
                after_warmup=_sample(warm),
                at_end=_sample(end),
                failed_probes=samples[-1][1].get("failures", 0.0),
            )
        finally:
            process.terminate()
            process.wait(10)


def _floor(window: list[dict[str, float]]) -> dict[str, float]:
    """The lowest value of every metric over a window of samples."""
    return {name: min(values.get(name, float("inf")) for values in window) for name in window[0]}


def _sample(values: dict[str, float]) -> Sample:
    return Sample(
        at=0.0,
        fds=values.get("process_open_fds", -1),
        tasks=values.get("mqtt_cert_exporter_asyncio_tasks", -1),
        rss_mb=values.get("process_resident_memory_bytes", 0) / 2**20,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--interval", default="2s")
    parser.add_argument("--timeout", default="1s")
    args = parser.parse_args()
    report = run_soak(args.brokers, args.minutes * 60, args.interval, args.timeout, warmup=20)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    for line in report.lines():
        print(line)


if __name__ == "__main__":
    main()
