"""One full sweep of a fleet with black holes: does it finish in about one timeout?

    python -m bench.sweep [--brokers 200] [--black-holes 20] [--timeout 5] [--concurrency 128]

Starts one Mosquitto with N-B TLS listeners and B black holes (ports whose TCP connect never completes),
runs the real scheduler over all of them and reports the sweep's wall time as a ratio of the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.scheduler import Scheduler
from mqtt_cert_exporter.store import ResultStore
from tests.lab.hostile import BlackHole


async def sweep(
    brokers: Sequence[BrokerConfig], concurrency: int, prober: Prober | None = None
) -> tuple[float, ResultStore]:
    """Every broker probed once by the real scheduler (on ``prober``, a new one by default): the wall time
    until the last result, and the results."""
    store = ResultStore()
    done = asyncio.Event()

    def on_result(*_: object) -> None:
        if len(store.results) == len(brokers):
            done.set()

    scheduler = Scheduler(prober or Prober(), store, concurrency=concurrency, on_result=on_result)
    started = time.monotonic()
    scheduler.apply(brokers)
    await done.wait()
    elapsed = time.monotonic() - started
    await scheduler.stop()
    return elapsed, store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", type=int, default=200)
    parser.add_argument("--black-holes", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pki = Pki(directory / "pki")
        root = pki.root("Bench Root")
        live = args.brokers - args.black_holes
        leaves = [pki.leaf(f"broker-{i}", root, days=30 + i % 300) for i in range(live)]
        mosquitto = Mosquitto(
            [Listener(f"b{i}", cert=leaf.cert_path, key=leaf.key_path) for i, leaf in enumerate(leaves)],
            directory / "mosquitto",
        )
        mosquitto.start(timeout=60)
        holes = [BlackHole() for _ in range(args.black_holes)]
        try:
            tls = TlsSettings(ca_file=str(root.cert_path), server_name="localhost")
            brokers = [
                BrokerConfig(
                    name=f"b{i}",
                    target=Target("127.0.0.1", mosquitto.port(f"b{i}")),
                    interval=3600,
                    timeout=args.timeout,
                    tls=tls,
                )
                for i in range(live)
            ]
            brokers += [
                BrokerConfig(
                    name=f"hole{i}",
                    target=Target("127.0.0.1", hole.port),
                    interval=3600,
                    timeout=args.timeout,
                    tls=tls,
                )
                for i, hole in enumerate(holes)
            ]
            cpu = time.process_time()
            elapsed, store = asyncio.run(sweep(brokers, args.concurrency))
            cpu = time.process_time() - cpu
        finally:
            mosquitto.stop()
            for hole in holes:
                hole.close()
    ok = sum(1 for (r, *_) in store.results.values() if r.success)
    timeouts = sum(
        1 for (r, *_) in store.results.values() if r.failure and r.failure.reason.value == "timeout"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"brokers {args.brokers} (black holes {args.black_holes}), timeout {args.timeout}s, concurrency {args.concurrency}"
    )
    print(f"succeeded {ok}, timed out {timeouts}")
    print(f"sweep wall time {elapsed:.2f} s = {elapsed / args.timeout:.2f} x timeout")
    print(f"client CPU {cpu:.2f} s = {cpu / len(brokers) * 1000:.2f} ms per probe; peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
