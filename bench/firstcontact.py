"""Every broker at once, taken apart (issue 16): ours' first sweep against its second and against the lean
prober, for good chains and for bad ones, in process.

    python -m bench.firstcontact [--brokers 6000] [--rounds 3] [--concurrency 128]

bench.compare's "every broker at once" is our first sweep: every chain is new. On first contact ours has
OpenSSL verify the chain (one it accepted before is only compared), reads its certificates, names its
problems, and for an expired or untrusted chain opens a second connection, which verifies nothing, for
the MQTT answer (broker down or certificate bad): the verifying handshake OpenSSL ended cannot carry it.
The lean prober (``bench/lean.py``) and blackbox_exporter stop at the failed verification. This measures
each kind's share (ours through the scheduler and the store; the daemon's metrics text is left out).

The load lab of bench.compare (Mosquitto, leaf + intermediate, EC P-256), half good chains and half bad
(expired and untrusted), no black holes. Per round and kind, a third of that kind's brokers, new to the
process: ours' first sweep (the real scheduler, a new prober), its second sweep on the same prober (every
chain known, as in steady state, but all at once), then the lean prober, all at once,
``--concurrency`` at a time. CPU per broker from ``time.process_time`` (the lean prober: its own
``os.times``). Medians over ``--rounds``, and the mix of bench.compare's fleet. Run it with the
allocator setting the daemon starts with: ``GLIBC_TUNABLES=glibc.malloc.tcache_count=1024``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from bench import lean
from bench.loadlab import BenchBroker, fleet
from bench.sweep import sweep
from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.eventloop import run
from mqtt_cert_exporter.memory import tune_garbage_collector
from mqtt_cert_exporter.probe import Prober

KINDS = {"good": ("good",), "bad": ("expired", "untrusted")}
PASSES = ("first", "again", "lean")
#: bench.compare's fleet: 80% good, 10% bad, 10% black holes (which cost next to nothing)
FLEET_MIX = {"good": 0.8, "bad": 0.1}


async def _round(brokers: Sequence[BrokerConfig], ca_file: str, concurrency: int) -> dict[str, float]:
    """CPU ms per broker of ours' first sweep, its second, and the lean prober's."""
    prober = Prober()
    found: dict[str, float] = {}
    for name in ("first", "again"):
        started = time.process_time()
        await sweep(brokers, concurrency, prober)
        found[name] = (time.process_time() - started) / len(brokers) * 1000
    targets = [f"{broker.target.host}:{broker.target.port}" for broker in brokers]
    answer = await lean.run(targets, ca_file, "localhost", concurrency, timeout=5.0, interval=None)
    cpu = cast(float, answer["user"]) + cast(float, answer["system"])
    found["lean"] = cpu / len(brokers) * 1000
    return found


def _configs(brokers: Sequence[BenchBroker], tls: TlsSettings) -> list[BrokerConfig]:
    return [
        BrokerConfig(
            name=broker.name,
            target=Target("127.0.0.1", broker.port),
            interval=3600,
            timeout=5,
            tls=tls,
        )
        for broker in brokers
    ]


async def measure(
    brokers: Sequence[BenchBroker], ca_file: Path, rounds: int, concurrency: int
) -> dict[str, dict[str, list[float]]]:
    tls = TlsSettings(ca_file=str(ca_file), server_name="localhost")
    found: dict[str, dict[str, list[float]]] = {kind: {name: [] for name in PASSES} for kind in KINDS}
    for round_ in range(rounds):
        for kind, members in KINDS.items():
            part = _configs([broker for broker in brokers if broker.kind in members][round_::rounds], tls)
            for name, value in (await _round(part, str(ca_file), concurrency)).items():
                found[kind][name].append(value)
            row = ", ".join(f"{name} {found[kind][name][-1]:.3f}" for name in PASSES)
            print(f"round {round_ + 1}, {kind} ({len(part)} brokers): {row} ms", flush=True)
    return found


def table(found: dict[str, dict[str, list[float]]]) -> list[str]:
    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    lines = [
        "| chains | ours, first sweep | ours, again | lean | first / lean | again / lean |",
        "|---|---|---|---|---|---|",
    ]
    medians = {
        kind: {name: statistics.median(values) for name, values in passes.items()}
        for kind, passes in found.items()
    }
    for kind, passes in found.items():
        m = medians[kind]
        lines.append(
            f"| {kind} | {cell(passes['first'])} | {cell(passes['again'])} | {cell(passes['lean'])} | "
            f"{m['first'] / m['lean']:.2f} | {m['again'] / m['lean']:.2f} |"
        )
    mixed = {name: sum(share * medians[kind][name] for kind, share in FLEET_MIX.items()) for name in PASSES}
    lines.append(
        f"| bench.compare's mix, per broker | {mixed['first']:.2f} | {mixed['again']:.2f} | {mixed['lean']:.2f} | "
        f"{mixed['first'] / mixed['lean']:.2f} | {mixed['again'] / mixed['lean']:.2f} |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.firstcontact", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--brokers", type=int, default=6000, help="half good, half bad")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=128)
    args = parser.parse_args()
    tune_garbage_collector()  # as the daemon does before probing
    with tempfile.TemporaryDirectory() as tmp, fleet(Path(tmp), args.brokers, 0.0, 0.5) as lab:
        found = run(measure(lab.brokers, lab.ca_file, args.rounds, args.concurrency))
    print("\nCPU ms per broker, all at once, median (range) of the rounds:\n")
    print("\n".join(table(found)))


if __name__ == "__main__":
    main()
