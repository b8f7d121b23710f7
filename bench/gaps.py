"""Fair scheduling: do healthy brokers keep their grid while silent brokers need more slots than there
are? (issue 18.13: 450 of 500 silent, healthy brokers slipped to 40-50 s gaps on a 30 s interval)

    python -m bench.gaps [--healthy 50] [--silent 450] [--interval 30] [--timeout 10] [--seconds 150]
                         [--concurrency 128] [--connects N] [--fifo]

Runs the real scheduler and prober in this process: the healthy brokers are names on one Mosquitto TLS
listener, the silent ones names on one TCP black hole (a connect never completes, so each holds its
slot for the whole timeout). Reports the gaps between consecutive probe starts of each broker after the
first interval. ``--fifo`` never marks a broker as a suspect: one queue for all, as before the fix.
Black holes hold connect permits, not slots (issue 16): ``--connects`` makes those scarce (default:
what the open-file limit leaves, as the daemon does).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.scheduler import Scheduler
from mqtt_cert_exporter.store import ResultStore
from tests.lab.hostile import BlackHole


class _NeverSuspect(set[str]):
    def add(self, name: str) -> None:
        pass


async def run(brokers: list[BrokerConfig], args: argparse.Namespace) -> dict[str, list[float]]:
    starts: dict[str, list[float]] = defaultdict(list)

    def on_result(result: ProbeResult, _: ProbeResult | None) -> None:
        starts[result.broker].append(result.started)

    scheduler = Scheduler(
        Prober(), ResultStore(), concurrency=args.concurrency, connects=args.connects, on_result=on_result
    )
    if args.fifo:
        scheduler.suspects = _NeverSuspect()
    scheduler.apply(brokers)
    await asyncio.sleep(args.seconds)
    await scheduler.stop()
    return starts


def gaps(starts: dict[str, list[float]], prefix: str, after: float) -> list[float]:
    return [
        later - earlier
        for name, times in starts.items()
        if name.startswith(prefix)
        for earlier, later in itertools.pairwise(times)
        if earlier >= after
    ]


def describe(label: str, values: list[float], probes: int) -> str:
    if not values:
        return f"{label}: no second probe ({probes} probes)"
    ordered = sorted(values)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    return (
        f"{label}: {probes} probes, gaps median {statistics.median(ordered):.1f} s, "
        f"p95 {p95:.1f} s, max {ordered[-1]:.1f} s ({len(ordered)} gaps)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--healthy", type=int, default=50)
    parser.add_argument("--silent", type=int, default=450)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--connects", type=int, default=None)
    parser.add_argument("--fifo", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pki = Pki(directory / "pki")
        root = pki.root("Bench Root")
        leaf = pki.leaf("broker", root)
        mosquitto = Mosquitto([Listener("tls", cert=leaf.cert_path, key=leaf.key_path)], directory / "mosq")
        mosquitto.start(timeout=60)
        hole = BlackHole()
        tls = TlsSettings(ca_file=str(root.cert_path), server_name="localhost")

        def broker(name: str, port: int) -> BrokerConfig:
            return BrokerConfig(
                name=name,
                target=Target("127.0.0.1", port),
                interval=args.interval,
                timeout=args.timeout,
                tls=tls,
            )

        brokers = [broker(f"ok{i}", mosquitto.port("tls")) for i in range(args.healthy)]
        brokers += [broker(f"hole{i}", hole.port) for i in range(args.silent)]
        try:
            starts = asyncio.run(run(brokers, args))
        finally:
            mosquitto.stop()
            hole.close()
    first = min(min(times) for times in starts.values())
    after = first + args.interval  # the first sweep starts everyone at once: not on the grid yet
    policy = "one queue (--fifo)" if args.fifo else "suspects' pool"
    print(
        f"{args.healthy} healthy + {args.silent} silent brokers, interval {args.interval:.0f} s, "
        f"timeout {args.timeout:.0f} s, concurrency {args.concurrency}, connects {args.connects or 'default'}, "
        f"{args.seconds:.0f} s, {policy}"
    )
    for prefix, label in (("ok", "healthy"), ("hole", "silent")):
        probes = sum(len(times) for name, times in starts.items() if name.startswith(prefix))
        print(describe(label, gaps(starts, prefix, after), probes))


if __name__ == "__main__":
    main()
